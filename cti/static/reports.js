// History reports: start a report job, poll its progress, render its tables
// (text only: textContent, never innerHTML), link the CSV / XLSX downloads.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const HINTS = { day: "例如 2026-03-15", month: "例如 2026-03", quarter: "例如 2026-Q1", year: "例如 2026" };
  const POLL_MS = 300;
  const fetchApi = (url, init) => (window.apiFetch ? window.apiFetch(url, init) : fetch(url, init));

  function pad(n) { return String(n).padStart(2, "0"); }
  function beijingToday() {
    // Beijing time is UTC+8 all year
    const d = new Date(Date.now() + 8 * 3600 * 1000);
    return { y: d.getUTCFullYear(), m: d.getUTCMonth() + 1, d: d.getUTCDate() };
  }
  function defaultPeriod(kind) {
    const t = beijingToday();
    if (kind === "day") return `${t.y}-${pad(t.m)}-${pad(t.d)}`;
    if (kind === "month") return `${t.y}-${pad(t.m)}`;
    if (kind === "quarter") return `${t.y}-Q${Math.floor((t.m - 1) / 3) + 1}`;
    return String(t.y);
  }
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function cell(value, type, unit) {
    if (value === null || value === undefined || value === "") return type === "text" ? "" : "—";
    if (typeof value === "boolean") return value ? "是" : "否";
    const t = unit || type;
    if (t === "pct") return (value * 100).toFixed(1) + "%";
    if (t === "num") return Number(value).toFixed(1);
    if (t === "count" || t === "int") return String(Math.round(value));
    return String(value);
  }

  function renderTable(section) {
    const box = el("section", null, "card wide");
    box.dataset.section = section.id;
    box.appendChild(el("h3", section.title));
    const table = el("table", null, "report");
    table.dataset.section = section.id;
    const head = el("tr");
    for (const c of section.columns) head.appendChild(el("th", c.label));
    table.appendChild(el("thead")).appendChild(head);
    const body = el("tbody");
    if (!section.rows.length) {
      const tr = el("tr");
      const td = el("td", "本期无数据 No data", "text muted");
      td.colSpan = section.columns.length;
      tr.appendChild(td);
      body.appendChild(tr);
    }
    for (const row of section.rows) {
      const tr = el("tr");
      tr.dataset.row = row._row === undefined ? "" : String(row._row);
      if (row._row === "total") tr.className = "total";
      if (row.flagged) tr.className = "flagged";
      for (const c of section.columns) {
        const unit = section.id === "order_figures" && c.key === "value" ? row.unit : null;
        const td = el("td", cell(row[c.key], c.type, unit), c.type === "text" ? "text" : "");
        td.dataset.k = c.key;
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    table.appendChild(body);
    box.appendChild(table);
    if (section.note) box.appendChild(el("p", null)).appendChild(el("small", section.note));
    return box;
  }

  function render(report) {
    $("report-title").textContent = report.title;
    const box = $("sections");
    box.replaceChildren(...report.sections.map(renderTable));
  }

  function showProgress(job) {
    $("progress-box").hidden = false;
    $("progress").value = job.progress || 0;
    const st = $("status");
    st.dataset.state = job.state;
    const pctText = Math.round((job.progress || 0) * 100) + "%";
    st.textContent = job.state === "done" ? "已完成 Done" :
      job.state === "failed" ? "失败 Failed" :
      job.state === "queued" ? "排队中 Queued…" : `计算中 ${pctText} ${job.step || ""}`;
  }

  async function poll(id) {
    for (;;) {
      const r = await fetchApi(`/api/reports/${encodeURIComponent(id)}`, { headers: { Accept: "application/json" } });
      const job = await r.json();
      if (!r.ok) throw new Error(job.message || r.status);
      showProgress(job);
      if (job.state === "done") return job;
      if (job.state === "failed") throw new Error(job.error || "报表生成失败 / report failed");
      await new Promise((res) => setTimeout(res, POLL_MS));
    }
  }

  async function run(ev) {
    if (ev) ev.preventDefault();
    $("error").textContent = "";
    $("downloads").hidden = true;
    $("run").disabled = true;
    try {
      const r = await fetchApi("/api/reports", {
        method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ kind: $("kind").value, period: $("period").value.trim() }),
      });
      const job = await r.json();
      if (!r.ok) throw new Error(job.message || r.status);
      showProgress(job);
      const done = await poll(job.id);
      render(done.report);
      $("csv-link").href = done.csv_url;
      $("xlsx-link").href = done.xlsx_url;
      $("downloads").hidden = false;
    } catch (e) {
      $("error").textContent = "出错了 Error: " + (e && e.message ? e.message : String(e));
    } finally {
      $("run").disabled = false;
    }
  }

  $("kind").addEventListener("change", () => {
    const k = $("kind").value;
    $("period-hint").textContent = HINTS[k];
    $("period").value = defaultPeriod(k);
  });
  $("report-form").addEventListener("submit", run);
  const params = new URLSearchParams(location.search);
  if (params.get("kind") && HINTS[params.get("kind")]) $("kind").value = params.get("kind");
  $("period-hint").textContent = HINTS[$("kind").value];
  $("period").value = params.get("period") || defaultPeriod($("kind").value);
})();
