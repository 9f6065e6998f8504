// First-party behaviour for the dashboard (CSP allows only same-origin scripts, no inline ones):
// copy buttons, the browser's time zone for schedule previews, and the light/dark toggle.
(function () {
  "use strict";
  var root = document.documentElement;
  root.classList.add("js"); // hides the no-JavaScript fallbacks (.nojs-only)

  var theme = window.localStorage && localStorage.getItem("theme");
  if (theme) root.setAttribute("data-theme", theme);

  try {
    // Schedule previews are shown in the viewer's own time zone; the server reads this cookie.
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone) document.cookie = "tz=" + zone + "; path=/; max-age=31536000; SameSite=Lax";
  } catch (e) { /* old browser: previews use the schedule's own zone */ }

  function textOf(el) {
    return (el.tagName === "INPUT" || el.tagName === "TEXTAREA") ? el.value : el.textContent;
  }

  function copied(button, ok) {
    var label = button.textContent;
    button.textContent = ok ? "Copied" : "Press Ctrl+C";
    setTimeout(function () { button.textContent = label; }, 1500);
  }

  function fallbackCopy(el, button) {
    var range = document.createRange();
    range.selectNodeContents(el);
    var selection = window.getSelection();
    selection.removeAllRanges();
    if (el.select) { el.select(); } else { selection.addRange(range); }
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    copied(button, ok);
  }

  // Delegated, so buttons that arrive in htmx swaps work too.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy-target]");
    if (button) {
      var el = document.getElementById(button.getAttribute("data-copy-target"));
      if (!el) return;
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(textOf(el)).then(
          function () { copied(button, true); },
          function () { fallbackCopy(el, button); });
      } else {
        fallbackCopy(el, button);
      }
      return;
    }
    if (event.target.closest("[data-theme-toggle]")) {
      var dark = root.getAttribute("data-theme") === "dark" ||
        (!root.getAttribute("data-theme") && window.matchMedia("(prefers-color-scheme: dark)").matches);
      var next = dark ? "light" : "dark";
      root.setAttribute("data-theme", next);
      if (window.localStorage) localStorage.setItem("theme", next);
    }
  });
})();
