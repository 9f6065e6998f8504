// First-party behaviour for the dashboard (CSP allows only same-origin scripts, no inline ones):
// the folding menu, copy buttons, the browser's time zone for schedule previews, the light/dark
// toggle, errors htmx would otherwise swallow, the slug preview, focus on the first invalid field,
// and open <details> / log scroll kept across live refreshes. The saved theme is applied earlier,
// before the first paint, by theme.js.
(function () {
  "use strict";
  var root = document.documentElement;
  root.classList.add("js"); // theme.js did it already; harmless if this file is loaded alone

  try {
    // Lets the schedule preview also show the viewer's own zone; the server reads this cookie.
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone) document.cookie = "tz=" + zone + "; path=/; max-age=31536000; SameSite=Lax";
  } catch (e) { /* old browser: previews use the schedule's own zone */ }

  // --- the folding menu (narrow screens) ---------------------------------------------------
  function setMenu(open) {
    var toggle = document.getElementById("nav-toggle");
    var links = document.getElementById("nav-links");
    if (!toggle || !links) return;
    links.classList.toggle("open", open);
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
  }

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    var toggle = document.getElementById("nav-toggle");
    if (toggle && toggle.getAttribute("aria-expanded") === "true") { setMenu(false); toggle.focus(); }
  });

  // --- copy buttons -----------------------------------------------------------------------
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
    if (event.target.closest("#nav-toggle")) {
      setMenu(document.getElementById("nav-toggle").getAttribute("aria-expanded") !== "true");
      return;
    }
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
      try { localStorage.setItem("theme", next); } catch (e) { /* not saved; still switched */ }
    }
  });

  // --- errors htmx does not show by itself ---------------------------------------------------
  function showError(text) {
    var box = document.getElementById("net-error");
    if (!box) {
      box = document.createElement("article");
      box.id = "net-error";
      box.className = "flash error";
      box.setAttribute("role", "alert");
      document.body.appendChild(box);
    }
    box.textContent = text;
    box.hidden = false;
  }

  function clearError() {
    var box = document.getElementById("net-error");
    if (box) box.hidden = true;
  }

  document.addEventListener("htmx:sendError", function () {
    showError("Could not reach the server: check your connection, then try again.");
  });
  document.addEventListener("htmx:timeout", function () {
    showError("The server took too long to answer; try again.");
  });
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    var status = xhr ? xhr.status : 0;
    var told = xhr && xhr.getResponseHeader("X-Error-Message");
    var text = told || {
      401: "Your session has ended: log in again.",
      403: "Your role in this team does not allow this.",
      404: "Not found: it may have been deleted.",
    }[status] || "The server could not do this (HTTP " + status + "). Try again; if it persists, tell your admin.";
    showError(text);
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.successful) clearError();
  });

  // --- keep what the reader opened and scrolled across a live refresh ------------------------
  // The detail page re-renders #live every few seconds; without this every <details> closes and
  // the engine log jumps back to its top. Elements are matched by id.
  var kept = null;

  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (!event.detail.shouldSwap || !target || !target.hasAttribute("data-keep-state")) return;
    kept = { open: {}, scroll: {} };
    target.querySelectorAll("details[id]").forEach(function (d) { kept.open[d.id] = d.open; });
    target.querySelectorAll("[data-keep-scroll][id]").forEach(function (el) {
      var atEnd = el.scrollTop + el.clientHeight >= el.scrollHeight - 4;
      kept.scroll[el.id] = { top: el.scrollTop, atEnd: atEnd };
    });
  });

  function restore(container) {
    if (!kept) return;
    container.querySelectorAll("details[id]").forEach(function (d) {
      if (Object.prototype.hasOwnProperty.call(kept.open, d.id)) d.open = kept.open[d.id];
    });
    container.querySelectorAll("[data-keep-scroll][id]").forEach(function (el) {
      var was = kept.scroll[el.id];
      if (was) el.scrollTop = was.atEnd ? el.scrollHeight : was.top; // at the end: follow the tail
    });
    kept = null;
  }

  // --- forms: slug preview and focus on the first invalid field -------------------------------
  // The same canonicalisation as the server and the SDK (inferencekey_web/lib/slugs.py).
  function canonicalSlug(value) {
    return value.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 63).replace(/-+$/, "");
  }

  document.addEventListener("input", function (event) {
    var name = event.target.closest("[data-slug-source]");
    if (!name) return;
    var slug = document.getElementById(name.getAttribute("data-slug-source"));
    if (slug) slug.placeholder = canonicalSlug(name.value);
  });

  function focusFirstInvalid(container) {
    var field = container.querySelector("[aria-invalid=true]");
    if (!field) {
      var summary = container.querySelector(".form-errors");
      if (summary) { summary.setAttribute("tabindex", "-1"); field = summary; }
    }
    if (field) field.focus();
  }

  function enhance(container) {
    restore(container);
    // The first form showing errors (a form re-rendered after a refused submit) gets the focus.
    var forms = container.matches && container.matches("form") ? [container] : container.querySelectorAll("form");
    for (var i = 0; i < forms.length; i++) {
      if (forms[i].querySelector("[aria-invalid=true], .form-errors")) { focusFirstInvalid(forms[i]); break; }
    }
  }

  document.addEventListener("htmx:load", function (event) { enhance(event.target); });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { enhance(document); });
  } else {
    enhance(document);
  }
})();
