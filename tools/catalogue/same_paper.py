"""Is this the same paper under another title? Duplicate detection for ``validate``, ``new``, ``add``, ``triage`` and
``discover``.

Two descriptions of papers (:class:`Described`: title, and where known authors, arXiv id and DOI) are the same paper
when

* they share an arXiv id or a DOI; or
* their titles agree (below) and nothing rules it out.

Ruled out: different method names ("FastV: ..." vs "SparseVLM: ...", "EAGLE" vs "EAGLE-2", "SmoothQuant" vs
"SmoothQuant+"), different version numbers ("Qwen2.5-VL Technical Report" vs "Qwen3-VL Technical Report"), or, when
both author lists are known and the titles are not word for word the same, lists that share no person (initial and
family name: a shared "Liu" or "Li" alone proves nothing).

Titles agree (words from :mod:`tools.catalogue.titles`, so case, punctuation, plurals and abbreviations do not count)
when

* the words are the same, in any order, or the bodies are after a method name is dropped ("FlashAttention: Fast
  and Memory-Efficient ..." and "Fast and Memory-Efficient ..."); or, when they also share a rare word (or eight
  words; see :class:`Vocabulary`: "Speculative Decoding for Multimodal LLMs" alone says little),
* they differ by a word or two: fuzzy ratio of the sorted words >= 90, of the bodies' sorted words >= 90, or of the
  bodies written without spaces >= 92, with at most two meaningful words (or a fifth of them) not in both; or
* one is a shortened form of the other: all its meaningful words (three or more) occur in the other, and it keeps
  the other's method name, or begins the other title, or shares two rare words with it, or (neither naming a method
  the other lacks) keeps 75 % of its words; or
* one title is only the other's method name ("NexusQuant"); or
* both name the same method and, when both author lists are known, share two authors, else have 80 % of their
  words in common (method names are reused: two FastVLMs, two SpecVLMs).

:func:`duplicate_pairs` checks a whole collection: a pair is scored only when one title contains one of the other's
rarest words (or its method name), whichever title comes first, so the result never depends on ids or file names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from rapidfuzz import fuzz

from tools.catalogue.citekeys import STOPWORDS, ascii_fold, family_name
from tools.catalogue.titles import TitleParts

RARE_WORDS = 4  # how many of a title's rarest words select the titles it is compared with


@dataclass(frozen=True)
class Described:
    """A paper as the duplicate check sees it; ``key`` names it in the results (an id, or a label)."""

    key: str
    title: str
    authors: tuple[str, ...] = ()
    arxiv: str | None = None
    doi: str | None = None
    parts: TitleParts = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", TitleParts(self.title))

    @classmethod
    def of(cls, paper, key: str | None = None) -> "Described":
        """A catalogue entry (anything with title, authors, arxiv and doi)."""
        return cls(key or paper.id, paper.title, tuple(paper.authors), paper.arxiv, paper.doi)


@dataclass(frozen=True)
class Match:
    """Two entries that describe the same paper, and the rule that matched them."""

    a: str
    b: str
    why: str


def _people(authors: Iterable[str]) -> set[str]:
    """People as first initial + family name ("Hana Kobayashi" and "H. Kobayashi" are one person; "Huan Li" and
    "Dong Li" are two: a shared family name proves little)."""
    out = set()
    for author in authors:
        family = re.sub(r"[^a-z]", "", ascii_fold(family_name(author)).lower())
        given = ascii_fold(author.split(",", 1)[1] if "," in author else author).strip()
        initial = given[:1].lower() if given else ""
        if family:
            out.add(f"{initial} {family}")
    return out


def _names_differ(a: TitleParts, b: TitleParts) -> bool:
    """Both titles name a method and the names are different methods (or versions of one)."""
    if not a.name or not b.name or a.name == b.name:
        return False
    digits = lambda name: re.sub(r"[^0-9]", "", name)  # noqa: E731
    if digits(a.name) != digits(b.name) or a.name.rstrip("+#") == b.name.rstrip("+#"):
        return True  # EAGLE vs EAGLE-2, FlashAttention vs FlashAttention-2, SmoothQuant vs SmoothQuant+, QuIP vs QuIP#
    close = a.name in b.name or b.name in a.name or fuzz.ratio(a.name, b.name) >= 75  # SpargeAttn / SpargeAttention
    return not close


def _numbers_differ(a: TitleParts, b: TitleParts) -> bool:
    """Version numbers or settings that contradict: neither title's set contains the other's."""
    return bool(a.numbers) and bool(b.numbers) and not (a.numbers <= b.numbers or b.numbers <= a.numbers)


def _shortened(short: TitleParts, long: TitleParts, vocabulary: Vocabulary | None) -> bool:
    """The short title's words all occur in the long one, and: it keeps the method name, or begins the long title,
    or shares two rare words with it, or (when neither names a method the other lacks) keeps 75 % of its words."""
    if len(short.content_words) < 3 or not short.content_words <= set(long.words):
        return False
    if short.name and short.name == long.name:
        return True
    if long.compact_body.startswith(short.compact_body) and len(short.compact_body) >= 20:
        return True
    if vocabulary is not None and sum(vocabulary.is_rare(w) for w in short.content_words) >= 2:
        return True
    for one, other in ((short, long), (long, short)):
        if one.name and not other.name and one.name not in other.words:
            return False  # one names a method the other never mentions ("VScan: Rethinking ..." / "Rethinking ...")
    return len(short.content_words) >= 0.75 * len(long.content_words) and len(short.content_words) >= 4


class Vocabulary:
    """How many titles of a collection contain each word. A word two titles share is rare when at most
    ``max(2, N / 150)`` other titles of the N contain it: titles that share only common words ("Efficient",
    "Speculative Decoding", "Large Language Models") are not the same paper for that."""

    def __init__(self, titles: Iterable[TitleParts]):
        self.counts: dict[str, int] = {}
        self.size = 0
        for parts in titles:
            self.size += 1
            for word in _blocking_words(parts):
                self.counts[word] = self.counts.get(word, 0) + 1

    def is_rare(self, word: str) -> bool:
        """Few titles besides the two compared contain the word (or it is new to the collection)."""
        return self.counts.get(word, 0) - 2 <= max(2, self.size // 150)


SPECIFIC_OVERLAP = 8  # titles sharing this many words (no stop words) are specific without a rare word


def _specific_overlap(a: TitleParts, b: TitleParts, vocabulary: Vocabulary | None) -> bool:
    """The titles share a rare word, or many words."""
    if vocabulary is None:
        return True
    shared = (_blocking_words(a) & _blocking_words(b)) - STOPWORDS
    return len(shared) >= SPECIFIC_OVERLAP or any(vocabulary.is_rare(word) for word in shared)


def titles_agree(
    a: TitleParts, b: TitleParts, shared_authors: int | None, vocabulary: Vocabulary | None = None
) -> str | None:
    """Why two titles are spellings of one paper's title, or None (method names and numbers are checked first).

    ``shared_authors``: how many people both author lists name, or None when either list is unknown. Titles that
    are not word for word the same must share a rare word of ``vocabulary`` (every word is rare without one)."""
    if a.words and sorted(a.words) == sorted(b.words):
        return "the same title"
    if a.body_words and sorted(a.body_words) == sorted(b.body_words):
        return "the same title apart from the method name"
    if not _specific_overlap(a, b, vocabulary):
        return None
    sort_score = fuzz.ratio(" ".join(sorted(a.words)), " ".join(sorted(b.words)))
    body_score = max(fuzz.ratio(a.sorted_body, b.sorted_body), fuzz.ratio(a.compact_body, b.compact_body) - 2)
    differing = a.content_words ^ b.content_words
    few_words_differ = len(differing) <= max(2, 0.2 * len(a.content_words | b.content_words))
    if max(sort_score, body_score) >= 90 and min(len(a.body_words), len(b.body_words)) >= 3 and few_words_differ:
        return f"nearly the same title (similarity {max(sort_score, body_score):.0f})"
    short, long = sorted((a, b), key=lambda p: (len(p.content_words), len(p.compact_body)))
    if _shortened(short, long, vocabulary):
        return "a shortened form of the title"
    if short.is_only_a_name and short.compact == long.name:
        return "the method name alone"
    if a.name and a.name == b.name:  # names are reused (two FastVLMs, two SpecVLMs): more evidence is needed
        if shared_authors is not None:
            return "the same method name and authors" if shared_authors >= 2 else None
        overlap = fuzz.token_set_ratio(a.body, b.body)
        if overlap >= 80:
            return f"the same method name and similar words ({overlap:.0f})"
    return None


def same_paper(a: Described, b: Described, vocabulary: Vocabulary | None = None) -> str | None:
    """Why ``a`` and ``b`` describe the same paper, or None (the rules are in the module docstring; ``vocabulary``
    is the collection the two belong to, see :class:`Vocabulary`)."""
    if a.arxiv and a.arxiv == b.arxiv:
        return f"the same arXiv id {a.arxiv}"
    if a.doi and b.doi and a.doi.lower() == b.doi.lower():
        return f"the same DOI {a.doi}"
    pa, pb = a.parts, b.parts
    if _names_differ(pa, pb) or _numbers_differ(pa, pb):
        return None
    shared = None
    if a.authors and b.authors:
        shared = len(_people(a.authors) & _people(b.authors))
        if not shared and sorted(pa.words) != sorted(pb.words):
            return None
    return titles_agree(pa, pb, shared, vocabulary)


def _blocking_words(parts: TitleParts) -> set[str]:
    words = set(parts.content_words) | set(parts.words)
    if parts.name:
        words.add(parts.name)
    return words


def duplicate_pairs(papers: Iterable[Described], involving: set[str] | None = None) -> list[Match]:
    """Every pair of ``papers`` that :func:`same_paper` judges to be one paper (only pairs with a key in
    ``involving``, when given), sorted by key.

    A pair is scored when one title contains one of the other's ``RARE_WORDS`` rarest words (by how many titles of
    the collection contain them) or its method name; both directions are tried, and pairs sharing an arXiv id or a
    DOI are always scored."""
    items = sorted(papers, key=lambda p: p.key)
    vocabulary = Vocabulary(p.parts for p in items)
    postings: dict[str, list[int]] = {}
    words = [_blocking_words(p.parts) for p in items]
    for i, ws in enumerate(words):
        for w in ws:
            postings.setdefault(w, []).append(i)
    candidates: set[tuple[int, int]] = set()
    for i, p in enumerate(items):
        rare = sorted(p.parts.content_words or words[i], key=lambda w: (len(postings[w]), w))[:RARE_WORDS]
        if p.parts.name:
            rare.append(p.parts.name)
        for w in rare:
            for j in postings.get(w, ()):
                if j != i:
                    candidates.add((min(i, j), max(i, j)))
    for ident in ("arxiv", "doi"):
        seen: dict[str, int] = {}
        for i, p in enumerate(items):
            value = getattr(p, ident)
            if value:
                value = value.lower()
                if value in seen:
                    candidates.add((seen[value], i))
                else:
                    seen[value] = i
    out = []
    for i, j in sorted(candidates):
        if involving is not None and items[i].key not in involving and items[j].key not in involving:
            continue
        why = same_paper(items[i], items[j], vocabulary)
        if why:
            out.append(Match(items[i].key, items[j].key, why))
    return out


def matches_for(new: Described, existing: Iterable[Described]) -> list[Match]:
    """The entries of ``existing`` that ``new`` may duplicate (``Match.a`` is the new paper's key)."""
    found = duplicate_pairs([new, *existing], involving={new.key})
    return [Match(new.key, m.b if m.a == new.key else m.a, m.why) for m in found if new.key in (m.a, m.b)]
