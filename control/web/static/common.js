// corona-control: what every page's script shares (loaded before it).
//
// Everything a node sends is untrusted text. It reaches the page only through el() and
// setText() (textContent), never innerHTML; node names in links go through
// encodeURIComponent. The API's JSON is parsed with JSON.parse, never evaluated.
"use strict";

const CC = (() => {
  let me = null; // {auth, read_only, user, csrf_token}

  /** An element with text content and attributes; children appended in order. */
  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children || []) {
      node.append(child); // strings become text nodes
    }
    return node;
  }

  function setText(id, text) {
    const node = document.getElementById(id);
    if (node) node.textContent = text === null || text === undefined ? "" : String(text);
  }

  /** Where a page without a session goes: the login page, then back here. */
  function toLogin() {
    const next = location.pathname + location.search;
    location.assign("/login?next=" + encodeURIComponent(next));
  }

  class ApiError extends Error {
    constructor(status, message, retryAfter) {
      super(message);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  /** fetch + JSON; a 401 sends the page to the login. POSTs carry the CSRF token. */
  async function api(path, options) {
    const opts = Object.assign({ method: "GET" }, options || {});
    const headers = { Accept: "application/json" };
    let body;
    if (opts.method !== "GET") {
      headers["Content-Type"] = "application/json";
      if (me && me.csrf_token) headers["X-CSRF-Token"] = me.csrf_token;
      body = JSON.stringify(opts.body || {});
    }
    const reply = await fetch(path, {
      method: opts.method,
      headers,
      body,
      credentials: "same-origin",
      cache: "no-store",
      redirect: "error",
    });
    let data = null;
    try {
      data = await reply.json();
    } catch (_err) {
      data = null;
    }
    if (reply.status === 401 && !opts.noRedirect) {
      toLogin();
    }
    if (!reply.ok) {
      const message = data && typeof data.error === "string" ? data.error : reply.statusText;
      throw new ApiError(reply.status, message, reply.headers.get("Retry-After"));
    }
    return data;
  }

  /** Who is logged in (and the CSRF token); fills the bar's user and log-out button. */
  async function loadMe() {
    me = await api("/api/me");
    if (me.auth === "login" && !me.user) {
      toLogin();
      return me;
    }
    const who = document.getElementById("who");
    const logout = document.getElementById("logout");
    if (who) who.textContent = me.read_only ? "read-only display" : me.user;
    if (logout && !me.read_only) {
      logout.hidden = false;
      logout.addEventListener("click", async () => {
        try {
          await api("/logout", { method: "POST" });
        } finally {
          location.assign("/login");
        }
      });
    }
    return me;
  }

  function user() {
    return me;
  }

  function nodeHref(name) {
    return "/nodes/" + encodeURIComponent(name);
  }

  function apiNode(name, tail) {
    return "/api/nodes/" + encodeURIComponent(name) + (tail || "");
  }

  /** 42s, 3m05s, 2h10m, 5d03h: as the terminal table shows ages. */
  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "-";
    const sign = seconds < 0 ? "-" : "";
    const s = Math.round(Math.abs(seconds));
    const pad = (n) => String(n).padStart(2, "0");
    if (s < 60) return sign + s + "s";
    if (s < 3600) return sign + Math.floor(s / 60) + "m" + pad(s % 60) + "s";
    if (s < 86400) return sign + Math.floor(s / 3600) + "h" + pad(Math.floor((s % 3600) / 60)) + "m";
    return sign + Math.floor(s / 86400) + "d" + pad(Math.floor((s % 86400) / 3600)) + "h";
  }

  /** Unix seconds as UTC: 2026-11-25 12:00:05Z (every stamp here is UTC, as the nodes'). */
  function utc(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "-";
    const date = new Date(seconds * 1000);
    if (isNaN(date.getTime())) return "-";
    return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  function iso(seconds) {
    return new Date(seconds * 1000).toISOString();
  }

  function fixed(value, digits) {
    return typeof value === "number" && isFinite(value) ? value.toFixed(digits) : "-";
  }

  function showError(message) {
    const banner = document.getElementById("error");
    if (!banner) return;
    banner.hidden = !message;
    banner.textContent = message || "";
  }

  return { el, setText, api, ApiError, loadMe, user, nodeHref, apiNode, duration, utc, iso, fixed, showError, toLogin };
})();
