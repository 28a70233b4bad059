// /quality?agent=<id>: an agent's scores over time.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const { el, fmtTime, get } = window.Rec;
  function row(cells) {
    const tr = el("tr");
    cells.forEach((c) => { const td = el("td"); if (c instanceof Node) td.append(c); else td.textContent = c ?? ""; tr.append(td); });
    return tr;
  }
  async function load(agent) {
    if (!/^[0-9A-Za-z_-]{1,32}$/.test(agent)) { $("summary").textContent = "坐席工号无效 / bad agent id"; return; }
    const res = await get(`/api/agents/${encodeURIComponent(agent)}/scores`);
    let j = {};
    try { j = await res.json(); } catch (e) { /* empty */ }
    if (!res.ok) { $("summary").textContent = j.message || `加载失败 / failed (${res.status})`; return; }
    $("summary").textContent = `坐席 ${j.agent}: ${j.count} 次评分 scores` + (j.average !== null ? `, 平均 average ${j.average}` : "");
    $("months").replaceChildren(...j.by_month.map((m) => row([m.month, m.average, m.count, m.min, m.max])));
    $("scores").replaceChildren(...j.scores.slice().reverse().map((s) => {
      const a = el("a", `#${s.recording_id}`); a.href = `/recordings?agent=${encodeURIComponent(j.agent)}`;
      return row([fmtTime(s.created_at), a, s.score, s.supervisor, s.comment]);
    }));
  }
  $("pick").addEventListener("submit", (ev) => { ev.preventDefault(); history.replaceState(null, "", `?agent=${encodeURIComponent($("agent").value)}`); load($("agent").value.trim()); });
  (async () => {
    const who = window.Auth ? await window.Auth.me() : null;
    const agent = new URLSearchParams(location.search).get("agent") || (who && who.role === "agent" ? who.agent_id : "");
    if (agent) { $("agent").value = agent; load(agent); }
  })();
})();
