"""Where a fact was read: the forms a source may take, copies of arXiv pages, and the paper lists that carry a paper.

A **source** (a ``provenance`` value, a claim's ``source``, a ``disagreements`` source) is a public address:

* an ``https://`` URL of the page the fact was read on, or
* ``owner/repo:path@commit``: a file of a public repository at a commit (an official README, say).

Never a local path, a note, or a paper list as the source of a fact: a list that carries the paper goes into
``listed_in`` (``owner/repo@commit`` or ``owner/repo:path@commit``). Where a page was read on a copy (a mirror of the
arXiv page), the source is the canonical address and ``read_via`` maps it to the copy.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

URL = re.compile(r"^https://[A-Za-z0-9][^\s/?#]*[^\s]*$")
POINTER = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+):(?P<path>[^\s@][^@]*?)@(?P<commit>[0-9a-f]{7,40})$")
LISTING = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?::(?P<path>[^\s@][^@]*?))?@(?P<commit>[0-9a-f]{7,40})$")
ARXIV_ID_IN_TEXT = r"(\d{4}\.\d{4,5}|[a-z-]+(?:\.[A-Z]{2})?/\d{7})"
SOURCE_HELP = (
    "give the https:// address of the page the fact was read on, or owner/repo:path@commit for a repository "
    "file (local paths, notes and paper lists are not sources; a list goes into listed_in)"
)


def is_address(value: str) -> bool:
    """A public address: an https URL or an ``owner/repo:path@commit`` pointer."""
    return bool(URL.match(value) or POINTER.match(value))


def source_problem(value: str) -> str | None:
    """Why ``value`` cannot be a source (None when it can)."""
    if is_address(value):
        return None
    if value.startswith("http://"):
        return f"{_shown(value)} is not a secure address: write https://"
    if re.match(r"^(/|\.{1,2}/|~|[A-Za-z]:\\)", value) or re.search(r"\.(jsonl?|ya?ml|txt|md)(:\d+)?\)?$", value):
        return f"{_shown(value)} is a local path, not a public address: {SOURCE_HELP}"
    return f"{_shown(value)} is not a public address: {SOURCE_HELP}"


def disagreement_source_problem(value: str) -> str | None:
    """A disagreement names who said what: a source, optionally followed by a short note in parentheses without a
    path ("owner/list:README.md@abc1234 (paper link)")."""
    head, _, note = value.partition(" (")
    if note and (not note.endswith(")") or "/" in note or "\\" in note):
        return f"{_shown(value)}: a source may be followed by a short note in parentheses, without paths"
    return source_problem(head)


def listing_problem(value: str) -> str | None:
    """Why a value is not an accepted paper-list pointer (``owner/repo:path@commit``), or None."""
    if LISTING.match(value):
        return None
    return f"{_shown(value)} is not a list at a commit: write owner/repo@commit or owner/repo:path@commit"


def repository_of(value: str) -> str | None:
    """``owner/repo`` of a pointer or listing (lower case), else None."""
    match = LISTING.match(value)
    return match["repo"].lower() if match else None


def canonical_arxiv_address(url: str, arxiv: str | None) -> str | None:
    """``https://arxiv.org/abs/<arxiv>`` when ``url`` is a copy of that paper's arXiv page: another arXiv host or
    rendering (``export.arxiv.org``, ``web3.arxiv.org``, ``ar5iv``, a query string) or a third-party page whose
    address carries the id (alphaxiv, Hugging Face papers, summary sites). None for arXiv's own pages
    (``https://arxiv.org/abs|html|pdf/<id>[vN]``), for DOI links, for pages about other papers, and without an id."""
    if not arxiv or not url.startswith(("http://", "https://")):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket: not an address of a page (reported by the source check)
        return None
    host = parts.netloc.lower()
    own_page = rf"^/(abs|html|pdf)/{re.escape(arxiv)}(v\d+)?(\.pdf)?/?$"
    if url.startswith("https://") and host == "arxiv.org" and re.match(own_page, parts.path) and not parts.query:
        return None
    if host == "doi.org" or host.endswith(".doi.org"):
        return None  # a DOI resolves to the publisher's page, not a copy
    if re.search(rf"(?<![\d.]){re.escape(arxiv)}(?!\d)", url):
        return f"https://arxiv.org/abs/{arxiv}"
    return None


def citation_problems(paper, paper_lists: frozenset[str] = frozenset()) -> list[tuple[tuple, str]]:
    """(location, message) for each source of an entry that must be written differently: a copy of the arXiv page
    cited instead of its canonical address, a paper list (one of ``paper_lists``, ``owner/repo`` in lower case, or
    one the entry names in ``listed_in``) cited as a source, a ``read_via`` entry no fact cites."""
    lists = {repository_of(x) for x in paper.listed_in} | set(paper_lists)
    cited = set(paper.provenance.values()) | {c.source for c in paper.claims}
    out = []
    for name, value in paper.provenance.items():
        canonical = canonical_arxiv_address(value, paper.arxiv)
        if canonical:
            out.append(
                (
                    ("provenance", name),
                    f"{_shown(value)} is a copy of the arXiv page: give {canonical} and record the copy in read_via",
                )
            )
        elif POINTER.match(value) and repository_of(value) in lists:
            out.append((("provenance", name), f"{_shown(value)} is a paper list (see listed_in), not a source"))
    for i, claim in enumerate(paper.claims):
        canonical = canonical_arxiv_address(claim.source, paper.arxiv)
        if canonical:
            out.append(
                (
                    ("claims", i, "source"),
                    f"{_shown(claim.source)} is a copy of the arXiv page: give "
                    f"{canonical} and record the copy in read_via",
                )
            )
    for canonical, copy in paper.read_via.items():
        if canonical not in cited:
            out.append(
                (
                    ("read_via", canonical),
                    f"no fact cites {_shown(canonical)}: a key of read_via is an address "
                    "given in provenance or as a claim's source",
                )
            )
        elif copy == canonical:
            out.append((("read_via", canonical), "maps an address to itself"))
    return out


def _shown(value: str) -> str:
    return repr(value if len(value) <= 90 else value[:87] + "...")
