"""BibTeX for the catalogue: one fixed format, written with bibtexparser 2.x.

* Keys come from :func:`tools.catalogue.citekeys.assign_keys` (Scholar style: family name of the first author, year
of version 1,
  first significant title word; deterministic suffixes for collisions).
* ``@inproceedings`` (booktitle) or ``@article`` (journal) when the venue is a known conference or journal; a
preprint is
  an ``@article`` whose journal is ``arXiv preprint arXiv:<id>``. Every paper with an arXiv id keeps ``eprint``,
  ``archivePrefix`` and ``primaryClass``.
* Authors as ``Last, First and ...`` (``and others`` when the list is truncated; no author field when unknown).
* LaTeX specials and non-ASCII letters are escaped (``{\\"u}``, ``{\\l}``, ``\\&`` ...); characters with no LaTeX
  spelling here (CJK, most symbols) are kept as UTF-8, which biber and modern BibTeX read. Bidirectional-text controls
  are dropped (:func:`tools.outputs.text.plain`).
* Words with capitals after their first letter (acronyms, CamelCase names: LLaVA, KV, FastV) are protected by braces.
* ``url`` and ``doi`` are verbatim fields (biblatex and the url package read them as they are): written unescaped,
  with only what cannot stand in a braced value percent-encoded (braces, backslashes, whitespace).

``python -m tools bib`` writes ``atlas.bib``; ``python -m tools bib --compare FILE`` compares a user's .bib with the
catalogue (:func:`check_bib`).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import bibtexparser
from bibtexparser.library import Library
from bibtexparser.model import Entry, Field

from tools.catalogue.citekeys import assign_keys
from tools.catalogue.schema import Paper
from tools.catalogue.taxonomy import Taxonomy
from tools.catalogue.titles import normalise_title
from tools.outputs.text import plain

FIELD_ORDER = (
    "author",
    "title",
    "booktitle",
    "journal",
    "year",
    "doi",
    "eprint",
    "archiveprefix",
    "primaryclass",
    "url",
)
FIELD_NAMES = {"archiveprefix": "archivePrefix", "primaryclass": "primaryClass"}

# ------------------------------------------------------------------------------------------------ LaTeX escaping
_SPECIAL = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "&": r"\&",
    "%": r"\%",
    "#": r"\#",
    "_": r"\_",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}
# Combining marks (after NFD) -> the LaTeX accent command.
_ACCENTS = {
    "\u0300": "`",
    "\u0301": "'",
    "\u0302": "^",
    "\u0303": "~",
    "\u0304": "=",
    "\u0306": "u",
    "\u0307": ".",
    "\u0308": '"',
    "\u030a": "r",
    "\u030b": "H",
    "\u030c": "v",
    "\u0327": "c",
    "\u0328": "k",
    "\u0323": "d",
}
_LETTERS = {
    "ß": r"{\ss}",
    "ø": r"{\o}",
    "Ø": r"{\O}",
    "ł": r"{\l}",
    "Ł": r"{\L}",
    "æ": r"{\ae}",
    "Æ": r"{\AE}",
    "œ": r"{\oe}",
    "Œ": r"{\OE}",
    "ı": r"{\i}",
    "đ": r"{\dj}",
    "Đ": r"{\DJ}",
    "å": r"{\aa}",
    "Å": r"{\AA}",
}
_SYMBOLS = {
    "\u2013": "--",
    "\u2014": "---",
    "\u2026": r"\ldots{}",
    "\u00d7": r"$\times$",
    "\u2192": r"$\rightarrow$",
    "\u2248": r"$\approx$",
    "\u2264": r"$\leq$",
    "\u2265": r"$\geq$",
    "\u00b1": r"$\pm$",
    "\u221e": r"$\infty$",
    "\u03b1": r"$\alpha$",
    "\u03b2": r"$\beta$",
    "\u03b3": r"$\gamma$",
    "\u03b4": r"$\delta$",
    "\u03bb": r"$\lambda$",
    "\u03bc": r"$\mu$",
    "\u03c0": r"$\pi$",
    "\u03c3": r"$\sigma$",
    "\u03c4": r"$\tau$",
    "\u00b2": r"$^2$",
    "\u00b3": r"$^3$",
    "\u00b9": r"$^1$",
}
_ACCENT_LETTER = {v: k for k, v in _ACCENTS.items()}


_NOT_VERBATIM = re.compile(r"[{}\\\s]")


def verbatim(value: str) -> str:
    """A url or doi field's value: as it is, except braces, backslashes and whitespace, which are percent-encoded
    (none is valid in a URL or DOI, and each could end or break the braced value)."""
    return _NOT_VERBATIM.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8")), value)


def _escape_char(ch: str) -> str:
    if ch in _SPECIAL:
        return _SPECIAL[ch]
    if ord(ch) < 128:
        return ch
    if ch in _LETTERS:
        return _LETTERS[ch]
    if ch in _SYMBOLS:
        return _SYMBOLS[ch]
    decomposed = unicodedata.normalize("NFD", ch)
    base, marks = decomposed[0], decomposed[1:]
    if marks and base.isascii() and base.isalpha() and all(m in _ACCENTS for m in marks):
        out = r"\i" if base == "i" else base
        for mark in marks:
            command = _ACCENTS[mark]
            out = f"\\{command}{{{out}}}" if command.isalpha() else f"\\{command}{out}"
        return "{" + out + "}"
    if unicodedata.category(ch)[0] in "CZ":
        return " "  # control characters and odd spaces
    return ch  # kept as UTF-8 (CJK, rare symbols)


_ASCII_SPECIALS = str.maketrans({ch: latex for ch, latex in _SPECIAL.items()})


def latex_escape(text: str) -> str:
    """Plain text -> a BibTeX field value that shows the same text (braces balanced, specials escaped)."""
    return _escape_normalised(" ".join(unicodedata.normalize("NFC", plain(text)).split()))


def _escape_normalised(text: str) -> str:
    if text.isascii():  # fast path: only the specials change, and '--' must not become a dash
        escaped = text.translate(_ASCII_SPECIALS)
        return escaped.replace("--", "-{}-").replace("--", "-{}-") if "--" in escaped else escaped
    return _join(_escape_char(ch) for ch in text)


def _join(pieces) -> str:
    """Concatenate escaped pieces; two hyphens that meet are kept apart ('-{}-') so TeX does not read a dash."""
    out: list[str] = []
    for piece in pieces:
        if out and out[-1].endswith("-") and piece.startswith("-"):
            out.append("{}")
        out.append(piece)
    return "".join(out)


_TOKEN = re.compile(r"(\s+|[-/:])")


def _needs_protection(word: str) -> bool:
    letters = [c for c in word if c.isalpha()]
    return any(c.isupper() for c in letters[1:])


def latex_title(title: str) -> str:
    """A title as a field value: escaped, with acronyms and CamelCase words protected by braces."""
    title = " ".join(unicodedata.normalize("NFC", plain(title)).split())
    out = []
    for token in _TOKEN.split(title):
        if not token:
            continue
        escaped = _escape_normalised(token)
        out.append("{" + escaped + "}" if _needs_protection(token) else escaped)
    return _join(out)


_SPECIAL_BACK = {v: k for k, v in _SPECIAL.items()}
_LETTERS_BACK = {v: k for k, v in _LETTERS.items()}
_SYMBOLS_BACK = {v: k for k, v in _SYMBOLS.items() if not v.startswith("-")}
# An accent command and its letter: \'e, \'{e}, {\'e}, \v{c}, \'\i, and nested ones (\~{\^e}) after a first pass.
_ACCENT_COMMAND = re.compile(
    r"\\(?P<cmd>[`'^~=.\"]|[uvHckdr](?=\{))\s*(?:\{(?P<braced>\\i|[^\W\d_])\}|(?P<bare>\\i(?![A-Za-z])|[^\W\d_]))"
)


def latex_decode(value: str) -> str:
    """LaTeX -> plain text: the exact inverse of :func:`latex_escape` and :func:`latex_title` on whitespace-normalised
    text, and a best effort on hand-written BibTeX (used to read users' .bib files)."""
    text = value

    def accent(m: re.Match) -> str:
        base = m.group("braced") or m.group("bare")
        base = "i" if base == "\\i" else base
        return unicodedata.normalize("NFC", base + _ACCENT_LETTER[m.group("cmd")])

    while True:  # innermost accents first; a decoded letter may carry a further accent
        new = _ACCENT_COMMAND.sub(accent, text)
        new = re.sub(r"(?<!\\)\{([^\W\d_])\}", r"\1", new) if new != text else new
        if new == text:
            break
        text = new
    for latex, ch in sorted({**_SYMBOLS_BACK, **_LETTERS_BACK}.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(latex, ch)
    out, i = [], 0
    specials = sorted(_SPECIAL_BACK, key=len, reverse=True)
    while i < len(text):
        for latex in specials:
            if text.startswith(latex, i):
                out.append(_SPECIAL_BACK[latex])
                i += len(latex)
                break
        else:
            if text.startswith("---", i):
                out.append("\u2014")
                i += 3
            elif text.startswith("--", i):
                out.append("\u2013")
                i += 2
            else:
                if text[i] not in "{}":  # grouping braces carry no text
                    out.append(text[i])
                i += 1
    return "".join(out)


# ------------------------------------------------------------------------------------------------ entries
_PARTICLES = frozenset("von van der den de la le du da di dos das del della ten ter zu".split())


def bib_author(name: str) -> str:
    """'Given Family' -> 'Family, Given' (escaped); a single name stays as it is."""
    name = " ".join(name.split())
    if "," in name:
        family, given = (part.strip() for part in name.split(",", 1))
    else:
        words = name.split()
        start = len(words) - 1
        while start > 1 and words[start - 1] in _PARTICLES:  # 'Jean de la Fontaine' -> 'de la Fontaine'
            start -= 1
        family, given = " ".join(words[start:]), " ".join(words[:start])
    family, given = latex_escape(family), latex_escape(given)
    return f"{family}, {given}" if given else "{" + family + "}"


def _venue_fields(paper: Paper, taxonomy: Taxonomy) -> tuple[str, dict[str, str]]:
    parsed = None if paper.is_preprint else taxonomy.parse_venue(paper.venue)
    if parsed is None:
        if paper.arxiv:
            return "article", {"journal": f"arXiv preprint arXiv:{paper.arxiv}"}
        return "misc", {}
    venue, _year, track = parsed
    name = venue.name
    if track == "Findings":
        name = f"Findings of the {name}"
    elif track == "Workshop":
        name = f"{name} Workshops"
    if venue.kind == "journal":
        return "article", {"journal": latex_escape(name)}
    return "inproceedings", {"booktitle": latex_escape(name)}


def paper_entry(paper: Paper, key: str, taxonomy: Taxonomy) -> Entry:
    """One paper as a bibtexparser Entry (raw field values, without enclosing braces)."""
    kind, fields = _venue_fields(paper, taxonomy)
    if paper.authors:
        names = [bib_author(a) for a in paper.authors]
        if paper.authors_status == "truncated":
            names.append("others")
        fields["author"] = " and ".join(names)
    fields["title"] = latex_title(paper.title)
    fields["year"] = str(paper.year)
    if paper.doi:
        fields["doi"] = verbatim(paper.doi)
    if paper.arxiv:
        fields["eprint"] = paper.arxiv
        fields["archiveprefix"] = "arXiv"
        if paper.primary_class:
            fields["primaryclass"] = paper.primary_class
    url = paper.paper_url or (f"https://arxiv.org/abs/{paper.arxiv}" if paper.arxiv else None)
    if url:
        fields["url"] = verbatim(url)
    ordered = [Field(FIELD_NAMES.get(name, name), fields[name]) for name in FIELD_ORDER if name in fields]
    return Entry(kind, key, ordered)


def _format() -> bibtexparser.BibtexFormat:
    fmt = bibtexparser.BibtexFormat()
    fmt.indent = "  "
    fmt.value_column = 16
    fmt.block_separator = "\n"
    fmt.trailing_comma = True
    return fmt


def render_entries(entries: Iterable[Entry]) -> str:
    """Entries in the fixed format (values enclosed in braces here, so bibtexparser's copying middlewares are not
    needed)."""
    library = Library()
    for entry in entries:
        fields = [Field(f.key, "{" + f.value + "}") for f in entry.fields]
        library.add(Entry(entry.entry_type, entry.key, fields))
    return bibtexparser.write_string(library, unparse_stack=[], bibtex_format=_format())


def catalogue_keys(papers: Mapping[str, Paper] | Iterable[Paper]) -> dict[str, str]:
    """The citation key of every entry (its ``bibtex_key`` when set, else assigned)."""
    items = papers.values() if isinstance(papers, Mapping) else papers
    return assign_keys(items)


BIB_HEADER = (
    "% The Efficient LVLM Inference Atlas: every paper of the catalogue.\n"
    "% Generated by `python -m tools bib` from papers/*.yaml; do not edit by hand.\n\n"
)


def render_bib(
    papers: Mapping[str, Paper],
    taxonomy: Taxonomy,
    keys: dict[str, str] | None = None,
    rendered: Mapping[str, str] | None = None,
) -> str:
    """The whole catalogue as one .bib, entries ordered by citation key. ``rendered`` (paper id -> the text of
    :func:`render_one`) reuses entries already rendered for the site."""
    keys = keys or catalogue_keys(papers)
    order = sorted(keys, key=lambda p: keys[p])
    texts = [
        rendered[pid] if rendered and pid in rendered else render_one(papers[pid], keys[pid], taxonomy) for pid in order
    ]
    return BIB_HEADER + "\n".join(texts)


def render_one(paper: Paper, key: str, taxonomy: Taxonomy) -> str:
    """The BibTeX entry of one paper."""
    return render_entries([paper_entry(paper, key, taxonomy)])


# ------------------------------------------------------------------------------------------------ reading users' .bib
@dataclass
class BibCheck:
    """What checking a .bib file against the catalogue found."""

    found: dict[str, str] = field(default_factory=dict)  # user's key -> catalogue id
    missing: list[tuple[str, str]] = field(default_factory=list)  # (user's key, title) not in the catalogue
    failed_blocks: int = 0
    how: dict[str, str] = field(default_factory=dict)  # user's key -> what matched (arxiv, doi, title, key)


_ARXIV_IN = re.compile(r"(\d{4}\.\d{4,5})(?:v\d+)?")


def check_bib(text: str, papers: Mapping[str, Paper], keys: dict[str, str] | None = None) -> BibCheck:
    """Which entries of a user's .bib the catalogue has (by arXiv id, DOI, normalised title, then citation key)."""
    keys = keys or catalogue_keys(papers)
    by_arxiv = {p.arxiv: pid for pid, p in papers.items() if p.arxiv}
    by_doi = {p.doi.lower(): pid for pid, p in papers.items() if p.doi}
    by_title = {normalise_title(p.title): pid for pid, p in papers.items()}
    by_key = {key: pid for pid, key in keys.items()}
    library = bibtexparser.parse_string(text)
    result = BibCheck(failed_blocks=len(library.failed_blocks))
    for entry in library.entries:
        values = {f.key.lower(): str(f.value) for f in entry.fields}
        title = latex_decode(values.get("title", ""))
        arxiv_ids = []
        for name in ("eprint", "journal", "url", "note", "arxiv"):
            m = _ARXIV_IN.search(values.get(name, ""))
            if m:
                arxiv_ids.append(m.group(1))
        candidates = [("arxiv", by_arxiv.get(a)) for a in arxiv_ids]
        candidates.append(("doi", by_doi.get(latex_decode(values.get("doi", "")).strip().lower())))
        candidates.append(("title", by_title.get(normalise_title(title)) if title else None))
        candidates.append(("key", by_key.get(entry.key)))
        match = next(((how, pid) for how, pid in candidates if pid), None)
        if match:
            result.found[entry.key] = match[1]
            result.how[entry.key] = match[0]
        else:
            result.missing.append((entry.key, title))
    return result
