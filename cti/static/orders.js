// Order search: by customer, phone or order number.  Hostile data: text only.
(function () {
  "use strict";
  const { $, el, fmt, api } = Tk;
  const params = new URLSearchParams(location.search);

  async function search() {
    const p = new URLSearchParams();
    for (const name of ["q", "status", "type", "department"]) {
      const v = $(name).value.trim();
      if (v) p.set(name, v);
    }
    history.replaceState(null, "", "/orders" + (p.toString() ? "?" + p.toString() : ""));
    p.set("limit", "100");
    const info = $("search-info");
    info.className = "muted"; info.textContent = "查询中… Searching…";
    const res = await api("GET", "/api/tickets/orders?" + p.toString());
    if (!res.ok) { info.className = "error"; info.textContent = Tk.errorText(res); return; }
    const list = Array.isArray(res.data) ? res.data : [];
    info.textContent = list.length ? `共 ${list.length} 条 ${list.length} found` : "没有找到 / nothing found";
    $("results-table").hidden = !list.length;
    $("results").replaceChildren(...list.map((o) => {
      const tr = el("tr", null, "order-row");
      tr.dataset.orderNo = String(o.order_no || "");
      const no = el("td");
      no.appendChild(Tk.orderLink(o));
      if (o.key_customer) no.appendChild(el("span", "重要 Key", "flag key"));
      tr.appendChild(no);
      tr.appendChild(el("td", o.order_type_label || o.order_type));
      const st = el("td");
      const s = el("span", o.status_label || o.status, "status");
      s.dataset.status = String(o.status || "");
      st.appendChild(s);
      tr.appendChild(st);
      tr.appendChild(el("td", o.contact_name || (o.customer_snapshot && o.customer_snapshot.name) || ""));
      tr.appendChild(el("td", o.contact_phone));
      tr.appendChild(el("td", o.address));
      tr.appendChild(el("td", String(o.description || "").slice(0, 80), "free"));
      tr.appendChild(el("td", [o.department, o.assignee].filter(Boolean).join(" · ")));
      tr.appendChild(el("td", fmt(o.accepted_at || o.created_at)));
      return tr;
    }));
  }

  (async () => {
    const meta = await Tk.meta();
    if (meta) {
      for (const s of meta.statuses || []) $("status").appendChild(Tk.option(s.value, s.label));
      for (const t of meta.order_types || []) $("type").appendChild(Tk.option(t.value, t.label));
    }
    Tk.departmentList();
    for (const name of ["q", "status", "type", "department"]) if (params.get(name)) $(name).value = params.get(name);
    $("search-form").addEventListener("submit", (ev) => { ev.preventDefault(); search(); });
    search();
  })();
})();
