// The global log, live: rows rendered (and escaped) by the server arrive as server-sent events.
(function () {
  "use strict";
  var rows = document.getElementById("log-rows");
  var status = document.getElementById("live-status");
  if (!rows || !rows.dataset.liveUrl || !window.EventSource) {
    if (status) status.textContent = "not live (reload to update)";
    return;
  }
  var source = new EventSource(rows.dataset.liveUrl);
  source.onopen = function () { status.textContent = "live"; };
  source.onerror = function () { status.textContent = "reconnecting…"; };
  source.addEventListener("append", function (message) {
    var empty = document.getElementById("log-empty");
    if (empty) empty.remove();
    rows.insertAdjacentHTML("afterbegin", message.data);  // newest first
    var row = rows.firstElementChild;
    if (row) row.classList.add("new");
    status.textContent = "live";
  });
})();
