// Result page: while the job is queued or running, poll the API and swap in the finished result.
(function () {
  "use strict";
  var panel = document.getElementById("result-panel");
  if (!panel) return;

  function bindFilter(root) {
    root.querySelectorAll("input[data-filter-for]").forEach(function (box) {
      var select = document.getElementById(box.dataset.filterFor);
      if (!select) return;
      box.addEventListener("input", function () {
        var needle = box.value.trim().toLowerCase();
        select.querySelectorAll("optgroup").forEach(function (group) {
          var anyVisible = false;
          group.querySelectorAll("option").forEach(function (option) {
            var text = (group.label + " " + option.textContent).toLowerCase();
            var visible = !needle || text.indexOf(needle) !== -1;
            option.hidden = !visible;
            anyVisible = anyVisible || visible;
          });
          group.hidden = !anyVisible;
        });
      });
    });
  }
  bindFilter(panel);
  if (panel.dataset.finished === "true") return;

  var delay = 100;  // an idle worker answers in a few tens of milliseconds: ask soon, then back off
  function poll() {
    fetch(panel.dataset.statusUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (job) {
        if (job && (job.status === "done" || job.status === "failed")) {
          return fetch(panel.dataset.fragmentUrl, { credentials: "same-origin" })
            .then(function (response) { return response.text(); })
            .then(function (html) {
              panel.innerHTML = html;
              panel.dataset.finished = "true";
              bindFilter(panel);
            });
        }
        delay = Math.min(delay * 1.5, 4000);
        window.setTimeout(poll, delay);
      })
      .catch(function () { window.setTimeout(poll, 4000); });
  }
  window.setTimeout(poll, delay);
})();

// Result page: the model-year picker shows that year's price and specifications in place.
document.addEventListener("change", function (event) {
  "use strict";
  var select = event.target;
  if (!select.classList || !select.classList.contains("year-select")) return;
  var result = select.closest("[data-testid=result]");
  result.querySelectorAll(".year-facts").forEach(function (facts) {
    facts.hidden = facts.dataset.year !== select.value;
  });
});
