// Knowledge base page: standard answers, searchable.  Text only.
(function () {
  "use strict";
  const q = new URLSearchParams(location.search).get("q");
  if (q) Tk.$("kb-q").value = q.slice(0, 100);
  const run = Tk.knowledge(Tk.$("kb-q"), Tk.$("kb-results"), Tk.$("kb-topic"), { limit: 50 });
  Tk.$("kb-form").addEventListener("submit", (ev) => { ev.preventDefault(); run(); });
  run();
})();
