// Live updates for the console (embedded in the binary; the only script).
// The pages work without it: it only keeps the phase current and reloads
// a detail page when its phase or proposal changes, from the server-sent
// events that a watch made with the signed-in user's token feeds.
(function () {
  'use strict';
  if (!window.EventSource) { return; }

  function listen(url, onUpdate) {
    var source = new EventSource(url);
    source.addEventListener('phase', function (event) {
      var update;
      try { update = JSON.parse(event.data); } catch (e) { return; }
      onUpdate(update, source);
    });
  }

  var detail = document.getElementById('detail');
  if (detail) {
    var url = '/remediations/' + encodeURIComponent(detail.dataset.namespace) + '/' +
      encodeURIComponent(detail.dataset.name) + '/events';
    listen(url, function (update, source) {
      if (update.namespace !== detail.dataset.namespace || update.name !== detail.dataset.name) { return; }
      var phase = document.getElementById('phase');
      if (phase) { phase.textContent = update.phase; }
      if (update.phase !== detail.dataset.phase || update.hash !== detail.dataset.hash) {
        source.close();
        window.location.reload();
      }
    });
    return;
  }

  var table = document.getElementById('remediations');
  if (table) {
    listen('/remediations/events', function (update, source) {
      var rows = table.querySelectorAll('tr.remediation');
      for (var i = 0; i < rows.length; i++) {
        var row = rows[i];
        if (row.dataset.namespace === update.namespace && row.dataset.name === update.name) {
          row.dataset.phase = update.phase;
          var cell = row.querySelector('td.phase');
          if (cell) { cell.textContent = update.phase; }
          return;
        }
      }
      // A case this page does not show yet: load the list again.
      source.close();
      window.location.reload();
    });
  }
})();
