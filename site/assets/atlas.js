/* The Atlas: the BibTeX copy button. Vanilla JavaScript, no external library (each paper's .bib is a static file
   next to its page, written by `python -m tools site --build`). */
(function () {
  "use strict";

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      try { document.execCommand("copy") ? resolve() : reject(new Error("copy refused")); }
      catch (err) { reject(err); }
      finally { document.body.removeChild(area); }
    });
  }

  function setupCopyButtons() {
    document.querySelectorAll("button.atlas-copy[data-copy-target]").forEach(function (button) {
      button.addEventListener("click", function () {
        var text = sourceText(button);
        if (text === null) { return; }
        var label = button.textContent;
        copyText(text).then(function () {
          button.textContent = "Copied";
          button.setAttribute("data-copied", "");
        }, function () {
          button.textContent = "Select the text and copy it";
        }).finally(function () {
          setTimeout(function () { button.textContent = label; button.removeAttribute("data-copied"); }, 2000);
        });
      });
    });
  }

  function sourceText(button) {
    var target = document.getElementById(button.getAttribute("data-copy-target"));
    if (!target) { return null; }
    var source = target.querySelector("pre code") || target.querySelector("pre") || target;
    return source.textContent;
  }

  function setup() { setupCopyButtons(); }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", setup); } else { setup(); }
})();
