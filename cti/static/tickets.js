// Shared helpers of the work-order pages (order view, search, callbacks,
// department inbox, knowledge base, the agent desktop's order panel).
// Every value from the API is hostile: only textContent / value, never innerHTML.
(function () {
  "use strict";
  const Tk = {};

  Tk.$ = (id) => document.getElementById(id);

  // el("td", "text", "cls", {attr: value}) — text is always set as text
  Tk.el = function (tag, text, cls, attrs) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    if (attrs) for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    return e;
  };

  Tk.option = function (value, label) {
    const o = document.createElement("option");
    o.value = String(value); o.textContent = String(label);
    return o;
  };

  // ISO instant -> "YYYY-MM-DD HH:MM" China time (UTC+8), whatever the browser's zone
  Tk.fmt = function (iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    const c = new Date(d.getTime() + 8 * 3600 * 1000);
    const p = (n) => String(n).padStart(2, "0");
    return `${c.getUTCFullYear()}-${p(c.getUTCMonth() + 1)}-${p(c.getUTCDate())} ${p(c.getUTCHours())}:${p(c.getUTCMinutes())}`;
  };

  // <input type="datetime-local"> value (China time) -> ISO with +08:00, "" stays ""
  Tk.localInput = function (value) {
    if (!value) return "";
    return (value.length === 16 ? value + ":00" : value) + "+08:00";
  };

  Tk.STATUS = {
    draft: "草稿 Draft", accepted: "已受理 Accepted", dispatched: "已派发 Dispatched",
    in_progress: "处理中 In progress", feedback: "已反馈 Feedback", callback: "已回访 Called back",
    closed: "已归档 Closed", cancelled: "已撤销 Cancelled",
  };
  Tk.EVENT = {
    OrderAccepted: "受理 Accepted", OrderEdited: "修改 Edited", CallerAttached: "并入已知故障 Attached to a known fault",
    CallerAttachedToFault: "来电并入本故障 Caller attached", NewFaultDeclared: "判定为新故障 New fault",
    OrderDispatched: "派发 Dispatched", OrderTransferred: "转派 Transferred", OrderStarted: "签收 Started",
    CrewArrived: "抢修到达 Crew arrived", CrewFindingsReported: "现场情况 Findings", CrewResultReported: "抢修结果 Repair result",
    FeedbackGiven: "部门反馈 Feedback", CallbackRecorded: "回访满意 Called back (satisfied)", OrderReturned: "退回 Returned",
    OrderClosed: "归档 Closed", ExtensionRecorded: "延期 Extension", CategoryChosen: "投诉分类 Classified",
    AppealFiled: "申诉 Appeal filed", AppealUpheld: "申诉成立 Appeal upheld", AppealRejected: "申诉不成立 Appeal rejected",
    CallerDetached: "解除并单 Detached", FaultRestored: "故障恢复 Fault restored",
  };
  Tk.AREA = { town: "城区 Town", countryside: "农村 Countryside", remote: "偏远山区 Remote" };

  // fetch JSON; never throws: {ok, status, data}
  Tk.api = async function (method, path, body) {
    const init = { method, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    try {
      const r = await window.apiFetch(path, init);
      let data = null;
      try { data = await r.json(); } catch (e) { data = null; }
      return { ok: r.ok, status: r.status, data };
    } catch (e) {
      return { ok: false, status: 0, data: { error: "network", message: "网络错误,请重试 / network error, retry" } };
    }
  };

  // the error of an API answer as one line of text (message + the fields' messages)
  Tk.errorText = function (res) {
    const d = res && res.data;
    if (!d) return `请求失败 / request failed (HTTP ${res ? res.status : "?"})`;
    let text = String(d.message || d.error || `HTTP ${res.status}`);
    if (d.fields && typeof d.fields === "object") {
      const parts = Object.entries(d.fields).map(([k, v]) => `${k}: ${v}`);
      if (parts.length) text += " — " + parts.join(";");
    }
    return text;
  };

  Tk.STALE_TEXT = "工单已被他人修改 / changed by someone else — 请刷新 reload";

  // show the result of an action in `out` (an element); a stale version also
  // shows the page's conflict banner (#conflict) when there is one
  Tk.report = function (out, res, okText) {
    if (!out) return;
    if (res.ok) {
      out.textContent = okText || "已保存 Saved"; out.className = "result ok";
      return;
    }
    out.className = "result error";
    if (res.data && res.data.error === "stale") {
      out.textContent = Tk.STALE_TEXT;
      const banner = Tk.$("conflict");
      if (banner) banner.hidden = false;
    } else {
      out.textContent = Tk.errorText(res);
    }
  };

  // who is doing this: kept in the browser (localStorage), ?actor= wins
  Tk.actorInput = function (input) {
    const fromUrl = new URLSearchParams(location.search).get("actor");
    let stored = "";
    try { stored = localStorage.getItem("hotline.actor") || ""; } catch (e) { stored = ""; }
    input.value = (fromUrl || stored || "").slice(0, 64);
    if (!input.value && window.Auth) {  // default: the logged-in user
      window.Auth.me().then((w) => {
        if (w && !input.value) input.value = String(w.agent_id || w.display_name || w.username || "").slice(0, 64);
      });
    }
    input.addEventListener("change", () => {
      try { localStorage.setItem("hotline.actor", input.value.trim()); } catch (e) { /* private mode */ }
    });
    return () => input.value.trim();
  };

  let metaPromise = null;
  Tk.meta = function () {
    if (!metaPromise) {
      metaPromise = Tk.api("GET", "/api/tickets/meta").then((r) => (r.ok ? r.data : null));
    }
    return metaPromise;
  };
  Tk.labels = function (list) {
    const out = {};
    for (const x of list || []) out[x.value] = x.label;
    return out;
  };

  let catPromise = null;
  Tk.categories = function () {
    if (!catPromise) {
      catPromise = Tk.api("GET", "/api/tickets/categories").then((r) => (r.ok && Array.isArray(r.data) ? r.data : []));
    }
    return catPromise;
  };

  // the three-level complaint cascade on three <select>s; returns
  // {value(): [l1, l2, l3] | null, set(codes)}
  Tk.cascade = function (s1, s2, s3, tree) {
    const fill = (sel, items, prompt) => {
      sel.replaceChildren(Tk.option("", prompt));
      for (const c of items || []) {
        const label = c.en ? `${c.name} ${c.en}` : c.name;
        sel.appendChild(Tk.option(c.code, label));
      }
      sel.disabled = !items || !items.length;
    };
    const find = (items, code) => (items || []).find((c) => c.code === code);
    const on1 = () => {
      const f = find(tree, s1.value);
      fill(s2, f ? f.children : [], "— 二级分类 Level 2 —");
      fill(s3, [], "— 三级分类 Level 3 —");
    };
    const on2 = () => {
      const f = find(tree, s1.value);
      const g = f && find(f.children, s2.value);
      fill(s3, g ? g.children : [], "— 三级分类 Level 3 —");
    };
    fill(s1, tree, "— 一级分类 Level 1 —");
    fill(s2, [], "— 二级分类 Level 2 —");
    fill(s3, [], "— 三级分类 Level 3 —");
    s1.addEventListener("change", on1);
    s2.addEventListener("change", on2);
    return {
      value() { return s1.value && s2.value && s3.value ? [s1.value, s2.value, s3.value] : null; },
      set(codes) {
        if (!codes || codes.length !== 3) return;
        s1.value = codes[0]; on1(); s2.value = codes[1]; on2(); s3.value = codes[2];
      },
    };
  };

  // knowledge base search box: input, results container, optional topic <select>
  Tk.knowledge = function (input, results, topicSelect, opts) {
    const limit = (opts && opts.limit) || 8;
    let seq = 0;
    let timer = null;
    async function run() {
      const mine = ++seq;
      const params = new URLSearchParams();
      const q = input.value.trim();
      if (q) params.set("q", q);
      if (topicSelect && topicSelect.value) params.set("topic", topicSelect.value);
      params.set("limit", String(limit));
      const res = await Tk.api("GET", "/api/tickets/knowledge?" + params.toString());
      if (mine !== seq) return;  // a newer search is under way
      results.replaceChildren();
      if (!res.ok) { results.appendChild(Tk.el("p", Tk.errorText(res), "error")); return; }
      const list = Array.isArray(res.data) ? res.data : [];
      if (!list.length) { results.appendChild(Tk.el("p", "没有找到 / nothing found", "muted kb-empty")); return; }
      for (const a of list) {
        const art = Tk.el("article", null, "kb-article");
        art.dataset.slug = String(a.slug || "");
        const h = Tk.el("h4", null, "kb-title");
        h.appendChild(Tk.el("span", a.title));
        if (a.topic) h.appendChild(Tk.el("span", a.topic, "tag"));
        art.appendChild(h);
        art.appendChild(Tk.el("div", a.body, "kb-body"));
        results.appendChild(art);
      }
    }
    input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(run, 250); });
    input.addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); clearTimeout(timer); run(); } });
    if (topicSelect) {
      topicSelect.addEventListener("change", run);
      Tk.api("GET", "/api/tickets/knowledge?limit=100").then((res) => {
        const topics = [...new Set((res.ok && Array.isArray(res.data) ? res.data : []).map((a) => a.topic).filter(Boolean))];
        for (const t of topics) topicSelect.appendChild(Tk.option(t, t));
      });
    }
    return run;
  };

  // a link to an order's page
  Tk.orderLink = function (o) {
    const a = Tk.el("a", o.order_no || ("#" + o.id), "order-link");
    a.href = "/orders/" + encodeURIComponent(String(o.id));
    return a;
  };

  Tk.keyCustomer = function (o) {
    return !!(o.key_customer || o.major_outage || o.task_key);
  };

  // One action on one order as a small form: POST /api/tickets/orders/{id}/{path}
  // with actor + the version the page loaded.  spec: {name, title, path, extra,
  // button, ok, fields: [{name, label, type, required, options, list, placeholder}]};
  // ctx: {actor(), prefix, categories, onDone(order), onStale()}.
  Tk.actionForm = function (spec, order, ctx) {
    const prefix = ctx.prefix || "";
    const box = Tk.el("div", null, "action");
    box.dataset.action = spec.name;
    box.appendChild(Tk.el("h3", spec.title));
    const form = Tk.el("form", null, "action-form", { id: `${prefix}act-${spec.name}`, autocomplete: "off" });
    const getters = [];
    for (const f of spec.fields || []) {
      const id = `${prefix}${spec.name}-${f.name}`;
      const label = Tk.el("label", null, f.type === "checkbox" ? "check" : "");
      let input;
      if (f.type === "textarea") {
        input = Tk.el("textarea", null, null, { rows: "3", maxlength: "4000" });
      } else if (f.type === "select") {
        input = document.createElement("select");
        input.appendChild(Tk.option("", "— 请选择 Choose —"));
        for (const o of f.options || []) input.appendChild(Tk.option(o.value, o.label));
      } else if (f.type === "cascade") {
        const wrap = Tk.el("span", null, "cascade");
        const sels = [1, 2, 3].map((n) => {
          const s = document.createElement("select"); s.id = `${id}-${n}`; wrap.appendChild(s); return s;
        });
        const c = Tk.cascade(sels[0], sels[1], sels[2], ctx.categories || []);
        if (order.category && order.category.codes) c.set(order.category.codes);
        label.appendChild(Tk.el("span", f.label + (f.required ? " *" : "")));
        label.appendChild(wrap);
        form.appendChild(label);
        getters.push((body) => { const v = c.value(); if (v) body[f.name] = v; });
        continue;
      } else {
        input = document.createElement("input");
        input.type = f.type === "checkbox" ? "checkbox" : f.type === "datetime" ? "datetime-local" : "text";
        if (f.type === "phone") { input.inputMode = "tel"; input.maxLength = 32; }
        else if (f.type !== "checkbox" && f.type !== "datetime") input.maxLength = 200;
        if (f.list) input.setAttribute("list", f.list);
      }
      input.id = id; input.name = f.name;
      if (f.placeholder) input.placeholder = f.placeholder;
      if (f.value !== undefined && f.type !== "checkbox") input.value = String(f.value);
      if (f.type === "checkbox") {
        input.checked = !!f.value;
        label.appendChild(input);
        label.appendChild(Tk.el("span", " " + f.label));
        getters.push((body) => { body[f.name] = input.checked; });
      } else {
        label.appendChild(Tk.el("span", f.label + (f.required ? " *" : "")));
        label.appendChild(input);
        if (f.type === "datetime") getters.push((body) => { if (input.value) body[f.name] = Tk.localInput(input.value); });
        else getters.push((body) => { body[f.name] = input.value; });
      }
      form.appendChild(label);
    }
    const button = Tk.el("button", spec.button || spec.title, null, { type: "submit", id: `${prefix}${spec.name}-submit` });
    const out = Tk.el("span", "", "result", { id: `${prefix}${spec.name}-result`, role: "status" });
    form.appendChild(button);
    form.appendChild(out);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (!ctx.actor()) {
        out.className = "result error";
        out.textContent = "请先在右上角填写操作人 / enter who you are (top right) first";
        const who = Tk.$("actor");
        if (who) who.focus();
        return;
      }
      const body = { ...(spec.extra || {}), actor: ctx.actor(), version: order.version };
      for (const g of getters) g(body);
      button.disabled = true;
      out.className = "result"; out.textContent = "提交中… Saving…";
      const res = await Tk.api("POST", `/api/tickets/orders/${encodeURIComponent(order.id)}/${spec.path || spec.name}`, body);
      button.disabled = false;
      Tk.report(out, res, spec.ok || "已保存 Saved");
      if (res.ok && ctx.onDone) ctx.onDone(res.data, spec);
      if (!res.ok && res.data && res.data.error === "stale" && ctx.onStale) ctx.onStale(res);
    });
    box.appendChild(form);
    return box;
  };

  const SELF_SETTLED = ["enquiry", "opinion", "suggestion", "praise"];
  const WORKING = ["dispatched", "in_progress"];

  // the actions open to an order in its state, as actionForm specs
  // (role "department" = only what a department does)
  Tk.actionSpecs = function (o, meta, role) {
    const m = meta || {};
    const opts = (list) => (list || []).map((x) => ({ value: x.value, label: x.label }));
    const repair = o.order_type === "repair";
    const complaint = o.order_type === "complaint";
    const open = !["draft", "cancelled", "closed"].includes(o.status);
    const working = WORKING.includes(o.status);
    const specs = [];
    const agent = role !== "department";
    if (agent && complaint && open) {
      specs.push({ name: "classify", title: "投诉分类 Classify", fields: [
        { name: "category", label: "三级分类 Category", type: "cascade", required: true }] });
    }
    if (agent && ((o.status === "accepted" && !o.merged) || working)) {
      const transfer = o.status !== "accepted";
      const fields = [
        { name: "department", label: "派发部门 Department", required: true, list: "dept-list" },
        { name: "assignee", label: "处理人 Named person", required: true },
        { name: "assignee_phone", label: "处理人电话 Phone", type: "phone", required: repair },
        { name: "note", label: "派发说明 Note", type: "textarea" },
        { name: "major_outage", label: "重大停电 Major outage (callbacks never slip)", type: "checkbox", value: !!o.major_outage },
      ];
      if (complaint && !o.category) fields.unshift({ name: "category", label: "三级分类 Category", type: "cascade", required: true });
      specs.push({ name: "dispatch", title: transfer ? "转派 Transfer" : "派发 Dispatch", fields,
                   ok: transfer ? "已转派 Transferred" : "已派发 Dispatched" });
    }
    if (o.status === "dispatched") {
      specs.push({ name: "start", title: "签收 Accept (start)", fields: [{ name: "note", label: "说明 Note" }], ok: "已签收 Started" });
    }
    if (repair && working) {
      if (!o.arrived_at) {
        specs.push({ name: "crew-arrival", path: "crew-report", extra: { kind: "arrival" }, title: "抢修到达 Crew arrived",
          fields: [{ name: "arrived_at", label: "到达时间 Arrived at (空=现在 empty = now)", type: "datetime" }] });
      }
      specs.push({ name: "crew-findings", path: "crew-report", extra: { kind: "findings" }, title: "现场情况 Findings",
        fields: [{ name: "findings", label: "现场情况 What the crew found", type: "textarea", required: true },
                 { name: "expected_repair_at", label: "预计修复时间 Expected repair", type: "datetime" }] });
      specs.push({ name: "crew-result", path: "crew-report", extra: { kind: "result" }, title: "抢修结果 Repair result",
        fields: [{ name: "result", label: "结果 Result", type: "select", options: opts(m.repair_results), required: true },
                 { name: "finished_at", label: "完成时间 Finished at", type: "datetime" },
                 { name: "note", label: "说明 Note", type: "textarea" }] });
    }
    if (working) {
      const fields = [{ name: "result", label: "处理结果 Result", type: "textarea", required: true }];
      if (repair) {
        fields.push({ name: "repair_result", label: "抢修结果 Repair result", type: "select", options: opts(m.repair_results),
                      required: !o.repair_result, value: o.repair_result || "" });
        fields.push({ name: "finished_at", label: "完成时间 Finished at", type: "datetime" });
      }
      specs.push({ name: "feedback", title: "反馈 Feedback", fields, ok: "已反馈 Fed back" });
      specs.push({ name: "extend", title: "延期 Extension (cannot finish in time)", ok: "已延期 Extended", fields: [
        { name: "progress", label: "目前进度 Progress", type: "textarea", required: true },
        { name: "responsible_person", label: "责任人 Responsible person", required: true },
        { name: "responsible_phone", label: "责任人电话 Phone", type: "phone", required: true },
        { name: "until", label: "延期至 Until (空=再加3个工作日)", type: "datetime" }] });
    }
    if (agent && o.status === "feedback") {
      specs.push({ name: "callback", title: "回访 Callback", ok: "已记录回访 Callback recorded", fields: [
        { name: "result", label: "回访结果 Result", type: "select", options: opts(m.callback_results), required: true },
        { name: "note", label: "回访情况 Note (不满意时必填 required unless satisfied)", type: "textarea" },
        { name: "hot_topic", label: "热点问题,上报营销部 Hot topic — escalate", type: "checkbox" }] });
    }
    if (agent && ["feedback", "callback"].includes(o.status)) {
      specs.push({ name: "return", title: "退回部门 Return to department", ok: "已退回 Returned",
        fields: [{ name: "reason", label: "退回原因 Reason", type: "textarea", required: true }] });
    }
    if (agent && o.status === "callback") {
      specs.push({ name: "close", title: "归档 Close", ok: "已归档 Closed", fields: [{ name: "note", label: "说明 Note" }] });
    }
    if (agent && o.status === "accepted" && SELF_SETTLED.includes(o.order_type) && !o.merged) {
      specs.push({ name: "close", title: "当场答复归档 Settled on the phone — close", ok: "已归档 Closed",
        fields: [{ name: "note", label: "答复内容 Answer given", type: "textarea", required: true }] });
    }
    if (complaint && !o.appeal_status && [...WORKING, "feedback", "callback", "closed"].includes(o.status)) {
      specs.push({ name: "appeal", title: "申诉 Appeal (department)", ok: "已申诉 Appeal filed",
        fields: [{ name: "reason", label: "申诉理由 Reason", type: "textarea", required: true }] });
    }
    if (agent && o.appeal_status === "pending") {
      specs.push({ name: "appeal-decide", title: "申诉审核 Decide the appeal", ok: "已审核 Decided", fields: [
        { name: "decision", label: "结论 Decision", type: "select", options: opts(m.appeal_decisions), required: true },
        { name: "note", label: "审核意见 Note", type: "textarea", required: true }] });
    }
    if (agent && o.merged && o.status === "accepted") {
      specs.push({ name: "detach", title: "解除并单(新故障) Detach — a fault of its own", ok: "已解除 Detached",
        fields: [{ name: "reason", label: "原因 Reason", type: "textarea", required: true }] });
    }
    return specs;
  };

  // <datalist id="dept-list"> with the department names
  Tk.departmentList = async function () {
    let dl = Tk.$("dept-list");
    if (!dl) { dl = document.createElement("datalist"); dl.id = "dept-list"; document.body.appendChild(dl); }
    const res = await Tk.api("GET", "/api/tickets/departments");
    dl.replaceChildren();
    for (const d of (res.ok && Array.isArray(res.data) ? res.data : [])) dl.appendChild(Tk.option(d, d));
    return res.ok ? res.data : [];
  };

  window.Tk = Tk;
})();
