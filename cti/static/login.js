(function () {
  "use strict";
  const params = new URLSearchParams(location.search);
  const next = params.get("next") || "/";
  document.getElementById("next").value = next;
  const err = document.getElementById("login-error");
  const messages = {
    bad: "用户名或密码错误 / wrong username or password",
    locked: "登录失败次数过多,请稍后再试 / too many failed logins, try again later",
  };
  if (params.get("error")) err.textContent = messages[params.get("error")] || "登录失败 / login failed";
  document.getElementById("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.textContent = "";
    const body = { username: document.getElementById("username").value,
                   password: document.getElementById("password").value, next };
    try {
      const r = await fetch("/api/login", { method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json" }, body: JSON.stringify(body) });
      const data = await r.json().catch(() => ({}));
      if (r.ok) { location.href = data.next || "/"; return; }
      err.textContent = data.message || ("HTTP " + r.status);
    } catch (e) {
      err.textContent = "网络错误,请重试 / network error, retry";
    }
  });
})();
