// Callback worklist: soonest due first, quiet hours shown, key customers
// marked, the callback result recorded.  Hostile data: text only.
(function () {
  "use strict";
  const { $, el, fmt, api } = Tk;
  const actor = Tk.actorInput($("actor"));
  const params = new URLSearchParams(location.search);
  if (params.get("agent")) $("agent").value = params.get("agent").slice(0, 32);
  let meta = null;

  function row(t) {
    const id = t.id;
    const tr = el("tr", null, "task");
    tr.id = `cb-${id}`;
    tr.dataset.orderNo = String(t.order_no || "");
    tr.dataset.taskId = String(t.task_id || "");

    const due = el("td");
    due.appendChild(el("div", fmt(t.callback_due_at), "due"));
    if (t.overdue) due.appendChild(el("span", "已超期 overdue", "flag overdue"));
    if (t.deferred) due.appendChild(el("span", "负荷高顺延 deferred (heavy load)", "flag warned"));
    if (t.approximate) due.appendChild(el("span", "日历估算 approximate", "flag approx"));
    tr.appendChild(due);

    const now = el("td");
    if (t.callable_now) now.appendChild(el("span", "可外呼 callable now", "flag callable"));
    else {
      now.appendChild(el("span", "休息时段/未到时间 not now (quiet hours)", "flag quiet"));
      now.appendChild(el("div", `最早 from ${fmt(t.next_call_at)}`, "muted"));
    }
    tr.appendChild(now);

    const ord = el("td");
    ord.appendChild(Tk.orderLink(t));
    if (Tk.keyCustomer(t)) ord.appendChild(el("span", "重要客户 Key customer — never slips", "flag key"));
    ord.appendChild(el("div", t.order_type_label || t.order_type, "muted"));
    const REASON = { feedback: "部门已反馈 fed back", fault_restored: "故障已修复 fault repaired",
                     outage_restored: "停电已恢复 outage over" };
    if (t.reason) ord.appendChild(el("div", REASON[t.reason] || t.reason, "muted"));
    if (t.fault_order_no) ord.appendChild(el("div", `并单故障 fault ${t.fault_order_no}`, "muted"));
    tr.appendChild(ord);

    const who = el("td");
    const snap = t.customer_snapshot || {};
    who.appendChild(el("div", t.contact_name || snap.name || ""));
    who.appendChild(el("div", t.contact_phone, "big phone"));
    who.appendChild(el("div", t.address, "muted"));
    tr.appendChild(who);

    const fb = el("td");
    fb.appendChild(el("div", t.feedback_result, "free"));
    fb.appendChild(el("div", [t.department, t.assignee].filter(Boolean).join(" · "), "muted"));
    tr.appendChild(fb);

    const cell = el("td");
    const form = el("form", null, "callback-form", { id: `cb-${id}-form`, autocomplete: "off" });
    const result = el("select", null, null, { id: `cb-${id}-result` });
    result.appendChild(Tk.option("", "— 回访结果 Result —"));
    for (const r of (meta && meta.callback_results) || []) result.appendChild(Tk.option(r.value, r.label));
    const note = el("textarea", null, null, { id: `cb-${id}-note`, rows: "2", maxlength: "4000",
      placeholder: "回访情况(不满意必填)Note — required unless satisfied" });
    const hot = el("input", null, null, { type: "checkbox", id: `cb-${id}-hot` });
    const close = el("input", null, null, { type: "checkbox", id: `cb-${id}-close` });
    close.checked = true;
    const hotLabel = el("label");
    hotLabel.append(hot, el("span", " 热点问题上报 hot topic"));
    const closeLabel = el("label");
    closeLabel.append(close, el("span", " 满意即归档 close when satisfied"));
    const button = el("button", "记录回访 Record", null, { type: "submit", id: `cb-${id}-submit` });
    const out = el("span", "", "result", { id: `cb-${id}-out`, role: "status" });
    form.append(result, note, hotLabel, closeLabel, button, out);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      button.disabled = true;
      out.className = "result"; out.textContent = "提交中… Saving…";
      const res = await api("POST", `/api/tickets/orders/${encodeURIComponent(id)}/callback`, {
        actor: actor(), version: t.version, result: result.value, note: note.value, hot_topic: hot.checked });
      if (!res.ok) {
        button.disabled = false;
        Tk.report(out, res);
        return;
      }
      if (res.data.status === "callback" && close.checked) {
        const closed = await api("POST", `/api/tickets/orders/${encodeURIComponent(id)}/close`, {
          actor: actor(), version: res.data.version, note: note.value });
        if (!closed.ok) { button.disabled = false; Tk.report(out, closed); return; }
        Tk.report(out, closed, "已回访并归档 Called back and closed");
      } else {
        Tk.report(out, res, res.data.status === "callback" ? "已回访 Called back" : "已退回部门 Returned to the department");
      }
      tr.dataset.done = "1";
      setTimeout(load, 1500);
    });
    cell.appendChild(form);
    tr.appendChild(cell);
    return tr;
  }

  async function load() {
    $("conflict").hidden = true;
    const p = new URLSearchParams();
    const agent = $("agent").value.trim();
    if (agent) p.set("agent", agent);
    history.replaceState(null, "", "/callbacks" + (p.toString() ? "?" + p.toString() : ""));
    const info = $("list-info");
    const res = await api("GET", "/api/tickets/callbacks?" + p.toString());
    if (!res.ok) { info.className = "error"; info.textContent = Tk.errorText(res); return; }
    const list = Array.isArray(res.data) ? res.data : [];
    info.className = "muted";
    info.textContent = list.length ? `待回访 ${list.length} 件 to call back` : "没有待回访的工单 / nothing to call back";
    $("tasks-table").hidden = !list.length;
    $("tasks").replaceChildren(...list.map(row));
  }

  $("filter").addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  $("reload").addEventListener("click", load);
  (async () => {
    meta = await Tk.meta();
    if (meta && meta.quiet_hours) $("quiet-info").textContent = `休息时段 quiet hours: ${meta.quiet_hours}`;
    await load();
  })();
})();
