// Agent desktop. Every value from a call is hostile: only textContent / value, never innerHTML.
(function () {
  "use strict";
  const agent = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  const $ = (id) => document.getElementById(id);
  $("agent-id").textContent = agent;
  const IVR = { repair: "故障报修 Repair", complaint: "投诉举报 Complaint", enquiry: "咨询查询 Enquiry" };
  const AREA = { town: "城区 Town", countryside: "农村 Countryside", remote: "偏远山区 Remote" };
  const STATUS = { draft: "草稿 Draft", accepted: "已受理 Accepted", dispatched: "已派发 Dispatched",
    in_progress: "处理中 In progress", feedback: "已反馈 Feedback", callback: "回访 Callback", closed: "已归档 Closed" };
  let current = null;
  let currentLinkedid = null;
  const CALL_STATE = { ringing: "振铃中 Ringing", connected: "通话中 Connected", ended: "已挂机 Call ended" };
  const WITHDRAWN = {
    answered_elsewhere: "该来电已由其他坐席接听,本工单已撤销 / answered by another agent, draft withdrawn",
    no_answer: "未接听,本工单已撤销 / not answered, draft withdrawn",
    caller_hung_up: "客户已挂机(未接通),本工单已撤销 / caller hung up before answer, draft withdrawn",
    ended_while_disconnected: "与交换机的连接中断期间来电已结束,本工单已撤销 / call ended while the PBX link was down, draft withdrawn",
  };

  function setCallState(state) {
    const el = $("call-state");
    el.dataset.state = state; el.textContent = CALL_STATE[state] || state;
  }

  fetch("/api/order-types").then((r) => r.json()).then((types) => {
    const sel = $("f-type");
    const blank = document.createElement("option");
    blank.value = ""; blank.textContent = "— 请选择 Choose —";
    sel.appendChild(blank);
    for (const t of types) {
      const o = document.createElement("option");
      o.value = t.value; o.textContent = t.label; sel.appendChild(o);
    }
    if (current) sel.value = current.order_type || "";
  });

  function setConn(state, text) {
    const el = $("conn");
    el.dataset.state = state; el.textContent = text;
    el.className = "conn " + (state === "open" ? "on" : "off");
  }

  function show(pop) {
    $("waiting").hidden = true;
    $("pop").hidden = false;
    $("pop-queue").textContent = pop.queue || "";
    $("caller-num").textContent = pop.caller_num || "(无号码 withheld)";
    $("caller-name").textContent = pop.caller_name || "";
    $("ivr-choice").textContent = IVR[pop.ivr_choice] || pop.ivr_choice || "—";
    const err = $("pop-error");
    const late = pop.late ? "补弹:振铃时与交换机的连接中断 / late pop: the phone rang while the PBX link was down" : "";
    err.hidden = !pop.error && !late; err.textContent = pop.error || late;
    const c = pop.customer;
    $("customer").hidden = !c;
    $("customer-unknown").hidden = !!c;
    if (c) {
      $("c-account").textContent = c.account_no || "";
      $("c-name").textContent = c.name || "";
      $("c-address").textContent = c.address || "";
      $("c-ta").textContent = c.transformer_area || "";
      $("c-feeder").textContent = c.feeder || "";
      $("c-village").textContent = c.village || "";
      $("c-area").textContent = AREA[c.area_class] || c.area_class || "";
      const flags = [];
      if (c.dedicated_transformer) flags.push("专变用户");
      if (c.large_customer) flags.push("大客户");
      if (c.sensitive) flags.push("敏感客户");
      if (c.high_rise) flags.push("高层住宅");
      $("c-key").textContent = flags.length ? flags.join("、") : "否 No";
    }
    const ul = $("recent");
    ul.replaceChildren();
    if (!pop.recent_orders || !pop.recent_orders.length) {
      const li = document.createElement("li"); li.className = "muted";
      li.textContent = "无 None"; ul.appendChild(li);
    } else {
      for (const r of pop.recent_orders) {
        const li = document.createElement("li");
        li.textContent = `${r.order_no} · ${r.order_type_label || r.order_type} · ${STATUS[r.status] || r.status} · ${r.created_at.slice(0, 16).replace("T", " ")} · ${r.description || ""}`;
        ul.appendChild(li);
      }
    }
    currentLinkedid = pop.linkedid;
    setCallState("ringing");
    $("pop-withdrawn").hidden = true;
    dirty = false;
    current = pop.order;
    if (current) { fillForm(current); announce(current); }
    else fillForm(pop.provisional_order || null, true);  // the draft's number follows (screen_pop_update)
    $("save-result").textContent = "";
    if (pop.replay && pop.order && pop.order.id) {
      // the page was opened or reloaded mid-call: the order may have been saved since the pop
      fetch(`/api/orders/${pop.order.id}`).then((r) => (r.ok ? r.json() : null)).then((o) => {
        if (o && current && o.id === current.id) { current = o; fillForm(current); announce(current); }
      }).catch(() => {});
    }
  }

  // what the agent typed since the pop: an update of the pop must not overwrite it
  let dirty = false;
  const FIELDS = ["f-type", "f-contact-name", "f-contact-phone", "f-address", "f-ta", "f-description"];
  $("order-form").addEventListener("input", () => { dirty = true; });

  // the pop completed: the draft written (or the spool's provisional order, or an error)
  function update(pop) {
    if (!pop || pop.linkedid !== currentLinkedid) return;
    const err = $("pop-error");
    if (pop.error) { err.hidden = false; err.textContent = pop.error; }
    const typed = dirty ? FIELDS.map((id) => $(id).value) : null;
    if (pop.order) {
      current = pop.order; fillForm(current); announce(current);
    } else if (!dirty) {
      fillForm(pop.provisional_order || null, true);
    }
    if (typed) FIELDS.forEach((id, i) => { $(id).value = typed[i]; });
  }

  function fillForm(o, provisional) {
    const form = $("order-form");
    $("order-no").textContent = o && !provisional ? o.order_no
      : (o ? "生成中… creating…" : "未生成 not created");
    $("order-status").textContent = o ? (STATUS[o.status] || o.status) : "";
    $("save").disabled = !o || !!provisional;
    if (!o) return;
    $("f-type").value = o.order_type || "";
    $("f-contact-name").value = o.contact_name || "";
    $("f-contact-phone").value = o.contact_phone || "";
    $("f-address").value = o.address || "";
    $("f-ta").value = o.transformer_area || "";
    $("f-description").value = o.description || "";
    if (provisional) delete form.dataset.orderId; else form.dataset.orderId = String(o.id);
  }

  // the order panel (agent-orders.js) hears about the order and may hand back a newer one
  function announce(o) { document.dispatchEvent(new CustomEvent("hotline:order", { detail: o })); }
  document.addEventListener("hotline:order-updated", (ev) => {
    if (!ev.detail || !current || ev.detail.id !== current.id) return;
    current = ev.detail; fillForm(current); announce(current);
  });

  $("order-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!current) return;
    const body = {
      order_type: $("f-type").value, contact_name: $("f-contact-name").value,
      contact_phone: $("f-contact-phone").value, address: $("f-address").value,
      transformer_area: $("f-ta").value, description: $("f-description").value,
      version: current.version,
    };
    const out = $("save-result");
    out.textContent = "保存中… Saving…";
    try {
      const r = await window.apiFetch(`/api/orders/${current.id}`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const data = await r.json();
      if (r.ok) {
        current = data; fillForm(current); announce(current);
        out.textContent = `已保存 Saved: ${data.order_no}`; out.className = "ok";
      } else {
        const fields = data.fields ? " — " + Object.values(data.fields).join(";") : "";
        out.textContent = `${data.message}${fields}`; out.className = "error";
      }
    } catch (e) {
      out.textContent = "网络错误,请重试 / network error, retry"; out.className = "error";
    }
  });

  let backoff = 500;
  function connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${location.host}/ws/agent/${encodeURIComponent(agent)}`);
    ws.onopen = () => { backoff = 500; setConn("open", "已连接 Connected"); };
    ws.onmessage = (m) => {
      let msg; try { msg = JSON.parse(m.data); } catch (e) { return; }
      document.dispatchEvent(new CustomEvent("hotline:message", { detail: msg }));
      if (msg.type === "screen_pop") show(msg);
      else if (msg.type === "call_state" && msg.linkedid === currentLinkedid) setCallState(msg.state);
      else if ((msg.type === "screen_pop_update" || msg.type === "screen_pop_order_saved")
               && msg.linkedid === currentLinkedid && msg.pop) update(msg.pop);
      else if (msg.type === "screen_pop_withdrawn" && msg.linkedid === currentLinkedid) {
        const w = $("pop-withdrawn");
        w.hidden = false; w.textContent = WITHDRAWN[msg.reason] || msg.reason;
        if (current && current.status === "draft") { current.status = "cancelled"; $("save").disabled = true;
          $("order-status").textContent = "已撤销 Withdrawn"; announce(current); }
      }
    };
    ws.onclose = () => {
      setConn("closed", "连接断开,重连中… Reconnecting…");
      setTimeout(connect, backoff); backoff = Math.min(backoff * 2, 10000);
    };
  }
  connect();
})();
