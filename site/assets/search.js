/* The Atlas: search that finds the paper. Loaded in the page head (site/overrides/main.html), before the theme's
   script creates its search worker, because it adapts the messages to and from that worker. Vanilla JavaScript. */
(function () {
  "use strict";

  /* Search. The theme's search makes every typed word an optional prefix, so "FastV" ranked FastViT and FastVLM
     above FastV, and an author's full name ranked any title starting with "Li" above the author's paper. Here:
     every word must match (as a prefix, so results come while typing), a word that matches exactly counts ten
     times more, and pages holding the typed words as a phrase ("Liang Chen") come first. The theme's search worker
     (mkdocs-material 9.8, pinned) receives the typed text in a {type: 2, data} message and answers with
     {type: 3, data: {items}} (items grouped by page, best first); both are adapted here. A query that already
     uses the search syntax (quotes, +, -, *, ^, ~, :) is passed on unchanged. */
  var SEARCH_QUERY = 2, SEARCH_RESULT = 3;
  var PLAIN_WORD = /^[\p{L}\p{N}][\p{L}\p{N}.'_]*$/u;

  function plainWords(text) {
    var words = String(text).trim().toLowerCase().split(/\s+/).filter(Boolean);
    return words.length && words.every(function (w) { return PLAIN_WORD.test(w); }) ? words : null;
  }

  function atlasQuery(text) {
    var words = plainWords(text);
    return words ? words.map(function (w) { return "+" + w + "* " + w + "^10"; }).join(" ") : text;
  }

  function fold(text) {
    return String(text).replace(/<[^>]*>/g, "").replace(/&amp;/g, "&").normalize("NFD")
      .replace(/[\u0300-\u036f]/g, "").toLowerCase().replace(/\s+/g, " ");
  }

  function phraseFirst(text, groups) {
    var words = plainWords(text);
    if (!words || words.length < 2) { return groups; }
    var phrase = new RegExp("(^|[^\\p{L}\\p{N}])" + fold(words.join(" ")).replace(/[.*+?^${}()|[\]\\]/g, "\\$&") +
                            "($|[^\\p{L}\\p{N}])", "u");
    function holds(group) {
      return group.some(function (item) { return phrase.test(fold(item.title + " " + item.text)); });
    }
    return groups.filter(holds).concat(groups.filter(function (g) { return !holds(g); }));
  }
  window.atlasSearch = { query: atlasQuery, phraseFirst: phraseFirst };

  if (window.Worker && !Worker.prototype.atlasPatched) {
    var postMessage = Worker.prototype.postMessage, addEventListener = Worker.prototype.addEventListener;
    var asked = new WeakMap();  // result event -> the query it answers
    Worker.prototype.postMessage = function (message) {
      if (message && message.type === SEARCH_QUERY && typeof message.data === "string") {
        (this.atlasQueries = this.atlasQueries || []).push(message.data);
        message = { type: SEARCH_QUERY, data: atlasQuery(message.data) };
      }
      return postMessage.apply(this, [message].concat(Array.prototype.slice.call(arguments, 1)));
    };
    Worker.prototype.addEventListener = function (type, listener, options) {
      if (type !== "message" || typeof listener !== "function") { return addEventListener.apply(this, arguments); }
      var worker = this;
      return addEventListener.call(this, type, function (event) {
        var data = event.data;
        if (!data || data.type !== SEARCH_RESULT || !data.data || !Array.isArray(data.data.items)) {
          return listener.call(this, event);
        }
        if (!asked.has(event)) { asked.set(event, (worker.atlasQueries || []).shift()); }
        var query = asked.get(event);
        if (query === undefined) { return listener.call(this, event); }
        var items = phraseFirst(query, data.data.items);
        return listener.call(this, { data: { type: data.type, data: Object.assign({}, data.data, { items: items }) } });
      }, options);
    };
    Worker.prototype.atlasPatched = true;
  }
})();
