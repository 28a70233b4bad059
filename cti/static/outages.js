// Outage list for agents and supervisors. Every value comes from departments'
// submissions and is hostile: textContent only, never innerHTML.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const KIND = { fault: "故障停电 Fault", planned: "计划检修 Planned", temporary: "临时检修 Temporary" };
  const AREA = { feeder: "线路", transformer_area: "台区", village: "村/街道" };
  const PROMPT = {
    none: "无 none", pending: "生成中 pending", ready: "已就绪 ready",
    failed: "生成失败,播放通用提示 failed — generic announcement plays",
  };

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function fmt(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    // China time (UTC+8), independent of the browser's zone
    const c = new Date(d.getTime() + 8 * 3600 * 1000);
    const p = (n) => String(n).padStart(2, "0");
    return `${c.getUTCFullYear()}-${p(c.getUTCMonth() + 1)}-${p(c.getUTCDate())} ${p(c.getUTCHours())}:${p(c.getUTCMinutes())}`;
  }

  function row(o) {
    const tr = el("tr");
    tr.dataset.outageNo = String(o.outage_no || "");
    tr.className = "outage";
    tr.appendChild(el("td", o.outage_no, "no"));

    const kind = el("td");
    const k = String(o.kind || "");
    kind.appendChild(el("span", KIND[k] || k, "flag kind-" + (KIND[k] ? k : "other")));
    tr.appendChild(kind);

    const areas = el("td");
    const ul = el("ul", null, "areas");
    for (const a of Array.isArray(o.areas) ? o.areas : []) {
      ul.appendChild(el("li", `${AREA[a.type] || a.type}:${a.name}`));
    }
    areas.appendChild(ul);
    tr.appendChild(areas);

    const reason = el("td");
    reason.appendChild(el("div", o.reason, "reason"));
    if (o.department) reason.appendChild(el("div", o.department, "muted"));
    tr.appendChild(reason);

    tr.appendChild(el("td", fmt(o.start_at), "start"));
    const back = el("td");
    back.appendChild(el("div", fmt(o.expected_restore_at), "restore"));
    if (o.overdue) back.appendChild(el("span", "已超时 overdue", "flag overdue"));
    tr.appendChild(back);

    const notice = el("td", null, "notice");
    if (o.late_notice) {
      const f = el("span", "公告不足 late notice", "flag late");
      f.title = String(o.late_notice_reason || "");
      notice.appendChild(f);
      notice.appendChild(el("div", o.late_notice_reason, "muted late-reason"));
    } else {
      notice.appendChild(el("span", "按时 on time", "muted"));
    }
    if (o.notice_estimated) notice.appendChild(el("span", "日历估算 estimated", "flag estimated"));
    tr.appendChild(notice);

    const prompt = el("td");
    const ps = String(o.prompt_status || "none");
    const p = el("span", PROMPT[ps] || ps, "prompt");
    p.dataset.state = ps;
    prompt.appendChild(p);
    if (ps === "failed" && o.prompt_error) prompt.appendChild(el("div", o.prompt_error, "muted"));
    tr.appendChild(prompt);
    return tr;
  }

  function render(which, list) {
    const body = $(which + "-rows");
    body.replaceChildren(...list.map(row));
    $(which + "-count").textContent = String(list.length);
    $(which + "-empty").hidden = list.length > 0;
    $(which + "-table").hidden = list.length === 0;
  }

  async function load(which) {
    const r = await fetch("/api/outages?state=" + which, { headers: { Accept: "application/json" } });
    if (!r.ok) throw new Error(which + ": HTTP " + r.status);
    const data = await r.json();
    render(which, Array.isArray(data.outages) ? data.outages : []);
  }

  async function refresh() {
    const st = $("status");
    try {
      await Promise.all([load("active"), load("coming")]);
      st.className = "conn on"; st.dataset.state = "ok";
      st.textContent = "已更新 " + fmt(new Date().toISOString()).slice(11) + " updated";
    } catch (e) {
      st.className = "conn off"; st.dataset.state = "error";
      st.textContent = "加载失败 load failed: " + String(e && e.message || e);
    }
  }

  refresh();
  setInterval(refresh, 30000);
})();
