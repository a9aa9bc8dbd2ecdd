"""Citation keys, Google-Scholar style: first author's family name + year of version 1 + first significant title
word, e.g. ``chen2024image``. Collisions get deterministic suffixes (b, c, ...) in order of first appearance (date of
version 1, then arXiv id, then paper id), so adding a newer paper never changes an older paper's key. One place,
used by the validator and the BibTeX writer alike.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Protocol

STOPWORDS = frozenset(
    "a an the on of for in to and with via by from at as is are be your you we our do does not towards toward "
    "into over under when what why how its it this that".split()
)


class _Keyed(Protocol):
    id: str
    authors: list[str]
    title: str
    bibtex_key: str | None

    @property
    def first_version_year(self) -> int: ...


def ascii_fold(text: str) -> str:
    """'Łukasz Müller' -> 'Lukasz Muller' (letters that NFKD cannot split are mapped by hand)."""
    special = {
        "ł": "l",
        "Ł": "L",
        "ø": "o",
        "Ø": "O",
        "đ": "d",
        "Đ": "D",
        "ß": "ss",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ı": "i",
    }
    text = "".join(special.get(ch, ch) for ch in text)
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def family_name(author: str) -> str:
    """The family name of 'Given Family' (or of 'Family, Given')."""
    author = author.strip()
    if "," in author:
        return author.split(",", 1)[0].strip()
    parts = author.split()
    return parts[-1] if parts else ""


def base_key(authors: list[str], year: int, title: str) -> str:
    """The citation key before collisions are resolved: first author's family name, year, first significant title
    word."""
    name = re.sub(r"[^a-z]", "", ascii_fold(family_name(authors[0])).lower()) if authors else ""
    words = [re.sub(r"[^a-z0-9]", "", w) for w in ascii_fold(title).lower().replace("-", " ").split()]
    word = next((w for w in words if w and w not in STOPWORDS), "")
    return f"{name or 'anonymous'}{year}{word}"


def _first_appearance(paper) -> tuple:
    first = getattr(paper, "first_version", None)
    return (
        first.isoformat() if first else f"{paper.first_version_year}-99",
        getattr(paper, "arxiv", None) or "~",
        paper.id,
    )


def assign_keys(papers: Iterable[_Keyed]) -> dict[str, str]:
    """paper id -> citation key, unique across the catalogue (explicit ``bibtex_key`` values win)."""
    papers = sorted(papers, key=_first_appearance)
    taken: set[str] = {p.bibtex_key for p in papers if p.bibtex_key}
    keys: dict[str, str] = {p.id: p.bibtex_key for p in papers if p.bibtex_key}
    for paper in papers:
        if paper.bibtex_key:
            continue
        base = base_key(paper.authors, paper.first_version_year, paper.title)
        key, n = base, 1
        while key in taken:
            key = f"{base}{chr(ord('a') + n)}" if n < 26 else f"{base}{n}"
            n += 1
        taken.add(key)
        keys[paper.id] = key
    return keys
