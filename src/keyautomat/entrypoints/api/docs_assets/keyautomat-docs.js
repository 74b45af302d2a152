// keyautomat API docs: starts Swagger UI on this page's document and signs each
// "Try it out" request in the browser, as every client of this API must (docs/api.md,
// "Signed requests"):
//   x-signature = base64(RSASSA-PKCS1-v1_5-SHA256(key,
//                   accountId + timestamp + hex(sha256(METHOD + URL + body))))
// The key is imported into WebCrypto as non-extractable and kept in this page's memory
// only; the pasted text is wiped from the form at once. Nothing is stored, and nothing
// but signed requests to this server leaves the page.
"use strict";

(function () {
  const encoder = new TextEncoder();
  const accountField = document.getElementById("ka-account");
  const keyField = document.getElementById("ka-key");
  const useButton = document.getElementById("ka-use");
  const forgetButton = document.getElementById("ka-forget");
  const status = document.getElementById("ka-status");
  const UNSIGNED = "Not signing: requests go out unsigned and answer 401.";

  // { accountId: string, key: CryptoKey } while the user has given a key.
  let signer = null;

  function say(text, isError) {
    status.textContent = text;
    status.classList.toggle("ka-error", Boolean(isError));
  }

  // --- the private key: PEM → PKCS#8 DER → CryptoKey -----------------------------------

  function pemBlock(pem) {
    const match = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/.exec(pem);
    if (!match) {
      throw new Error("Paste the whole key, from -----BEGIN to -----END.");
    }
    const label = match[1];
    if (label.includes("ENCRYPTED") || match[2].includes("Proc-Type:")) {
      throw new Error("This key is encrypted with a passphrase; paste an unencrypted key.");
    }
    if (label !== "RSA PRIVATE KEY" && label !== "PRIVATE KEY") {
      throw new Error("This is a " + label + ", not a private key.");
    }
    let binary;
    try {
      binary = atob(match[2].replace(/\s+/g, ""));
    } catch (_) {
      throw new Error("The key's text is damaged (it is not Base64).");
    }
    const der = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    return { label, der };
  }

  function derLength(length) {
    if (length < 0x80) return [length];
    const bytes = [];
    for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest % 256);
    return [0x80 | bytes.length, ...bytes];
  }

  function der(tag, content) {
    return Uint8Array.from([tag, ...derLength(content.length), ...content]);
  }

  // keyautomat hands out PKCS#1 keys (BEGIN RSA PRIVATE KEY), as the vendor's clients
  // expect; WebCrypto reads PKCS#8 only, which wraps the same key:
  // PrivateKeyInfo ::= SEQUENCE { version 0, AlgorithmIdentifier rsaEncryption, OCTET STRING }
  function pkcs8FromPkcs1(pkcs1) {
    const version = [0x02, 0x01, 0x00];
    const rsaEncryption = [
      0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    return der(0x30, [...version, ...rsaEncryption, ...der(0x04, pkcs1)]);
  }

  async function importKey(pem) {
    const block = pemBlock(pem);
    const pkcs8 = block.label === "RSA PRIVATE KEY" ? pkcs8FromPkcs1(block.der) : block.der;
    try {
      return await crypto.subtle.importKey(
        "pkcs8",
        pkcs8,
        { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
        false, // not extractable: no script can read the key back
        ["sign"],
      );
    } catch (_) {
      throw new Error("This is not an RSA private key this browser can read.");
    }
  }

  async function useKey() {
    if (!window.isSecureContext || !window.crypto || !crypto.subtle) {
      say(
        "Browsers sign only on secure pages: open these docs over HTTPS, " +
          "or on this machine at http://127.0.0.1 or http://localhost.",
        true,
      );
      return;
    }
    const accountId = accountField.value.trim();
    if (!accountId) {
      say("Paste the service account id too.", true);
      return;
    }
    try {
      const key = await importKey(keyField.value);
      signer = { accountId, key };
    } catch (error) {
      say(error.message, true);
      return;
    } finally {
      keyField.value = ""; // the key's text leaves the page, valid or not
    }
    forgetButton.hidden = false;
    say("Signing requests as " + accountId + ". Reloading the page forgets the key.");
  }

  function forgetKey() {
    signer = null;
    forgetButton.hidden = true;
    say(UNSIGNED);
  }

  useButton.addEventListener("click", useKey);
  forgetButton.addEventListener("click", forgetKey);

  // --- signing ---------------------------------------------------------------------------

  function hex(buffer) {
    return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function base64(buffer) {
    return btoa(String.fromCharCode(...new Uint8Array(buffer)));
  }

  // The body exactly as it goes on the wire: Swagger UI sends JSON bodies as the text
  // of its editor. A body that is not text (a file, a form) cannot be signed here.
  function wireBody(request) {
    const body = request.body;
    if (body === undefined || body === null || body === "") return "";
    if (typeof body === "string") return body;
    const plain = Array.isArray(body) || Object.getPrototypeOf(body) === Object.prototype;
    if (!plain) return null;
    request.body = JSON.stringify(body);
    return request.body;
  }

  async function sign(request) {
    // The document itself is public; only requests the user sends are signed.
    if (signer === null || request.loadSpec) return request;
    const url = new URL(request.url, window.location.href);
    if (url.origin !== window.location.origin) return request; // never for another host
    const body = wireBody(request);
    if (body === null) return request;
    const method = (request.method || "GET").toUpperCase();
    // The URL is signed as the browser will send it (URL.href is how fetch serializes
    // it), and the server rebuilds it from the request line and Host.
    request.url = url.href;
    const digest = await crypto.subtle.digest("SHA-256", encoder.encode(method + url.href + body));
    const timestamp = String(Date.now());
    const signature = await crypto.subtle.sign(
      "RSASSA-PKCS1-v1_5",
      signer.key,
      encoder.encode(signer.accountId + timestamp + hex(digest)),
    );
    request.headers = request.headers || {};
    request.headers["x-service-account-id"] = signer.accountId;
    request.headers["x-timestamp"] = timestamp;
    request.headers["x-signature"] = base64(signature);
    return request;
  }

  window.ui = SwaggerUIBundle({
    url: document.body.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    layout: "BaseLayout",
    presets: [SwaggerUIBundle.presets.apis],
    validatorUrl: null, // its default is a public validator: no request leaves this server
    requestInterceptor: sign,
  });
})();
