// Work-order page: the call recordings of this order (录音), with players.
(function () {
  "use strict";
  const m = location.pathname.match(/\/orders\/([0-9]{1,18})$/);
  const card = document.getElementById("recordings-card");
  if (!m || !card || !window.Rec) return;
  const list = document.getElementById("recordings-list");
  const note = document.getElementById("recordings-note");
  window.Rec.renderOrder(m[1], list, note).then(() => { card.hidden = false; });
})();
