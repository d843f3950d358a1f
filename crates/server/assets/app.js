// Gatehouse portals: the little that needs JavaScript. Everything else is plain forms.
// Loaded from /assets (the Content-Security-Policy allows no inline script).
"use strict";

(function () {
  // Copy buttons: <button data-copy="#id">.
  document.addEventListener("click", function (e) {
    var b = e.target.closest("[data-copy]");
    if (!b) return;
    var el = document.querySelector(b.getAttribute("data-copy"));
    if (!el || !navigator.clipboard) return;
    navigator.clipboard.writeText(el.textContent.trim()).then(function () {
      var status = document.getElementById(b.getAttribute("aria-describedby") || "");
      if (status) status.textContent = "Copied.";
    });
  });

  // Confirmations: <form data-confirm="Delete this?">.
  document.addEventListener("submit", function (e) {
    var f = e.target;
    var q = f.getAttribute && f.getAttribute("data-confirm");
    if (q && !window.confirm(q)) e.preventDefault();
  });

  // Passkeys (WebAuthn): the server sends the options as JSON with base64url binary fields;
  // the browser's answer goes back the same way, in a hidden field of the form.
  function b64urlToBytes(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }
  function bytesToB64url(buf) {
    var bytes = new Uint8Array(buf), bin = "";
    for (var i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function creationOptions(o) {
    var pk = o.publicKey;
    pk.challenge = b64urlToBytes(pk.challenge);
    pk.user.id = b64urlToBytes(pk.user.id);
    (pk.excludeCredentials || []).forEach(function (c) { c.id = b64urlToBytes(c.id); });
    return o;
  }
  function requestOptions(o) {
    var pk = o.publicKey;
    pk.challenge = b64urlToBytes(pk.challenge);
    (pk.allowCredentials || []).forEach(function (c) { c.id = b64urlToBytes(c.id); });
    return o;
  }
  function credentialJson(c) {
    var r = c.response, out = { id: c.id, rawId: bytesToB64url(c.rawId), type: c.type, extensions: c.getClientExtensionResults ? c.getClientExtensionResults() : {} };
    if (r.attestationObject) {
      out.response = { attestationObject: bytesToB64url(r.attestationObject), clientDataJSON: bytesToB64url(r.clientDataJSON) };
      if (r.getTransports) out.response.transports = r.getTransports();
    } else {
      out.response = { authenticatorData: bytesToB64url(r.authenticatorData), clientDataJSON: bytesToB64url(r.clientDataJSON),
                       signature: bytesToB64url(r.signature), userHandle: r.userHandle ? bytesToB64url(r.userHandle) : null };
    }
    return out;
  }
  document.addEventListener("submit", function (e) {
    var f = e.target;
    var kind = f.getAttribute && f.getAttribute("data-passkey");
    if (!kind || f.dataset.done) return;
    e.preventDefault();
    var status = f.querySelector("[role=status]");
    var options = JSON.parse(f.getAttribute("data-options"));
    var call = kind === "register"
      ? navigator.credentials.create(creationOptions(options))
      : navigator.credentials.get(requestOptions(options));
    if (status) status.textContent = "Follow your browser's prompt…";
    call.then(function (cred) {
      f.querySelector("input[name=credential]").value = JSON.stringify(credentialJson(cred));
      f.dataset.done = "1";
      f.submit();
    }).catch(function (err) {
      if (status) status.textContent = "The passkey step did not finish: " + err.message;
    });
  });
})();
