// /recordings?order=<id> or ?agent=<id>: recordings with players; supervisors score them.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const { el, item, renderOrder, get } = window.Rec;
  const params = new URLSearchParams(location.search);
  const CRITERIA = { greeting: "服务规范用语", listening: "倾听与沟通", accuracy: "业务解答准确",
                     order: "工单记录完整", efficiency: "处理效率" };
  let who = null;
  let scoring = null;

  function addScoreButtons() {
    if (!who || !["supervisor", "admin"].includes(who.role)) return;
    document.querySelectorAll("#list li.rec-item").forEach((li) => {
      const b = el("button", "评分 Score");
      b.type = "button";
      b.className = "rec-score";
      b.addEventListener("click", () => openScore(li.dataset.recording));
      li.append(" ", b);
    });
  }
  function openScore(id) {
    scoring = id;
    $("score-rec").textContent = `#${id}`;
    $("score-card").hidden = false;
    $("score-result").textContent = "";
  }

  async function load() {
    const order = ($("order").value || "").trim();
    const agent = ($("agent").value || "").trim();
    const list = $("list"), note = $("note");
    if (order) {
      if (!/^[0-9]{1,18}$/.test(order)) { note.textContent = "工单号无效 / bad order id"; return; }
      await renderOrder(order, list, note);
    } else {
      const q = agent ? `?agent=${encodeURIComponent(agent)}` : "";
      const res = await get(`/api/recordings${q}`);
      list.replaceChildren();
      if (!res.ok) { note.textContent = `加载失败 / failed (${res.status})`; return; }
      const data = await res.json();
      data.recordings.forEach((r) => list.append(item(r)));
      note.textContent = data.recordings.length ? "" : "没有录音 / no recordings";
    }
    addScoreButtons();
  }

  $("criteria").replaceChildren(...Object.entries(CRITERIA).map(([k, label]) => {
    const l = el("label", `${label} (0–10) `);
    const i = el("input"); i.type = "number"; i.min = "0"; i.max = "10"; i.dataset.criterion = k;
    l.append(i);
    return l;
  }));
  $("score-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!scoring) return;
    const criteria = {};
    document.querySelectorAll("#criteria input").forEach((i) => {
      if (i.value !== "") criteria[i.dataset.criterion] = Number(i.value);
    });
    const body = { score: Number($("score").value), comment: $("comment").value, criteria };
    const res = await window.apiFetch(`/api/recordings/${scoring}/scores`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    let j = {};
    try { j = await res.json(); } catch (e) { /* empty */ }
    $("score-result").textContent = res.ok ? "已保存 Saved" : (j.message || `失败 / failed (${res.status})`);
  });
  $("filter").addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  $("order").value = params.get("order") || "";
  $("agent").value = params.get("agent") || "";
  (async () => { who = await (window.Auth ? window.Auth.me() : null); await load(); })();
})();
