// Order view: details, status, deadlines, audit trail, attached callers and the
// actions the order's state allows.  Hostile data: textContent / value only.
(function () {
  "use strict";
  const { $, el, fmt, api } = Tk;
  const actor = Tk.actorInput($("actor"));
  const raw = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  let order = null;
  let meta = null;
  let tree = [];

  function text(id, value) { $(id).textContent = value === undefined || value === null ? "" : String(value); }
  function join(parts, sep) { return parts.filter((x) => x !== undefined && x !== null && String(x) !== "").join(sep || " · "); }

  function render(o) {
    order = o;
    document.title = `${o.order_no} 工单 — 966022`;
    $("order").hidden = false;
    text("o-no", o.order_no);
    const st = $("o-status");
    st.dataset.status = o.status; st.textContent = o.status_label || Tk.STATUS[o.status] || o.status;
    text("o-type", o.order_type_label || o.order_type);
    text("o-version", o.version);
    const flags = $("o-flags");
    flags.replaceChildren();
    if (o.key_customer) flags.appendChild(el("span", "重要客户 Key customer", "flag key"));
    if (o.major_outage) flags.appendChild(el("span", "重大停电 Major outage", "flag key"));
    if (o.return_count) flags.appendChild(el("span", `退回 ${o.return_count} 次 returned`, "flag returned"));
    if (o.merged) flags.appendChild(el("span", "已并单 Attached to a known fault", "flag warned"));
    text("o-contact", o.contact_name);
    text("o-phone", o.contact_phone);
    text("o-caller", join([o.caller_num, o.caller_name]));
    const c = o.customer_snapshot || {};
    text("o-customer", join([c.account_no, c.name]) || "— 未识别 unknown");
    text("o-address", o.address);
    text("o-area", join([o.transformer_area, o.feeder, o.village, Tk.AREA[o.area_class] || o.area_class]));
    text("o-description", o.description);
    text("o-category", o.category ? o.category.label : (o.order_type === "complaint" ? "未分类 not classified" : ""));
    text("o-agent", o.agent);
    text("o-department", join([o.department, o.assignee, o.assignee_phone]));
    text("o-crew", join([o.arrived_at && `到达 arrived ${fmt(o.arrived_at)}`, o.findings,
      o.expected_repair_at && `预计修复 expected ${fmt(o.expected_repair_at)}`,
      o.repair_result && labelOf("repair_results", o.repair_result)], "\n"));
    text("o-feedback", join([o.feedback_result, o.feedback_at && fmt(o.feedback_at)], "\n"));
    text("o-extension", join([o.progress_note, join([o.responsible_person, o.responsible_phone]),
      o.extended_until && `至 until ${fmt(o.extended_until)}`], "\n"));
    text("o-callback", join([o.callback_result && labelOf("callback_results", o.callback_result), o.callback_note,
      o.callback_at && fmt(o.callback_at)], "\n"));
    text("o-return", o.last_return_reason);
    text("o-appeal", join([o.appeal_status && labelOf("appeal_decisions", o.appeal_status), o.appeal_reason, o.appeal_note], "\n"));
    const at = $("o-attached-to");
    at.replaceChildren();
    if (o.merged_into_order_id) {
      const a = el("a", (o.attached_to && o.attached_to.fault_order_no) || `#${o.merged_into_order_id}`);
      a.href = "/orders/" + encodeURIComponent(o.merged_into_order_id);
      at.appendChild(a);
    } else if (o.merged_outage_id) {
      const a = el("a", `停电 outage ${o.merged_outage_no || o.merged_outage_id}`);
      a.href = "/outages";
      at.appendChild(a);
    }
    text("o-times", join([o.created_at && `来电 ${fmt(o.created_at)}`, o.accepted_at && `受理 ${fmt(o.accepted_at)}`,
      o.dispatched_at && `派发 ${fmt(o.dispatched_at)}`, o.feedback_at && `反馈 ${fmt(o.feedback_at)}`,
      o.closed_at && `归档 ${fmt(o.closed_at)}`]));
    // rows with nothing to say are left out
    for (const dd of $("order").querySelectorAll("dl.grid dd")) {
      const empty = !dd.textContent.trim();
      dd.hidden = empty;
      if (dd.previousElementSibling) dd.previousElementSibling.hidden = empty;
    }
    renderDeadlines(o.deadlines || []);
    renderCallers(o.attached_callers || []);
    renderEvents(o.events || []);
    renderActions(o);
  }

  function labelOf(list, value) {
    const found = ((meta && meta[list]) || []).find((x) => x.value === value);
    return found ? found.label : value;
  }

  function renderDeadlines(list) {
    $("deadlines-card").hidden = !list.length;
    const STATE = { pending: "未到期 pending", warned: "即将到期 warning", breached: "已超时 breached",
                    met: "已完成 met", cancelled: "已取消 cancelled" };
    $("deadlines").replaceChildren(...list.map((d) => {
      const tr = el("tr");
      tr.dataset.kind = String(d.kind || "");
      tr.appendChild(el("td", d.label || d.kind));
      tr.appendChild(el("td", fmt(d.due_at)));
      const s = el("td");
      s.appendChild(el("span", STATE[d.state] || d.state, "flag " + (d.state || "")));
      tr.appendChild(s);
      tr.appendChild(el("td", d.approximate ? "日历估算 approximate (year not in the official calendar)" : "", "muted"));
      return tr;
    }));
  }

  function renderCallers(list) {
    $("callers-card").hidden = !list.length;
    text("callers-count", list.length);
    $("callers").replaceChildren(...list.map((c) => {
      const tr = el("tr");
      const td = el("td");
      const a = el("a", c.order_no || `#${c.order_id}`);
      a.href = "/orders/" + encodeURIComponent(c.order_id);
      td.appendChild(a);
      tr.appendChild(td);
      tr.appendChild(el("td", join([c.contact_name, c.contact_phone])));
      tr.appendChild(el("td", Tk.STATUS[c.status] || c.status));
      tr.appendChild(el("td", join([c.matched_on, c.matched_name])));
      tr.appendChild(el("td", fmt(c.attached_at || c.created_at)));
      return tr;
    }));
  }

  function renderEvents(list) {
    $("events-card").hidden = !list.length;
    $("events").replaceChildren(...list.map((e) => {
      const tr = el("tr", null, "event");
      tr.dataset.event = String(e.event || "");
      tr.appendChild(el("td", fmt(e.at)));
      tr.appendChild(el("td", e.actor));
      tr.appendChild(el("td", Tk.EVENT[e.event] || e.event));
      const from = Tk.STATUS[e.from_status] || e.from_status || "";
      const to = Tk.STATUS[e.to_status] || e.to_status || "";
      tr.appendChild(el("td", from && to && from !== to ? `${from} → ${to}` : (to || from)));
      tr.appendChild(el("td", e.version));
      const p = e.payload && typeof e.payload === "object" ? Object.entries(e.payload)
        .filter(([, v]) => v !== null && v !== "" && v !== false)
        .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join("\n") : "";
      tr.appendChild(el("td", p, "payload"));
      return tr;
    }));
  }

  function renderActions(o) {
    const specs = Tk.actionSpecs(o, meta, "agent");
    $("actions-card").hidden = false;
    $("no-actions").hidden = specs.length > 0;
    const ctx = {
      actor, categories: tree,
      onDone: (fresh, spec) => {
        render(fresh);
        const r = $("action-result");
        r.hidden = false; r.className = "result ok"; r.textContent = `${spec.ok || "已保存 Saved"} — ${fresh.status_label || fresh.status}`;
      },
      onStale: () => { $("conflict").hidden = false; $("conflict").scrollIntoView({ block: "center" }); },
    };
    $("actions").replaceChildren(...specs.map((s) => Tk.actionForm(s, o, ctx)));
  }

  async function load() {
    $("conflict").hidden = true;
    const err = $("load-error");
    if (!/^[0-9]{1,18}$/.test(raw)) {
      err.hidden = false; err.textContent = "工单号无效 / bad order id"; return;
    }
    const res = await api("GET", `/api/tickets/orders/${raw}`);
    if (!res.ok) { err.hidden = false; err.textContent = Tk.errorText(res); return; }
    err.hidden = true;
    $("action-result").hidden = true;
    render(res.data);
  }

  $("reload").addEventListener("click", load);
  (async () => {
    [meta, tree] = await Promise.all([Tk.meta(), Tk.categories(), Tk.departmentList()]);
    await load();
  })();
})();
