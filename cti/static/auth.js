// Shared by every page: the session's CSRF token and who is logged in.
// apiFetch(url, init) = fetch + X-CSRF-Token on POST/PUT/PATCH/DELETE;
// a 401 answer sends the browser to the login page.
(function () {
  "use strict";
  let mePromise = null;
  function me() {
    if (!mePromise) {
      mePromise = fetch("/api/me", { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then((r) => {
          if (r.status === 401) { toLogin(); return null; }
          return r.ok ? r.json() : null;
        })
        .catch(() => { mePromise = null; return null; });
    }
    return mePromise;
  }
  function toLogin() {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
  }
  async function apiFetch(url, init) {
    init = Object.assign({ credentials: "same-origin" }, init || {});
    const method = (init.method || "GET").toUpperCase();
    if (!["GET", "HEAD", "OPTIONS"].includes(method)) {
      const who = await me();
      const headers = new Headers(init.headers || {});
      if (who && who.csrf_token) headers.set("X-CSRF-Token", who.csrf_token);
      init.headers = headers;
    }
    const r = await fetch(url, init);
    if (r.status === 401) toLogin();
    return r;
  }
  async function logout() {
    try { await apiFetch("/api/logout", { method: "POST" }); } catch (e) { /* go anyway */ }
    location.href = "/login";
  }
  // a small "who am I · 退出" bar, at the end of the page's header (in the
  // flow: it never covers a figure of the wallboard on the wall screen), or
  // fixed bottom-right on a page without one; every value is put in as text
  function userBar(who) {
    if (!who || document.getElementById("auth-bar")) return;
    const bar = document.createElement("div");
    bar.id = "auth-bar";
    const header = document.querySelector("body > header");
    bar.style.cssText = header ? "font-size:12px;white-space:nowrap"
      : "position:fixed;bottom:6px;right:8px;font-size:12px;z-index:1000;background:rgba(255,255,255,.85);padding:2px 6px;border-radius:4px";
    const name = document.createElement("span");
    name.id = "auth-user";
    name.textContent = `${who.display_name || who.username} (${who.role_label || who.role})`;
    const btn = document.createElement("button");
    btn.type = "button"; btn.id = "logout"; btn.textContent = "退出 Log out";
    btn.style.marginLeft = "6px";
    btn.addEventListener("click", logout);
    bar.append(name, btn);
    (header || document.body).appendChild(bar);
  }
  window.Auth = { me, apiFetch, logout };
  window.apiFetch = apiFetch;
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => me().then(userBar));
  else me().then(userBar);
})();
