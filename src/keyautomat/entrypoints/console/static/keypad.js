// keyautomat console: the virtual automat (docs/console.md). The page works without this
// script (each key is a form post); with it, keys are posted without reloading, one at a
// time and in order, and the display and the lockers refresh every second.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const live = document.querySelector("[data-keypad-live]");
  const pad = document.querySelector("form.keypad");
  if (!live) return;
  let stopped = false;

  function isFragment(answer) {
    return answer.ok && answer.headers.get("x-console-fragment") === "1";
  }

  function show(html) {
    if (html !== live.dataset.last) {
      live.dataset.last = html;
      live.innerHTML = html;
    }
  }

  async function refresh() {
    if (stopped || document.hidden) return;
    let answer;
    try {
      answer = await fetch(live.dataset.keypadLive, { credentials: "same-origin" });
    } catch (_) {
      return; // offline for a moment: try again next time
    }
    if (!isFragment(answer)) {
      stopped = true; // the session ended, or the automat is gone: the page says so on reload
      return;
    }
    show(await answer.text());
  }
  setInterval(refresh, 1000);
  document.addEventListener("visibilitychange", refresh);

  if (!pad) return;
  // Presses go one after another, so that fast typing reaches the automat in order.
  let queue = Promise.resolve();
  async function send(key) {
    const body = new URLSearchParams(new FormData(pad));
    body.set("key", key);
    let answer;
    try {
      answer = await fetch(pad.action, {
        method: "POST",
        body,
        credentials: "same-origin",
        headers: { "x-console-live": "1" },
      });
    } catch (_) {
      return;
    }
    if (isFragment(answer)) {
      show(await answer.text());
    } else {
      window.location.reload(); // refused (signed out, no longer allowed): the page tells why
    }
  }
  pad.addEventListener("submit", (event) => {
    const key = event.submitter && event.submitter.value;
    if (!key) return;
    event.preventDefault();
    queue = queue.then(() => send(key));
  });
});
