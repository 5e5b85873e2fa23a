(function () {
  "use strict";
  var info = document.getElementById("info");
  var ops = document.querySelectorAll("g.op");
  function show(g) {
    var previous = document.querySelectorAll("g.op.selected");
    for (var i = 0; i < previous.length; i++) previous[i].classList.remove("selected");
    g.classList.add("selected");
    var d = g.dataset;
    var lines = [
      d.desc,
      "client " + d.client + " · call " + d.call + " · return " + d.ret,
      d.order ? "linearized as #" + d.order + " · state after: " + d.state : "not in the linearization"
    ];
    if (g.classList.contains("bad")) lines.push("could not be placed next");
    info.textContent = lines.join("\n");
    info.hidden = false;
  }
  for (var i = 0; i < ops.length; i++) {
    ops[i].addEventListener("click", function (e) { show(e.currentTarget); });
    ops[i].addEventListener("keydown", function (e) { if (e.key === "Enter") show(e.currentTarget); });
  }
  // Bring the first operation that could not be placed into view in each timeline.
  var scrolls = document.querySelectorAll("div.scroll");
  for (var k = 0; k < scrolls.length; k++) {
    var bad = scrolls[k].querySelector("g.op.bad rect");
    if (bad) scrolls[k].scrollLeft = Math.max(0, bad.x.baseVal.value - scrolls[k].clientWidth / 2);
  }
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") info.hidden = true; });
  document.body.setAttribute("data-op-count", String(ops.length));
  document.body.setAttribute("data-ready", "yes");
})();
