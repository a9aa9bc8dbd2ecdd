/* The Atlas explorer: one table of every paper with filters, text search and sorting, from data/papers.json on
   this site. Vanilla JavaScript, no external library; paper text is inserted with textContent only, never as HTML. */
(function () {
  "use strict";

  var FILTERS = [
    ["stage", "Stage", function (p) { return p.stages; }, "stages"],
    ["axis", "Axis", function (p) { return p.axes; }, "axes"],
    ["technique", "Technique", function (p) { return p.techniques; }, "techniques"],
    ["modality", "Modality", function (p) { return p.modality; }, "modalities"],
    ["training", "Training", function (p) { return [p.training]; }, "training"],
    ["year", "Year", function (p) { return [String(p.year)]; }, null],
    ["venue", "Venue", function (p) { return [p.venue_name]; }, null]
  ];
  var COLUMNS = [
    ["title", "Paper", function (p) { return (p.name || p.title).toLowerCase(); }],
    ["year", "Year", function (p) { return p.date || String(p.year); }],
    ["venue", "Venue", function (p) { return p.venue.toLowerCase(); }],
    ["techniques", "Techniques", function (p) { return p.techniques.join(","); }],
    ["code", "Code", function (p) { return p.official_code ? 2 : (p.code ? 1 : 0); }],
    ["refimpl", "Ref. impl.", function (p) { return p.refimpl ? 1 : 0; }],
    ["claims", "Claims", function (p) { return p.claims; }]
  ];

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function unique(values) {
    return Array.from(new Set(values)).sort(function (a, b) { return a < b ? -1 : a > b ? 1 : 0; });
  }

  function buildExplorer(root, data) {
    var papers = data.papers, vocab = data.vocab;
    var state = { text: "", sort: "year", dir: -1, code: false, refimpl: false };
    var bar = el("div", { "class": "atlas-filters", role: "search" });
    var selects = {};
    FILTERS.forEach(function (f) {
      var key = f[0], values = unique([].concat.apply([], papers.map(f[2])));
      if (key === "year") { values.reverse(); }
      var label = el("label", {}, f[1]);
      var select = el("select", { name: key, "data-filter": key });
      select.appendChild(el("option", { value: "" }, "any"));
      values.forEach(function (v) {
        var names = f[3] ? vocab[f[3]] : null;
        select.appendChild(el("option", { value: v }, names && names[v] ? names[v] : v));
      });
      select.addEventListener("change", update);
      selects[key] = select;
      label.appendChild(select);
      bar.appendChild(label);
    });
    [["code", "has code"], ["refimpl", "has reference implementation"]].forEach(function (c) {
      var label = el("label", { "class": "atlas-check" });
      var box = el("input", { type: "checkbox", name: c[0], "data-filter": c[0] });
      box.addEventListener("change", function () { state[c[0]] = box.checked; update(); });
      label.appendChild(box);
      label.appendChild(document.createTextNode(c[1]));
      bar.appendChild(label);
    });
    var textLabel = el("label", {}, "Text");
    var input = el("input", { type: "search", name: "q", placeholder: "title, name, author, id", "data-filter": "text" });
    input.addEventListener("input", function () { state.text = input.value.trim().toLowerCase(); update(); });
    textLabel.appendChild(input);
    bar.appendChild(textLabel);

    var count = el("p", { "class": "atlas-count", "aria-live": "polite" });
    var table = el("table", { "class": "atlas-explorer-table" });
    var thead = el("thead"), headRow = el("tr");
    COLUMNS.forEach(function (col) {
      var th = el("th", { "data-sort": col[0], scope: "col", tabindex: "0" }, col[1]);
      function sortBy() {
        if (state.sort === col[0]) { state.dir = -state.dir; } else { state.sort = col[0]; state.dir = col[0] === "title" || col[0] === "venue" ? 1 : -1; }
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
    var wrap = el("div", { "class": "md-typeset__scrollwrap" });
    var inner = el("div", { "class": "md-typeset__table" });
    inner.appendChild(table);
    wrap.appendChild(inner);
    root.appendChild(bar);
    root.appendChild(count);
    root.appendChild(wrap);

    papers.forEach(function (p) {
      p._text = [p.title, p.name, p.authors, p.id, p.venue].join(" ").toLowerCase();
    });

    function row(p) {
      var tr = el("tr", { "data-id": p.id });
      var first = el("td");
      var link = el("a", { href: p.url }, p.name || p.title);
      first.appendChild(link);
      if (p.name) { first.appendChild(el("small", {}, p.title)); }
      first.appendChild(el("small", {}, p.authors));
      tr.appendChild(first);
      tr.appendChild(el("td", {}, p.year));
      tr.appendChild(el("td", {}, p.venue));
      tr.appendChild(el("td", {}, p.techniques.map(function (t) { return vocab.techniques[t] || t; }).join(", ")));
      tr.appendChild(el("td", {}, p.official_code ? "official" : (p.code ? "yes" : "")));
      tr.appendChild(el("td", {}, p.refimpl ? "yes" : ""));
      tr.appendChild(el("td", {}, p.claims || ""));
      return tr;
    }

    function update() {
      var chosen = {};
      FILTERS.forEach(function (f) { chosen[f[0]] = selects[f[0]].value; });
      var shown = papers.filter(function (p) {
        for (var i = 0; i < FILTERS.length; i++) {
          var v = chosen[FILTERS[i][0]];
          if (v && FILTERS[i][2](p).indexOf(v) < 0) { return false; }
        }
        if (state.code && !p.code) { return false; }
        if (state.refimpl && !p.refimpl) { return false; }
        return !state.text || p._text.indexOf(state.text) >= 0;
      });
      var col = COLUMNS.filter(function (c) { return c[0] === state.sort; })[0];
      shown.sort(function (a, b) {
        var x = col[2](a), y = col[2](b);
        return (x < y ? -1 : x > y ? 1 : 0) * state.dir || (a.id < b.id ? -1 : 1);
      });
      headRow.querySelectorAll("th").forEach(function (th) {
        if (th.getAttribute("data-sort") === state.sort) { th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending"); }
        else { th.removeAttribute("aria-sort"); }
      });
      var fragment = document.createDocumentFragment();
      shown.forEach(function (p) { fragment.appendChild(row(p)); });
      tbody.replaceChildren(fragment);
      count.textContent = shown.length + " of " + papers.length + " papers";
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
