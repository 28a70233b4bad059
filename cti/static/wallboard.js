// Supervisor wallboard: live figures over /ws/wallboard, agent control over
// JSON POSTs.  Caller names and numbers are hostile: text only (textContent),
// never innerHTML.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const STATE = {
    available: "空闲 Available", ringing: "振铃 Ringing", on_call: "通话中 On a call",
    wrapup: "话后整理 Wrap-up", paused: "示忙 Paused", logged_off: "未签入 Logged off",
  };
  const STATE_ORDER = ["available", "ringing", "on_call", "wrapup", "paused", "logged_off"];
  let last = null;
  const history = [];  // [t, total waiting]

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function pct(v) { return v === null || v === undefined ? "—" : (v * 100).toFixed(1) + "%"; }
  function secs(v) {
    if (v === null || v === undefined) return "—";
    v = Math.round(v);
    return v >= 60 ? Math.floor(v / 60) + "分" + String(v % 60).padStart(2, "0") + "秒" : v + "秒";
  }
  function setConn(state, text) {
    const c = $("conn");
    c.dataset.state = state; c.textContent = text;
    c.className = "conn " + (state === "open" ? "on" : "off");
  }
  function showResult(ok, text) {
    const r = $("action-result");
    r.className = "result " + (ok ? "ok" : "error");
    r.textContent = text;
  }

  // ---------------------------------------------------------------- figures
  function figure(label, value) {
    const d = el("div", null, "figure");
    d.appendChild(el("span", value, "v"));
    d.appendChild(el("span", label, "l"));
    return d;
  }
  function renderTotals(s) {
    const t = s.total, f = t.figures, box = $("totals");
    box.replaceChildren(
      figure("排队 Waiting", t.waiting), figure("最长等待 Longest wait", secs(t.longest_wait_s)),
      figure("进线 Offered", f.offered), figure("接通 Answered", f.answered),
      figure("放弃 Abandoned", f.abandoned), figure("人工接通率 Answer rate", pct(f.answer_rate)),
      figure("放弃率 Abandon rate", pct(f.abandon_rate)),
      figure("服务水平 SL (" + s.sl_threshold_s + "s)", pct(f.service_level)),
      figure("ASA 平均应答", secs(f.asa_s)), figure("AHT 平均处理", secs(f.aht_s)),
      figure("平均等待 Avg wait", secs(f.avg_wait_s)),
      figure("空闲坐席 Available", t.agents.available), figure("通话中 On call", t.agents.on_call),
      figure("示忙 Paused", t.agents.paused), figure("回拨登记 Callbacks", s.surge.callbacks_today));
    box.querySelectorAll(".figure").forEach((d, i) => { d.dataset.k = ["waiting", "longest", "offered",
      "answered", "abandoned", "answer_rate", "abandon_rate", "sl", "asa", "aht", "avg_wait", "available",
      "on_call", "paused", "callbacks"][i]; });
  }
  function renderQueues(s) {
    const tb = $("queues").tBodies[0];
    const rows = s.queues.map((q) => {
      const tr = el("tr"); tr.dataset.queue = q.name;
      const f = q.figures;
      const cells = [q.label + " " + q.name, q.waiting, secs(q.longest_wait_s)]
        .concat(STATE_ORDER.map((k) => q.agents[k] || 0))
        .concat([f.offered, f.answered, f.abandoned, pct(f.answer_rate), pct(f.abandon_rate),
                 pct(f.service_level), secs(f.asa_s), secs(f.aht_s)]);
      const keys = ["queue", "waiting", "longest"].concat(STATE_ORDER).concat(["offered", "answered",
        "abandoned", "answer_rate", "abandon_rate", "sl", "asa", "aht"]);
      cells.forEach((c, i) => { const td = el("td", c, i ? "num" : ""); td.dataset.k = keys[i]; tr.appendChild(td); });
      return tr;
    });
    tb.replaceChildren(...rows);
    const sel = $("login-queue");
    if (sel.options.length !== s.queues.length) {
      sel.replaceChildren(...s.queues.map((q) => { const o = el("option", q.label + " " + q.name); o.value = q.name; return o; }));
    }
  }
  function renderCallers(s) {
    const rows = [];
    s.queues.forEach((q) => q.callers.forEach((c) => {
      const tr = el("tr"); tr.dataset.uniqueid = c.uniqueid;
      [q.label, c.position, c.caller_num || "未知 unknown", c.caller_name || "", secs(c.wait_s)]
        .forEach((v) => tr.appendChild(el("td", v)));
      rows.push(tr);
    }));
    s.queues.forEach((q) => {
      if (!q.callers_not_listed) return;
      const tr = el("tr"); const td = el("td", `${q.label}:另有 ${q.callers_not_listed} 位排队未列出 / ${q.callers_not_listed} more waiting, not listed`);
      td.colSpan = 5; tr.appendChild(td); rows.push(tr);
    });
    if (!rows.length) { const tr = el("tr"); const td = el("td", "无排队来电 Nobody waiting"); td.colSpan = 5; tr.appendChild(td); rows.push(tr); }
    $("callers").tBodies[0].replaceChildren(...rows);
  }

  // ----------------------------------------------------------------- agents
  const agentRows = new Map();  // interface -> {tr, state, queues, reason, select}
  function agentRow(a, queues) {
    let r = agentRows.get(a.interface);
    if (!r) {
      const tr = el("tr"); tr.dataset.interface = a.interface;
      const who = el("td"); who.appendChild(el("b", a.name)); who.appendChild(el("br")); who.appendChild(el("small", a.interface));
      const state = el("td", null, "state"), qs = el("td", null, "queues"), reason = el("td", null, "paused-reason");
      const act = el("td", null, "agent-actions");
      const select = el("select", null, "pause-queue");
      const input = el("input", null, "reason"); input.placeholder = "示忙原因 reason"; input.maxLength = 40; input.value = "小休";
      const pause = el("button", "示忙 Pause", "pause"); pause.type = "button";
      const unpause = el("button", "示闲 Unpause", "unpause"); unpause.type = "button";
      pause.addEventListener("click", () => post("pause", { interface: a.interface, queue: select.value, paused: true, reason: input.value }));
      unpause.addEventListener("click", () => post("pause", { interface: a.interface, queue: select.value, paused: false }));
      act.append(select, input, pause, unpause);
      tr.append(who, state, qs, reason, act);
      r = { tr, state, qs, reason, select };
      agentRows.set(a.interface, r);
    }
    const wanted = [""].concat(queues.map((q) => q.name));
    if (r.select.options.length !== wanted.length) {
      const keep = r.select.value;
      r.select.replaceChildren(...wanted.map((q) => { const o = el("option", q || "全部队列 all"); o.value = q; return o; }));
      r.select.value = keep || "";
    }
    r.tr.dataset.state = a.state;
    r.state.textContent = STATE[a.state] || a.state;
    r.state.className = "state state-" + a.state;
    r.qs.textContent = a.queues.map((q) => q.queue + ":" + (STATE[q.state] || q.state).split(" ")[0]
      + (q.paused && q.reason ? "(" + q.reason + ")" : "")).join("  ");
    r.reason.textContent = a.paused_reason || "";
    return r.tr;
  }
  function renderAgents(s) {
    const tb = $("agents").tBodies[0];
    const seen = new Set();
    s.agents.forEach((a) => { seen.add(a.interface); const tr = agentRow(a, s.queues); if (tr.parentNode !== tb) tb.appendChild(tr); });
    for (const [iface, r] of agentRows) if (!seen.has(iface)) { r.tr.remove(); agentRows.delete(iface); }
    const dl = $("known-ifaces");
    if (dl.options.length !== s.agents.length) dl.replaceChildren(...s.agents.map((a) => { const o = el("option"); o.value = a.interface; return o; }));
  }

  // ----------------------------------------------------------------- charts
  function renderCharts(s) {
    history.push([s.now, s.total.waiting]);
    while (history.length && history[0][0] < s.now - 300) history.shift();
    const svg = $("chart-waiting");
    const max = Math.max(5, ...history.map((h) => h[1]));
    const pts = history.map((h) => [300 - (s.now - h[0]), 75 - (h[1] / max) * 70]);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", pts.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" "));
    line.setAttribute("fill", "none"); line.setAttribute("stroke", "#36c"); line.setAttribute("stroke-width", "2");
    const lbl = document.createElementNS(SVG, "text");
    lbl.setAttribute("x", "4"); lbl.setAttribute("y", "12"); lbl.setAttribute("font-size", "10");
    lbl.textContent = "max " + max;
    svg.replaceChildren(line, lbl);
    const f = s.total.figures, out = $("chart-outcomes");
    const parts = [["接通", f.answered, "#3a3"], ["放弃", f.abandoned, "#c33"], ["其他", f.exited, "#999"],
                   ["排队中", Math.max(0, f.offered - f.answered - f.abandoned - f.exited), "#36c"]];
    const tot = Math.max(1, f.offered);
    let x = 0; const kids = [];
    parts.forEach(([name, n, color]) => {
      const w = (n / tot) * 300;
      const r = document.createElementNS(SVG, "rect");
      r.setAttribute("x", x.toFixed(1)); r.setAttribute("y", "20"); r.setAttribute("width", w.toFixed(1));
      r.setAttribute("height", "30"); r.setAttribute("fill", color);
      kids.push(r);
      const t = document.createElementNS(SVG, "text");
      t.setAttribute("x", (x + 2).toFixed(1)); t.setAttribute("y", "66"); t.setAttribute("font-size", "10");
      t.textContent = n ? name + " " + n : "";
      kids.push(t);
      x += w;
    });
    out.replaceChildren(...kids);
  }

  function renderSurge(s) {
    const g = s.surge, box = $("surge");
    box.dataset.active = g.active ? "true" : "false";
    box.dataset.mode = g.mode;
    $("surge-state").textContent = (g.active ? "开启 On" : "关闭 Off") + " · " +
      ({ auto: "自动 automatic", on: "手动开启 forced on", off: "手动关闭 forced off" }[g.mode] || g.mode);
    const st = g.settings;
    $("surge-detail").textContent = (g.reason ? g.reason + "。 " : "") +
      `规则:排队 ≥ ${st.on_waiting} 人或最长等待 ≥ ${st.on_longest_s} 秒时开启;排队 ≤ ${st.off_waiting} 人且最长等待 ≤ ${st.off_longest_s} 秒持续 ${st.off_after_s} 秒(且已开启 ${st.min_on_s} 秒)后关闭。开启时 IVR 先播停电告知,并提供按9登记回拨。`;
  }

  function render(s) {
    last = s;
    $("day").textContent = s.day;
    $("updated").textContent = "更新于 " + new Date(s.now * 1000).toLocaleTimeString("zh-CN") +
      (s.ami !== "logged_in" ? " · 交换机连接 AMI: " + s.ami : "");
    $("sl-t").textContent = s.sl_threshold_s;
    renderSurge(s); renderTotals(s); renderQueues(s); renderCallers(s); renderAgents(s); renderCharts(s);
  }

  // ---------------------------------------------------------------- actions
  async function post(kind, body) {
    showResult(true, "处理中… Working…");
    $("action-result").className = "result";
    let resp, data;
    try {
      resp = await window.apiFetch("/api/wallboard/" + kind, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      data = await resp.json();
    } catch (e) {
      showResult(false, "请求失败,请检查网络 / request failed: " + e);
      return;
    }
    if (!resp.ok) { showResult(false, data.message || ("HTTP " + resp.status)); return; }
    if (kind === "surge") { showResult(true, "高峰模式已设置 Surge mode set: " + data.mode); return; }
    const what = { pause: body.paused ? "示忙 paused" : "示闲 unpaused", login: "签入 logged in", logout: "签出 logged out" }[kind];
    showResult(true, (data.confirmed ? "已确认 Confirmed: " : (data.message || "已受理 Accepted") + ": ") +
      body.interface + " " + what + (body.queue ? " (" + body.queue + ")" : ""));
  }
  $("surge-on").addEventListener("click", () => post("surge", { mode: "on" }));
  $("surge-off").addEventListener("click", () => post("surge", { mode: "off" }));
  $("surge-auto").addEventListener("click", () => post("surge", { mode: "auto" }));
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    post("login", { interface: $("login-iface").value.trim(), queue: $("login-queue").value });
  });
  $("logout-btn").addEventListener("click", () => post("logout", { interface: $("login-iface").value.trim(), queue: $("login-queue").value }));

  // ------------------------------------------- work-order deadline alerts
  // Warned and breached deadlines of open orders: listed from the API when
  // the page (re)connects, then each SLA alert pushed by the deadline worker
  // (cti/app.py: {"type": "sla_alert", "alert": "SlaWarning"|"SlaBreached",
  // deadline_id, order_id, order_no, label, due_at, department, assignee,
  // key_customer}).  Department and assignee names are typed by people: text only.
  const SLA_MAX = 100;
  const slaRows = new Map();  // deadline id -> {tr, breached, due}
  function slaRow(a) {
    const id = String(a.deadline_id);
    let r = slaRows.get(id);
    if (!r) {
      const tr = el("tr");
      tr.dataset.deadline = id;
      r = { tr };
      slaRows.set(id, r);
    }
    r.breached = !!a.breached;
    r.due = a.due_at || "";
    r.order = String(a.order_id);
    const tr = r.tr;
    tr.dataset.state = r.breached ? "breached" : "warned";
    const link = el("a", a.order_no || `#${a.order_id}`);
    link.href = `/orders/${encodeURIComponent(a.order_id)}`;
    link.target = "_blank";
    const order = el("td"); order.appendChild(link);
    const who = [a.department, a.assignee].filter((x) => x).join(" / ");
    tr.replaceChildren(
      el("td", r.breached ? "已超时 Overdue" : "即将到期 Due soon", r.breached ? "error" : "warn"),
      order, el("td", a.label || a.kind || ""), el("td", fmtTime(a.due_at)),
      el("td", who || "—"), el("td", a.key_customer ? "是 Yes" : ""));
  }
  function fmtTime(iso) {
    const d = iso ? new Date(iso) : null;
    if (!d || isNaN(d)) return "";
    return d.toLocaleString("zh-CN", { timeZone: "Asia/Shanghai", hour12: false,
      month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" });
  }
  function slaRender() {
    // overdue first, then the soonest due
    let rows = [...slaRows.values()].sort((x, y) => (y.breached - x.breached) || (x.due < y.due ? -1 : x.due > y.due ? 1 : 0));
    for (const r of rows.slice(SLA_MAX)) { slaRows.delete(r.tr.dataset.deadline); }
    rows = rows.slice(0, SLA_MAX);
    const tb = $("sla-alerts").tBodies[0];
    if (!rows.length) {
      const tr = el("tr", null, "empty"); const td = el("td", "暂无预警 No warnings"); td.colSpan = 6;
      tr.appendChild(td); tb.replaceChildren(tr);
    } else {
      tb.replaceChildren(...rows.map((r) => r.tr));
    }
    const breached = rows.filter((r) => r.breached).length;
    const c = $("sla-count");
    c.dataset.breached = String(breached);
    c.textContent = slaRows.size ? `超时 ${breached} · 预警 ${slaRows.size - breached}` : "";
  }
  function slaLoad() {
    fetch("/api/tickets/deadlines?state=alerts&limit=" + SLA_MAX, { credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : null)).then((list) => {
        if (!Array.isArray(list)) return;
        slaRows.clear();
        for (const d of list) {
          slaRow({ deadline_id: d.deadline_id, order_id: d.id, order_no: d.order_no, label: d.deadline_label,
                   kind: d.kind, due_at: d.due_at, department: d.department, assignee: d.assignee,
                   key_customer: d.key_customer, breached: d.deadline_state === "breached" });
        }
        slaRender();
      }).catch(() => {});
  }
  // the list is read again every minute, and soon after a listed order
  // changes (cti/app.py pushes {"type": "order_changed", order_id} after each
  // committed accept, transition or crew report): a deadline met by a
  // dispatch or a feedback leaves the list at once
  setInterval(slaLoad, 60000);
  let slaReloadSoon = null;
  function slaOrderChanged(m) {
    const id = String(m.order_id);
    if (slaReloadSoon || ![...slaRows.values()].some((r) => r.order === id)) return;
    slaReloadSoon = setTimeout(() => { slaReloadSoon = null; slaLoad(); }, 300);
  }
  function slaAlert(m) {
    if (m.deadline_id === undefined || m.deadline_id === null) return;
    const breached = m.alert === "SlaBreached" || m.type === "SlaBreached";
    slaRow({ ...m, breached });
    slaRender();
  }

  // -------------------------------------------------------------- websocket
  let backoff = 500;
  function connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${location.host}/ws/wallboard`);
    ws.onopen = () => { backoff = 500; setConn("open", "实时 Live"); slaLoad(); };
    ws.onmessage = (ev) => {
      let msg; try { msg = JSON.parse(ev.data); } catch (e) { return; }
      if (msg.type === "wallboard") render(msg);
      else if (msg.type === "sla_alert" || msg.type === "SlaWarning" || msg.type === "SlaBreached") slaAlert(msg);
      else if (msg.type === "order_changed") slaOrderChanged(msg);
    };
    ws.onclose = () => {
      setConn("closed", "连接断开,重连中… Reconnecting…");
      setTimeout(connect, backoff); backoff = Math.min(backoff * 2, 10000);
    };
  }
  connect();
  window.__wallboard = () => last;
})();
