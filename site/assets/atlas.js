/* The Atlas: copy and download buttons (BibTeX). Vanilla JavaScript, no external library; the .bib download
   is made in the browser from the page's own BibTeX (no file per paper on the server). */
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

  function setupDownloadButtons() {
    document.querySelectorAll("button.atlas-download[data-copy-target]").forEach(function (button) {
      button.addEventListener("click", function () {
        var text = sourceText(button);
        if (text === null) { return; }
        var url = URL.createObjectURL(new Blob([text + "\n"], { type: "text/x-bibtex;charset=utf-8" }));
        var link = document.createElement("a");
        link.href = url;
        link.download = button.getAttribute("data-filename") || "paper.bib";
        document.body.appendChild(link);
        link.click();
        document.body.removeChild(link);
        setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
      });
    });
  }

  function setup() { setupCopyButtons(); setupDownloadButtons(); }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", setup); } else { setup(); }
})();
