/* The Atlas: the BibTeX copy button and sortable tables. Vanilla JavaScript, no external library (each paper's .bib
   is a static file next to its page, written by `python -m tools site --build`). */
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

  /* Tables with class atlas-sortable sort by a column when its header is clicked (again: reverse); a cell's
     data-sort-value, when present, is what sorts (numbers compare as numbers). */
  function sortKey(cell) {
    var raw = cell.hasAttribute("data-sort-value") ? cell.getAttribute("data-sort-value") : cell.textContent.trim();
    var number = /^-?\d+(?:\.\d+)?/.exec(raw);
    return number ? { num: parseFloat(number[0]), text: raw } : { text: raw.toLowerCase() };
  }

  function setupSortableTables() {
    document.querySelectorAll("table.atlas-sortable").forEach(function (table) {
      var body = table.tBodies[0];
      if (!body) { return; }
      table.querySelectorAll("thead th").forEach(function (th, column) {
        th.setAttribute("tabindex", "0");
        th.classList.add("atlas-sort-header");
        function sort() {
          var ascending = th.getAttribute("aria-sort") !== "ascending";
          table.querySelectorAll("thead th").forEach(function (other) { other.removeAttribute("aria-sort"); });
          th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
          var rows = Array.prototype.slice.call(body.rows);
          rows.sort(function (a, b) {
            var x = sortKey(a.cells[column]), y = sortKey(b.cells[column]);
            var order = x.num !== undefined && y.num !== undefined ? x.num - y.num : x.text.localeCompare(y.text);
            return ascending ? order : -order;
          });
          rows.forEach(function (row) { body.appendChild(row); });
        }
        th.addEventListener("click", sort);
        th.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); } });
      });
    });
  }

  function setup() { setupCopyButtons(); setupSortableTables(); }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", setup); } else { setup(); }
})();
