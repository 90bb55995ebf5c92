/* The overview's charts lead to the deliveries behind each bar.

   Unfold's app.js draws every <canvas class="chart"> with Chart.js once the page has loaded; each
   overview chart sits in a .sb-chart whose data-links holds, per series and per bar, the URL of
   the delivery list filtered on that sync, state and time. A click on a bar opens it. */
(function () {
  "use strict";

  function linkCharts() {
    if (!window.Chart) return;
    document.querySelectorAll(".sb-chart[data-links]").forEach(function (box) {
      const canvas = box.querySelector("canvas");
      const chart = canvas && window.Chart.getChart(canvas);
      if (!chart) return;
      const links = JSON.parse(box.dataset.links);
      chart.options.onClick = function (event, elements) {
        if (!elements.length) return;
        const bar = elements[0];
        const url = (links[bar.datasetIndex] || [])[bar.index];
        if (url) window.location.href = url;
      };
      chart.options.onHover = function (event, elements) {
        canvas.style.cursor = elements.length ? "pointer" : "default";
      };
      chart.update();
      box.dataset.linked = "true";
    });
  }

  // After unfold's own DOMContentLoaded handler has created the charts.
  window.addEventListener("load", function () { window.setTimeout(linkCharts, 0); });
})();
