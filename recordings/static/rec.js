// Recordings: shared rendering (order page block, recordings page).  Every
// value from the server is put in as text.
(function () {
  "use strict";
  const get = (url) => (window.apiFetch || fetch)(url, { credentials: "same-origin",
    headers: { Accept: "application/json" } });

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function fmtTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString("zh-CN", { hour12: false });
  }
  function fmtDur(s) {
    if (s === null || s === undefined) return "";
    s = Math.round(s);
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  // one recording: state, times, player (or a clear reason why there is none)
  function item(r) {
    const li = el("li", null, "rec-item");
    li.dataset.recording = r.id;
    const head = el("div");
    head.append(el("strong", `#${r.id}`), " ",
      el("span", r.state_label, "rec-state rec-" + r.state), " ",
      el("span", `${r.queue || ""} 坐席 ${r.agent || "—"} · ${fmtTime(r.started_at)} · ${fmtDur(r.duration_s)}`));
    li.append(head);
    if (r.playable) {
      const audio = el("audio");
      audio.controls = true;
      audio.preload = "none";
      audio.src = r.audio_url;
      audio.className = "rec-player";
      const dl = el("a", "下载 Download");
      dl.href = r.download_url;
      dl.className = "rec-download";
      li.append(audio, " ", dl);
    } else if (r.unavailable) {
      li.append(el("div", r.unavailable.message, "rec-unavailable error"));
    }
    if (r.legal_hold_until) li.append(el("div", `保全至 Held until ${fmtTime(r.legal_hold_until)}`, "rec-hold"));
    return li;
  }

  async function renderOrder(orderId, box, note) {
    const res = await get(`/api/recordings?order=${encodeURIComponent(orderId)}`);
    box.replaceChildren();
    if (!res.ok) {
      let msg = `录音加载失败 / recordings could not be loaded (${res.status})`;
      try { const j = await res.json(); if (j.message) msg = j.message; } catch (e) { /* keep */ }
      note.textContent = msg;
      return null;
    }
    const data = await res.json();
    data.recordings.forEach((r) => box.append(item(r)));
    const parts = [];
    if (!data.recordings.length) parts.push("此工单没有可收听的录音 / no recordings you may hear");
    if (data.hidden) parts.push(`另有 ${data.hidden} 条录音无权收听 / ${data.hidden} more you may not hear`);
    note.textContent = parts.join(" · ");
    return data;
  }

  window.Rec = { el, item, renderOrder, fmtTime, fmtDur, get };
})();
