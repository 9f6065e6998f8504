// Loaded synchronously in <head>, before the stylesheets: the saved light/dark choice is applied
// before the first paint, so a dark page never flashes light. Kept tiny; the rest is in app.js.
(function () {
  "use strict";
  var root = document.documentElement;
  root.classList.add("js"); // hides the no-JavaScript fallbacks (.nojs-only) and folds the menu
  try {
    var theme = window.localStorage && localStorage.getItem("theme");
    if (theme === "light" || theme === "dark") root.setAttribute("data-theme", theme);
  } catch (e) { /* storage disabled: the system preference applies */ }
})();
