/* Formula <-> code highlighting.  Every formula row, code line, CUDA launch and graph row
   carries data-ops: the indices of the IR ops it belongs to.  Pointing at one (or focusing
   it) lights up everything sharing an op; clicking pins the selection (click again to
   clear) and opens the CUDA panels holding it.  The page reads the same without this. */
(function () {
  "use strict";
  var script = document.currentScript;
  var root = (script && script.closest(".ncr")) || document;
  var items = Array.prototype.slice.call(root.querySelectorAll("[data-ops]"));
  var ops = items.map(function (el) { return el.getAttribute("data-ops").split(" "); });
  var pinned = null;

  function light(source, cls, on) {
    var wanted = ops[items.indexOf(source)];
    items.forEach(function (el, i) {
      var hit = ops[i].some(function (op) { return wanted.indexOf(op) >= 0; });
      el.classList.toggle(cls, on && hit);
      if (on && hit && cls === "pin") {
        for (var up = el.parentElement; up && up !== root; up = up.parentElement) {
          if (up.tagName === "DETAILS") { up.open = true; }
        }
      }
    });
  }

  items.forEach(function (el) {
    el.addEventListener("mouseenter", function () { light(el, "hl", true); });
    el.addEventListener("mouseleave", function () { light(el, "hl", false); });
    el.addEventListener("focus", function () { light(el, "hl", true); });
    el.addEventListener("blur", function () { light(el, "hl", false); });
    el.addEventListener("click", function (event) {
      if (event.target.closest("a")) { return; }
      var again = pinned === el;
      items.forEach(function (other) { other.classList.remove("pin"); });
      pinned = again ? null : el;
      if (!again) { light(el, "pin", true); }
    });
    el.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); el.click(); }
    });
  });
})();
