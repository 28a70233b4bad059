// Department inbox: orders dispatched to one department; sign for them
// (start), crew reports for repairs, feedback, extension.  Hostile data: text only.
(function () {
  "use strict";
  const { $, el, fmt, api } = Tk;
  const actor = Tk.actorInput($("actor"));
  const parts = location.pathname.split("/").filter(Boolean);
  const dept = parts.length >= 2 ? decodeURIComponent(parts[1]).slice(0, 100) : "";
  let meta = null;

  function card(o) {
    const box = el("div", null, "inbox-order");
    box.id = `d-${o.id}`;
    box.dataset.orderNo = String(o.order_no || "");
    box.dataset.status = String(o.status || "");
    const h = el("h3");
    h.appendChild(Tk.orderLink(o));
    h.appendChild(document.createTextNode(" "));
    const s = el("span", o.status_label || o.status, "status");
    s.dataset.status = String(o.status || "");
    h.appendChild(s);
    h.appendChild(document.createTextNode(" "));
    h.appendChild(el("span", o.order_type_label || o.order_type, "tag"));
    if (o.key_customer) h.appendChild(el("span", "重要客户 Key customer", "flag key"));
    if (o.major_outage) h.appendChild(el("span", "重大停电 Major outage", "flag key"));
    if (o.returned) h.appendChild(el("span", `退回 returned ×${o.return_count}`, "flag returned"));
    if (o.breached) h.appendChild(el("span", "已超时 overdue", "flag breached"));
    box.appendChild(h);
    const dl = el("dl", null, "grid");
    const add = (k, v, cls) => { dl.appendChild(el("dt", k)); dl.appendChild(el("dd", v, cls)); };
    add("答复期限 Reply due", o.reply_due_at ? fmt(o.reply_due_at) : "—");
    add("处理人 Assignee", [o.assignee, o.assignee_phone].filter(Boolean).join(" · "));
    add("联系人 Contact", [o.contact_name, o.contact_phone].filter(Boolean).join(" · "));
    add("地址 Address", [o.address, o.transformer_area, o.feeder].filter(Boolean).join(" · "));
    add("诉求内容 Description", o.description, "free");
    if (o.category) add("投诉分类 Category", o.category.label);
    if (o.extended_until) add("延期至 Extended until", `${fmt(o.extended_until)} · ${o.responsible_person || ""}`);
    if (o.arrived_at) add("到达现场 Arrived", fmt(o.arrived_at));
    box.appendChild(dl);
    const specs = Tk.actionSpecs(o, meta, "department");
    if (specs.length) {
      const acts = el("div", null, "actions");
      const ctx = {
        actor, prefix: `o${o.id}-`,
        onDone: (fresh, spec) => {
          const r = $("dept-result");
          r.className = "result ok";
          r.textContent = `${fresh.order_no}: ${spec.ok || "已保存 Saved"} — ${fresh.status_label || fresh.status}`;
          load();
        },
        onStale: () => { $("conflict").hidden = false; },
      };
      for (const spec of specs) acts.appendChild(Tk.actionForm(spec, o, ctx));
      box.appendChild(acts);
    }
    return box;
  }

  async function load() {
    $("conflict").hidden = true;
    const q = $("show-all").checked ? "?all=1" : "";
    const res = await api("GET", `/api/tickets/departments/${encodeURIComponent(dept)}/inbox${q}`);
    const out = $("inbox");
    if (!res.ok) { out.replaceChildren(el("p", Tk.errorText(res), "error")); return; }
    const list = Array.isArray(res.data) ? res.data : [];
    $("inbox-count").textContent = String(list.length);
    $("inbox-empty").hidden = list.length > 0;
    out.replaceChildren(...list.map(card));
  }

  async function departments() {
    const names = await Tk.departmentList();
    $("departments").replaceChildren(...(names || []).map((d) => {
      const li = el("li");
      const a = el("a", d);
      a.href = "/department/" + encodeURIComponent(d);
      if (d === dept) a.className = "current";
      li.appendChild(a);
      return li;
    }));
  }

  $("reload").addEventListener("click", load);
  $("show-all").addEventListener("change", load);
  (async () => {
    meta = await Tk.meta();
    departments();
    if (dept) {
      $("dept-name").textContent = dept;
      document.title = `${dept} 部门工单 — 966022`;
      $("inbox-card").hidden = false;
      await load();
      setInterval(() => { if (!document.activeElement || document.activeElement === document.body) load(); }, 60000);
    }
  })();
})();
