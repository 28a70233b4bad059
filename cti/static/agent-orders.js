// Agent desktop, the work-order side: complaint classification cascade, known
// faults in the caller's area (attach vs new fault), accepting the order with
// the full accept endpoint, a link to the order view, the knowledge panel and
// deadline alerts.  Works beside agent.js through DOM events:
//   hotline:order (agent.js -> here), hotline:order-updated (here -> agent.js),
//   hotline:message (every websocket message).
// Hostile data: textContent / value only.
(function () {
  "use strict";
  const { $, el, fmt, api } = Tk;
  const agent = () => $("agent-id").textContent.trim();
  let order = null;
  let faults = [];
  let cascade = null;
  let faultSeq = 0;

  Tk.categories().then((tree) => {
    cascade = Tk.cascade($("f-cat1"), $("f-cat2"), $("f-cat3"), tree);
    if (order && order.category) cascade.set(order.category.codes);
  });

  const editable = (o) => !!o && (o.status === "draft" || o.status === "accepted");

  function typeChanged() {
    const t = $("f-type").value;
    $("f-category").hidden = !(order && t === "complaint");
    loadFaults();
  }

  async function loadFaults() {
    const mine = ++faultSeq;
    const box = $("known-faults");
    if (!order || $("f-type").value !== "repair" || !editable(order)) { box.hidden = true; faults = []; return; }
    const p = new URLSearchParams({ order_id: String(order.id) });
    const ta = $("f-ta").value.trim();
    if (ta) p.set("transformer_area", ta);
    const res = await api("GET", "/api/tickets/known-faults?" + p.toString());
    if (mine !== faultSeq) return;
    faults = res.ok && Array.isArray(res.data) ? res.data : [];
    box.hidden = !faults.length;
    $("kf-list").replaceChildren(...faults.map((f) => {
      const li = el("li", null, "fault");
      li.dataset.ref = String(f.ref || "");
      li.appendChild(el("b", f.kind === "outage" ? `停电 Outage ${f.ref}` : `报修 Repair ${f.ref}`));
      if (f.major) li.appendChild(el("span", "重大 Major", "flag key"));
      li.appendChild(el("span", ` ${f.matched_name || ""} · 已并入 ${f.callers || 0} 户 callers attached`, "muted"));
      li.appendChild(el("div", f.summary, "free"));
      if (f.expected_restore_at) li.appendChild(el("div", `预计恢复 expected back ${fmt(f.expected_restore_at)}`));
      return li;
    }));
  }

  document.addEventListener("hotline:order", (ev) => {
    const o = ev.detail;
    const changed = !order || !o || order.id !== o.id;
    order = o || null;
    $("accept").disabled = !editable(order);
    if (changed) { $("accept-result").textContent = ""; $("accept-result").className = "result"; }
    const next = $("order-next");
    if (order && order.status && order.status !== "draft" && order.status !== "cancelled") {
      next.hidden = false;
      $("order-link").href = `/orders/${encodeURIComponent(order.id)}?actor=${encodeURIComponent(agent())}`;
    } else next.hidden = true;
    if (changed && cascade) {
      for (const id of ["f-cat1"]) { $(id).value = ""; $(id).dispatchEvent(new Event("change")); }
      if (order && order.category) cascade.set(order.category.codes);
    }
    if (changed) { $("kf-attach").checked = true; $("kf-reason").value = ""; }
    typeChanged();
  });
  $("f-type").addEventListener("change", typeChanged);
  $("f-ta").addEventListener("change", loadFaults);

  $("accept").addEventListener("click", async () => {
    if (!editable(order)) return;
    const out = $("accept-result");
    const type = $("f-type").value;
    const body = {
      actor: agent(), version: order.version, order_type: type,
      contact_name: $("f-contact-name").value, contact_phone: $("f-contact-phone").value,
      address: $("f-address").value, transformer_area: $("f-ta").value, description: $("f-description").value,
    };
    if (type === "complaint" && cascade) {
      const v = cascade.value();
      if (v) body.category = v;
    }
    if (type === "repair" && faults.length && $("kf-new").checked) {
      body.new_fault = true;
      body.new_fault_reason = $("kf-reason").value;
    }
    $("accept").disabled = true;
    out.className = "result"; out.textContent = "受理中… Accepting…";
    const res = await api("POST", `/api/tickets/orders/${encodeURIComponent(order.id)}/accept`, body);
    if (res.ok) {
      const o = res.data;
      let text = `已受理 Accepted: ${o.order_no}`;
      if (o.merged) {
        const ref = (o.attached_to && (o.attached_to.fault_order_no || o.attached_to.outage_no)) || o.merged_outage_no || "";
        text += ` — 已并入已知故障 attached to ${ref}`;
      }
      if (o.category) text += ` — ${o.category.label}`;
      out.className = "result ok"; out.textContent = text;
      document.dispatchEvent(new CustomEvent("hotline:order-updated", { detail: o }));
    } else {
      Tk.report(out, res);
      $("accept").disabled = !editable(order);
    }
  });

  // knowledge base during the call
  Tk.knowledge($("kb-q"), $("kb-results"), null, { limit: 6 });

  // deadline warnings / breaches of this agent's orders
  document.addEventListener("hotline:message", (ev) => {
    const m = ev.detail;
    // cti/app.py sends {"type": "sla_alert", **alert}; the alert's own "type"
    // (SlaWarning / SlaBreached) may win that merge: take all three
    if (!m || !["sla_alert", "SlaWarning", "SlaBreached"].includes(m.type)) return;
    const breached = m.type === "SlaBreached" || m.event === "SlaBreached" || m.alert === "SlaBreached";
    $("sla-alerts").hidden = false;
    const li = el("li", null, breached ? "breached" : "warned");
    const a = el("a", m.order_no || `#${m.order_id}`);
    a.href = `/orders/${encodeURIComponent(m.order_id)}?actor=${encodeURIComponent(agent())}`;
    a.target = "_blank";
    li.appendChild(el("span", breached ? "已超时 overdue " : "即将到期 due soon ", "error"));
    li.appendChild(a);
    li.appendChild(el("span", ` ${m.label || m.kind || ""} · ${fmt(m.due_at)}${m.key_customer ? " · 重要客户 key customer" : ""}`));
    const list = $("sla-list");
    list.prepend(li);
    while (list.children.length > 20) list.lastChild.remove();
  });
})();
