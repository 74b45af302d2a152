// keyautomat console: the little JavaScript of its own. Every page works without it;
// with it, live regions refresh themselves and destructive forms ask first.
"use strict";

// <div data-refresh="/console/..." data-every="5">: its content is fetched again every
// few seconds while the page is visible, and replaced when it changed. An answer that
// is not a fragment (the session ended: the login page) stops the refreshing.
function refreshing(region) {
  const url = region.dataset.refresh;
  const every = Math.max(2, Number(region.dataset.every) || 10) * 1000;
  let timer = null;
  async function refresh() {
    if (document.hidden) return;
    let answer;
    try {
      answer = await fetch(url, { credentials: "same-origin", redirect: "follow" });
    } catch (_) {
      return; // offline for a moment: try again next time
    }
    if (!answer.ok || answer.headers.get("x-console-fragment") !== "1") {
      clearInterval(timer);
      return;
    }
    const html = await answer.text();
    if (html !== region.dataset.last) {
      region.dataset.last = html;
      // Keep the keyboard where it was when the region holds the focused element.
      const focused = region.contains(document.activeElement) ? document.activeElement.id : null;
      region.innerHTML = html;
      if (focused) document.getElementById(focused)?.focus();
    }
  }
  timer = setInterval(refresh, every);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
}

// <form data-confirm="Uninstall this automat for good?">: asks before it is sent.
function confirming(form) {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh]").forEach(refreshing);
  document.querySelectorAll("form[data-confirm]").forEach(confirming);
});

// --- contracts, keys and webhooks (docs/console.md) -------------------------------------
// <div data-filter="list-id"><input ...>: the list of choices is filtered as one types
// (the field's own search, which reloads the page, works without it).
function filtering(box) {
  const list = document.getElementById(box.dataset.filter);
  const input = box.querySelector("input");
  if (!list || !input) return;
  input.addEventListener("input", () => {
    const needle = input.value.trim().toLowerCase();
    list.querySelectorAll("li").forEach((item) => {
      item.hidden = needle !== "" && !item.textContent.toLowerCase().includes(needle);
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-filter]").forEach(filtering);
});
