// The login page: POST /login as JSON, then back to the page that sent us here.
"use strict";

(() => {
  /** Where to go after the login: only a path on this site (no //host, no scheme). */
  function nextPath() {
    const next = new URLSearchParams(location.search).get("next");
    if (next && next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\")) return next;
    return "/";
  }

  async function submit(event) {
    event.preventDefault();
    const button = document.getElementById("submit");
    const user = document.getElementById("user").value;
    const password = document.getElementById("password").value;
    CC.setText("login-error", "");
    button.disabled = true;
    try {
      await CC.api("/login", { method: "POST", body: { user, password }, noRedirect: true });
      location.assign(nextPath());
    } catch (err) {
      CC.setText("login-error", err.message);
      document.getElementById("password").value = "";
      document.getElementById("password").focus();
    } finally {
      button.disabled = false;
    }
  }

  async function start() {
    document.getElementById("login").addEventListener("submit", submit);
    try {
      const me = await CC.api("/api/me", { noRedirect: true });
      // A wall display needs no login, and a logged-in user has nothing to do here.
      if (me.read_only || me.user) location.assign(nextPath());
    } catch (_err) {
      // The form stays: the login itself will say what is wrong.
    }
  }

  start();
})();
