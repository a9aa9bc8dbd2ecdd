/* The Atlas explorer: every paper in one paged table with multi-select filters, technique groups, text search over
   titles, short names, every author and the summaries, sorting, and export of the selection (BibTeX, CSV, JSON).
   The whole state (filters, words, sort, page) lives in the address, so a reload or a shared link shows the same
   view. Data from data/papers.json on this site; vanilla JavaScript, no external library; paper text is inserted
   with textContent only, never as HTML. */
(function () {
  "use strict";

  var PAGE_SIZE = 50, PAGE_SIZES = [25, 50, 100, 200];
  // [key, label, the values a paper has, the vocabulary that names them]
  var FILTERS = [
    ["stage", "Stage", function (p) { return p.stages; }, "stages"],
    ["axis", "Axis", function (p) { return p.axes; }, "axes"],
    ["technique", "Technique", function (p) { return p.techniques; }, "techniques"],
    ["modality", "Modality", function (p) { return p.modality; }, "modalities"],
    ["training", "Training", function (p) { return [p.training]; }, "training"],
    ["year", "Year", function (p) { return [String(p.year)]; }, null],
    ["venue", "Venue", function (p) { return [p.venue_name]; }, null]
  ];
  var FLAGS = [
    ["code", "has code", function (p) { return p.code; }],
    ["refimpl", "has a reference implementation", function (p) { return p.refimpl; }],
    ["claims", "states efficiency claims", function (p) { return p.claims > 0; }]
  ];
  // [key, header, sort value, ascending first?]
  var COLUMNS = [
    ["title", "Paper", function (p) { return (p.name || p.title).toLowerCase(); }, true],
    ["year", "Year", function (p) { return p.date || String(p.year); }, false],
    ["venue", "Venue", function (p) { return p.venue.toLowerCase(); }, true],
    ["techniques", "Techniques", function (p) { return p.techniques.join(","); }, true],
    ["code", "Links", function (p) { return p.official_code ? 2 : (p.code ? 1 : 0); }, false],
    ["refimpl", "Ref. impl.", function (p) { return p.refimpl ? 1 : 0; }, false],
    ["claims", "Claims", function (p) { return p.claims; }, false]
  ];
  var DEFAULT_SORT = "year";

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function unique(values) {
    return Array.from(new Set(values)).sort(function (a, b) { return a < b ? -1 : a > b ? 1 : 0; });
  }

  // Lower case without accents: "Müller" is found by "muller" and "müller".
  function fold(text) {
    return String(text).normalize("NFD").replace(/[\u0300-\u036f]/g, "").toLowerCase();
  }

  function csvCell(value) {
    var text = Array.isArray(value) ? value.join("; ") : (value === true ? "yes" : value === false ? "" : String(value));
    return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  function download(name, type, text) {
    var url = URL.createObjectURL(new Blob([text], { type: type }));
    var link = el("a", { href: url, download: name });
    document.body.appendChild(link);
    link.click();
    document.body.removeChild(link);
    setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
  }

  function buildExplorer(root, data) {
    var papers = data.papers, vocab = data.vocab, columns = data.columns;
    var groups = vocab.groups || {};
    var state = readState();
    var boxes = {};  // filter key -> value -> checkbox

    papers.forEach(function (p) {
      p._text = fold([p.title, p.name, p.authors.join(" "), p.summary, p.id, p.venue, p.arxiv, p.doi].join(" "));
    });

    /* ------------------------------------------------------------------ state <-> address */
    function readState() {
      var params = new URLSearchParams(window.location.search);
      var s = { q: params.get("q") || "", chosen: {}, flags: {}, sort: DEFAULT_SORT, dir: -1, page: 1, per: PAGE_SIZE };
      FILTERS.concat([["group"]]).forEach(function (f) {
        s.chosen[f[0]] = new Set((params.get(f[0]) || "").split(",").filter(Boolean));
      });
      FLAGS.forEach(function (f) { s.flags[f[0]] = params.get(f[0]) === "1"; });
      var sort = params.get("sort");
      var col = COLUMNS.filter(function (c) { return c[0] === sort; })[0];
      if (col) { s.sort = sort; s.dir = col[3] ? 1 : -1; }
      if (params.get("dir") === "asc") { s.dir = 1; } else if (params.get("dir") === "desc") { s.dir = -1; }
      s.page = Math.max(1, parseInt(params.get("page"), 10) || 1);
      s.per = Math.min(1000, Math.max(1, parseInt(params.get("per"), 10) || PAGE_SIZE));
      return s;
    }

    function writeState() {
      var params = new URLSearchParams();
      if (state.q) { params.set("q", state.q); }
      FILTERS.concat([["group"]]).forEach(function (f) {
        var values = Array.from(state.chosen[f[0]]);
        if (values.length) { params.set(f[0], values.join(",")); }
      });
      FLAGS.forEach(function (f) { if (state.flags[f[0]]) { params.set(f[0], "1"); } });
      if (state.sort !== DEFAULT_SORT || state.dir !== -1) {
        params.set("sort", state.sort);
        params.set("dir", state.dir > 0 ? "asc" : "desc");
      }
      if (state.page > 1) { params.set("page", String(state.page)); }
      if (state.per !== PAGE_SIZE) { params.set("per", String(state.per)); }
      var query = params.toString();
      window.history.replaceState(null, "", window.location.pathname + (query ? "?" + query : ""));
    }

    /* ------------------------------------------------------------------ controls */
    var bar = el("div", { "class": "atlas-filters", role: "search" });
    var textLabel = el("label", { "class": "atlas-text" }, "Words");
    var input = el("input", { type: "search", name: "q", "data-filter": "text",
                              placeholder: "title, short name, author, summary" });
    input.value = state.q;
    input.addEventListener("input", function () { state.q = input.value; changed(); });
    textLabel.appendChild(input);
    bar.appendChild(textLabel);

    function option(list, key, value, label, count) {
      var row = el("label", { "class": "atlas-option" });
      var box = el("input", { type: "checkbox", name: key, value: value });
      box.checked = state.chosen[key].has(value);
      box.addEventListener("change", function () {
        if (box.checked) { state.chosen[key].add(value); } else { state.chosen[key].delete(value); }
        changed();
      });
      (boxes[key] = boxes[key] || {})[value] = box;
      row.appendChild(box);
      row.appendChild(document.createTextNode(" " + label + (count !== undefined ? " (" + count + ")" : "")));
      list.appendChild(row);
    }

    var summaries = {};
    FILTERS.forEach(function (f) {
      var key = f[0], names = f[3] ? vocab[f[3]] : null;
      var counts = {};
      papers.forEach(function (p) { f[2](p).forEach(function (v) { counts[v] = (counts[v] || 0) + 1; }); });
      var values = names ? Object.keys(names).filter(function (v) { return counts[v]; }) : unique(Object.keys(counts));
      if (key === "year") { values.reverse(); }
      var box = el("details", { "class": "atlas-filter", "data-filter": key });
      var summary = summaries[key] = el("summary", {}, f[1]);
      box.appendChild(summary);
      var list = el("div", { "class": "atlas-options" });
      if (key === "technique" && Object.keys(groups).length) {
        list.appendChild(el("p", { "class": "atlas-options-heading" }, "Groups (any of their techniques)"));
        Object.keys(groups).forEach(function (g) {
          var members = groups[g].techniques;
          var n = papers.filter(function (p) { return p.techniques.some(function (t) { return members.indexOf(t) >= 0; }); }).length;
          option(list, "group", g, groups[g].name + ": " + members.length + " techniques", n);
        });
        list.appendChild(el("p", { "class": "atlas-options-heading" }, "Techniques"));
      }
      values.forEach(function (v) { option(list, key, v, names && names[v] ? names[v] : v, counts[v]); });
      box.appendChild(list);
      bar.appendChild(box);
    });
    FLAGS.forEach(function (f) {
      var label = el("label", { "class": "atlas-check" });
      var box = el("input", { type: "checkbox", name: f[0], "data-filter": f[0] });
      box.checked = state.flags[f[0]];
      box.addEventListener("change", function () { state.flags[f[0]] = box.checked; changed(); });
      label.appendChild(box);
      label.appendChild(document.createTextNode(" " + f[1]));
      bar.appendChild(label);
    });
    // an address naming a value no paper has (an old link, a typo) filters on the rest
    Object.keys(state.chosen).forEach(function (k) {
      state.chosen[k].forEach(function (v) { if (!boxes[k] || !boxes[k][v]) { state.chosen[k].delete(v); } });
    });
    var clear = el("button", { type: "button", "class": "md-button atlas-clear" }, "Clear filters");
    clear.addEventListener("click", function () {
      state.q = "";
      input.value = "";
      Object.keys(state.chosen).forEach(function (k) { state.chosen[k].clear(); });
      Object.keys(boxes).forEach(function (k) { Object.keys(boxes[k]).forEach(function (v) { boxes[k][v].checked = false; }); });
      FLAGS.forEach(function (f) { state.flags[f[0]] = false; });
      bar.querySelectorAll(".atlas-check input").forEach(function (b) { b.checked = false; });
      changed();
    });
    bar.appendChild(clear);

    var toolbar = el("div", { "class": "atlas-toolbar" });
    var count = el("p", { "class": "atlas-count", "aria-live": "polite" });
    var exports = el("p", { "class": "atlas-export" });
    var exportLabel = el("span", {});
    exports.appendChild(exportLabel);
    [["bib", "BibTeX"], ["csv", "CSV"], ["json", "JSON"]].forEach(function (e) {
      var button = el("button", { type: "button", "class": "md-button atlas-export-button", "data-export": e[0] }, e[1]);
      button.addEventListener("click", function () { exportShown(e[0], button); });
      exports.appendChild(document.createTextNode(" "));
      exports.appendChild(button);
    });
    toolbar.appendChild(count);
    toolbar.appendChild(exports);

    var table = el("table", { "class": "atlas-explorer-table atlas-cards" });
    var thead = el("thead"), headRow = el("tr");
    COLUMNS.forEach(function (col) {
      var th = el("th", { "data-sort": col[0], scope: "col", tabindex: "0" }, col[1]);
      function sortBy() {
        if (state.sort === col[0]) { state.dir = -state.dir; } else { state.sort = col[0]; state.dir = col[3] ? 1 : -1; }
        state.page = 1;
        update();
      }
      th.addEventListener("click", sortBy);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(); } });
      headRow.appendChild(th);
    });
    thead.appendChild(headRow);
    var tbody = el("tbody");
    table.appendChild(thead);
    table.appendChild(tbody);

    var pager = el("nav", { "class": "atlas-pager", "aria-label": "Pages" });
    var prev = el("button", { type: "button", "class": "md-button", "data-page": "prev" }, "‹ Previous");
    var where = el("span", { "class": "atlas-page" });
    var next = el("button", { type: "button", "class": "md-button", "data-page": "next" }, "Next ›");
    prev.addEventListener("click", function () { state.page -= 1; update(); window.scrollTo(0, root.offsetTop); });
    next.addEventListener("click", function () { state.page += 1; update(); window.scrollTo(0, root.offsetTop); });
    var perLabel = el("label", {}, "Per page ");
    var perSelect = el("select", { name: "per" });
    PAGE_SIZES.concat(PAGE_SIZES.indexOf(state.per) < 0 ? [state.per] : []).sort(function (a, b) { return a - b; })
      .forEach(function (n) { perSelect.appendChild(el("option", { value: String(n) }, n)); });
    perSelect.value = String(state.per);
    perSelect.addEventListener("change", function () { state.per = parseInt(perSelect.value, 10); changed(); });
    perLabel.appendChild(perSelect);
    pager.appendChild(prev);
    pager.appendChild(where);
    pager.appendChild(next);
    pager.appendChild(perLabel);

    root.appendChild(bar);
    root.appendChild(toolbar);
    root.appendChild(table);
    root.appendChild(pager);

    /* ------------------------------------------------------------------ rows */
    function row(p) {
      var tr = el("tr", { "data-id": p.id });
      var first = el("td", { "data-label": "Paper" });
      first.appendChild(el("a", { href: p.url }, p.name || p.title));
      if (p.name) { first.appendChild(el("small", {}, p.title)); }
      var authors = p.authors.slice(0, 3).join(", ") + (p.authors.length > 3 || p.authors_truncated ? " et al." : "");
      first.appendChild(el("small", {}, authors || "authors unknown"));
      tr.appendChild(first);
      tr.appendChild(el("td", { "data-label": "Year" }, p.year));
      tr.appendChild(el("td", { "data-label": "Venue" }, p.venue));
      tr.appendChild(el("td", { "data-label": "Techniques" },
                        p.techniques.map(function (t) { return vocab.techniques[t] || t; }).join(", ")));
      var links = el("td", { "data-label": "Links", "class": "atlas-links" });
      if (p.link) { links.appendChild(el("a", { href: p.link, "data-link": "paper" }, "paper")); }
      if (p.code_urls.length) {
        if (p.link) { links.appendChild(document.createTextNode(" · ")); }
        links.appendChild(el("a", { href: p.code_urls[0], "data-link": "code",
                                    title: p.official_code ? "official code" : "code (not verified as official)" },
                             "code"));
      }
      tr.appendChild(links);
      tr.appendChild(el("td", { "data-label": "Ref. impl." }, p.refimpl ? "yes" : ""));
      tr.appendChild(el("td", { "data-label": "Claims" }, p.claims || ""));
      return tr;
    }

    /* ------------------------------------------------------------------ filtering */
    function selected() {
      var techniques = new Set(state.chosen.technique);
      state.chosen.group.forEach(function (g) { (groups[g] ? groups[g].techniques : []).forEach(function (t) { techniques.add(t); }); });
      var words = fold(state.q).split(/\s+/).filter(Boolean);
      var shown = papers.filter(function (p) {
        for (var i = 0; i < FILTERS.length; i++) {
          var key = FILTERS[i][0];
          var wanted = key === "technique" ? techniques : state.chosen[key];
          if (wanted.size && !FILTERS[i][2](p).some(function (v) { return wanted.has(v); })) { return false; }
        }
        for (var j = 0; j < FLAGS.length; j++) {
          if (state.flags[FLAGS[j][0]] && !FLAGS[j][2](p)) { return false; }
        }
        return words.every(function (w) { return p._text.indexOf(w) >= 0; });
      });
      var col = COLUMNS.filter(function (c) { return c[0] === state.sort; })[0];
      shown.sort(function (a, b) {
        var x = col[2](a), y = col[2](b);
        return (x < y ? -1 : x > y ? 1 : 0) * state.dir || (a.id < b.id ? -1 : 1);
      });
      return shown;
    }

    var current = [];

    function changed() { state.page = 1; update(); }

    function update() {
      current = selected();
      var pages = Math.max(1, Math.ceil(current.length / state.per));
      state.page = Math.min(Math.max(1, state.page), pages);
      var start = (state.page - 1) * state.per, end = Math.min(start + state.per, current.length);
      var fragment = document.createDocumentFragment();
      current.slice(start, end).forEach(function (p) { fragment.appendChild(row(p)); });
      tbody.replaceChildren(fragment);
      headRow.querySelectorAll("th").forEach(function (th) {
        if (th.getAttribute("data-sort") === state.sort) { th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending"); }
        else { th.removeAttribute("aria-sort"); }
      });
      FILTERS.forEach(function (f) {
        var n = state.chosen[f[0]].size + (f[0] === "technique" ? state.chosen.group.size : 0);
        summaries[f[0]].textContent = f[1] + (n ? " (" + n + ")" : "");
      });
      count.textContent = current.length
        ? "Showing " + (start + 1) + "–" + end + " of " + current.length + " papers (" + papers.length + " in the catalogue)"
        : "No paper matches (" + papers.length + " in the catalogue)";
      exportLabel.textContent = "Export these " + current.length + " papers:";
      exports.querySelectorAll("button").forEach(function (b) { b.disabled = !current.length; });
      where.textContent = "Page " + state.page + " of " + pages;
      prev.disabled = state.page <= 1;
      next.disabled = state.page >= pages;
      prev.hidden = next.hidden = where.hidden = pages <= 1;
      writeState();
    }

    /* ------------------------------------------------------------------ export */
    var bibtex = null;  // data/bibtex.json, fetched on the first .bib export

    function exportShown(kind, button) {
      var chosen = current.slice();
      if (kind === "csv") {
        var lines = [columns.map(function (c) { return csvCell(c[0]); }).join(",")];
        chosen.forEach(function (p) { lines.push(columns.map(function (c) { return csvCell(p[c[1]]); }).join(",")); });
        download("atlas-selection.csv", "text/csv;charset=utf-8", lines.join("\r\n") + "\r\n");
      } else if (kind === "json") {
        var records = chosen.map(function (p) {
          var out = {};
          columns.forEach(function (c) { out[c[0]] = p[c[1]]; });
          return out;
        });
        download("atlas-selection.json", "application/json", JSON.stringify(records) + "\n");
      } else {
        var write = function (entries) {
          var text = "% " + chosen.length + " papers selected in the Efficient LVLM Inference Atlas explorer\n% " +
            window.location.href + "\n\n" + chosen.map(function (p) {
              var entry = entries[p.id] || "";
              return entry.slice(-1) === "\n" ? entry : entry + "\n";
            }).join("\n");
          download("atlas-selection.bib", "text/plain;charset=utf-8", text);
        };
        if (bibtex) { write(bibtex); return; }
        button.disabled = true;
        fetch(root.getAttribute("data-bib"), { credentials: "same-origin" })
          .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
          .then(function (entries) { bibtex = entries; write(entries); })
          .catch(function (err) { exportLabel.textContent = "Could not load the BibTeX entries (" + err.message + ")."; })
          .finally(function () { button.disabled = false; });
      }
    }

    update();
    root.setAttribute("data-ready", "");
  }

  function setupExplorer() {
    var root = document.getElementById("atlas-explorer");
    if (!root) { return; }
    fetch(root.getAttribute("data-src"), { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
      .then(function (data) { buildExplorer(root, data); })
      .catch(function (err) {
        root.appendChild(el("p", {}, "Could not load the paper list (" + err.message + "). Serve the site over HTTP, e.g. make serve."));
      });
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", setupExplorer); } else { setupExplorer(); }
})();
