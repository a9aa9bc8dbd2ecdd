/* The Atlas: the BibTeX copy button, sortable result tables, and the search query shim. Vanilla JavaScript, no
   external library (each paper's .bib is a static file next to its page, written by `python -m tools site --build`). */
(function () {
  "use strict";

  /* Search: every word must match (as a prefix, so results come while typing), and a word that matches exactly
     counts ten times more. The theme's own query makes every word an optional prefix, so "FastV" ranked FastViT
     and FastVLM above FastV, and an author's full name ranked any title starting with "Li" above the author's
     paper. The theme's search worker (mkdocs-material 9.8, pinned) receives the typed text in a {type: 2, data}
     message; a query that already uses the search syntax (quotes, +, -, *, ^, ~, :) is passed on unchanged. */
  var SEARCH_QUERY = 2;
  var PLAIN_WORD = /^[\p{L}\p{N}][\p{L}\p{N}.'_]*$/u;

  function atlasQuery(text) {
    var words = text.trim().toLowerCase().split(/\s+/).filter(Boolean);
    if (!words.length || !words.every(function (w) { return PLAIN_WORD.test(w); })) { return text; }
    return words.map(function (w) { return "+" + w + "* " + w + "^10"; }).join(" ");
  }
  window.atlasQuery = atlasQuery;

  if (window.Worker && !Worker.prototype.atlasPatched) {
    var postMessage = Worker.prototype.postMessage;
    Worker.prototype.postMessage = function (message) {
      if (message && message.type === SEARCH_QUERY && typeof message.data === "string") {
        message = { type: SEARCH_QUERY, data: atlasQuery(message.data) };
      }
      return postMessage.apply(this, [message].concat(Array.prototype.slice.call(arguments, 1)));
    };
    Worker.prototype.atlasPatched = true;
  }

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
