// Hovering a node highlights its edges and dims the rest; no library, no network.
(function () {
  var root = document.getElementById(%(root)s);
  if (!root) return;
  var edges = root.querySelectorAll(".edge");
  root.querySelectorAll(".node").forEach(function (node) {
    var id = node.getAttribute("data-node");
    node.addEventListener("mouseenter", function () {
      node.classList.add("hl");
      edges.forEach(function (e) {
        var on = e.getAttribute("data-s") === id || e.getAttribute("data-t") === id;
        e.classList.toggle("hl", on);
        e.classList.toggle("dim", !on);
      });
    });
    node.addEventListener("mouseleave", function () {
      node.classList.remove("hl");
      edges.forEach(function (e) { e.classList.remove("hl", "dim"); });
    });
  });
})();
