// Draws each plotly figure that site/convert.py left as JSON, with the plotly.js this site vendors (no CDN).
(function () {
  function draw() {
    document.querySelectorAll(".p4l-plotly").forEach(function (box) {
      var target = box.querySelector(".p4l-plotly-target");
      if (target.dataset.drawn) return;
      var spec = JSON.parse(box.querySelector(".p4l-plotly-spec").textContent);
      var config = Object.assign({responsive: true, displaylogo: false}, spec.config || {});
      target.dataset.drawn = "1";
      window.Plotly.newPlot(target, spec.data, spec.layout, config);
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
