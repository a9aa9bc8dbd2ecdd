"""The catalogue indexed for the website: papers by stage, axis, cell and technique; page paths; related papers."""

from __future__ import annotations

import datetime as dt
import heapq
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Mapping

from tools.catalogue.schema import ARXIV_NEW, Paper
from tools.catalogue.taxonomy import Taxonomy

RELATED_LIMIT = 10
NEWEST_LIMIT = 12
# Related papers: how much shared techniques, shared modalities and similar wording (each 0..1) count.
SIMILARITY_WEIGHTS = {"techniques": 1.0, "modality": 0.5, "text": 2.0}
COMMON_WORD_PAPERS = 30  # a word in more papers than this is not used to find related papers
WORDS_PER_PAPER = 10  # a paper's most distinctive words, the ones compared
_WORD = re.compile(r"[a-z0-9][a-z0-9-]*[a-z0-9]|[a-z0-9]{2,}")
_STOP_WORDS = frozenset(
    """a an and are as at be by can for from in into is it its of on or our over than that the their
this to via we which while with without""".split()
)


def cell_slug(cell: str) -> str:
    """A cell id as a URL segment."""
    return cell.replace(".", "-")


# Page paths, relative to the docs folder (the Markdown source; mkdocs turns x.md into x.html).
def paper_page(pid: str) -> str:
    """The page of a paper."""
    return f"papers/{pid}.md"


def cell_page(cell: str) -> str:
    """The page of a cell."""
    return f"cells/{cell_slug(cell)}.md"


def stage_page(stage: str) -> str:
    """The page of a stage."""
    return f"stages/{stage}.md"


def axis_page(axis: str) -> str:
    """The page of an axis."""
    return f"axes/{axis}.md"


def technique_page(technique: str) -> str:
    """The page of a technique."""
    return f"techniques/{technique}.md"


def first_version_date(paper: Paper) -> dt.date | None:
    """The date of version 1 when known: first_version, else the month encoded in a new-style arXiv id."""
    if paper.first_version is not None:
        return paper.first_version
    if paper.arxiv and ARXIV_NEW.match(paper.arxiv):
        year, month = 2000 + int(paper.arxiv[:2]), int(paper.arxiv[2:4])
        if 1 <= month <= 12:
            return dt.date(year, month, 1)
    return None


def _paper_text(paper: Paper) -> str:
    return " ".join(filter(None, (paper.short_name, paper.title, paper.summary)))


def _jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def display_name(paper: Paper) -> str:
    """The name a paper is listed under (its short name, else its title)."""
    return paper.short_name or paper.title


def short_authors(paper: Paper, limit: int = 3) -> str:
    """The first ``limit`` authors, then "et al."."""
    if not paper.authors:
        return "authors unknown"
    names = paper.authors[:limit]
    more = len(paper.authors) > limit or paper.authors_status == "truncated"
    return ", ".join(names) + (" et al." if more else "")


@dataclass
class SiteModel:
    """The catalogue as the site reads it: papers ordered, grouped by stage, axis, cell and technique, and related
    papers."""

    papers: Mapping[str, Paper]
    taxonomy: Taxonomy
    keys: dict[str, str]  # paper id -> citation key
    by_cell: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    by_technique: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    by_stage: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    by_axis: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    by_frontier: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        for pid in self.ordered_ids:
            paper = self.papers[pid]
            stages, axes = set(), set()
            for cell in paper.placement.cells:
                self.by_cell[cell].append(pid)
                stage, axis = cell.split(".", 1)
                stages.add(stage)
                axes.add(axis)
            for stage in sorted(stages):
                self.by_stage[stage].append(pid)
            for axis in sorted(axes):
                self.by_axis[axis].append(pid)
            for technique in paper.placement.techniques:
                self.by_technique[technique].append(pid)
            for frontier in paper.frontiers:
                self.by_frontier[frontier].append(pid)

    @cached_property
    def ordered_ids(self) -> list[str]:
        """Newest first (date of version 1, then year), then by id: the order of every paper list on the site."""

        def sort_key(pid: str):
            paper = self.papers[pid]
            date = first_version_date(paper) or dt.date(paper.year, 1, 1)
            return (-date.toordinal(), pid)

        return sorted(self.papers, key=sort_key)

    @cached_property
    def rank(self) -> dict[str, int]:
        """Each paper's position in the site's order."""
        return {pid: i for i, pid in enumerate(self.ordered_ids)}

    def newest(self, limit: int = NEWEST_LIMIT) -> list[str]:
        """The most recent papers by first version."""
        return self.ordered_ids[:limit]

    # ------------------------------------------------------------------ related papers
    @cached_property
    def _words(self) -> dict[str, dict[str, float]]:
        """Each paper's most distinctive words (short name, title, summary; at most ``WORDS_PER_PAPER``, by tf-idf)
        as a unit-length vector. A word used by more than ``COMMON_WORD_PAPERS`` papers says little about what a
        paper is about and is left out; both limits bound the work per paper (each word's list of papers is at most
        that long)."""
        counts = {
            pid: Counter(w for w in _WORD.findall(_paper_text(p).lower()) if w not in _STOP_WORDS)
            for pid, p in self.papers.items()
        }
        df = Counter(w for c in counts.values() for w in c)
        n = max(len(self.papers), 1)
        vectors = {}
        for pid, c in counts.items():
            v = {w: tf * math.log(1 + n / df[w]) for w, tf in c.items() if df[w] <= COMMON_WORD_PAPERS}
            if len(v) > WORDS_PER_PAPER:
                v = dict(heapq.nlargest(WORDS_PER_PAPER, v.items(), key=lambda item: (item[1], item[0])))
            norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
            vectors[pid] = {w: x / norm for w, x in v.items()}
        return vectors

    @cached_property
    def _papers_by_word(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = defaultdict(list)
        for pid, vector in self._words.items():
            for word in vector:
                index[word].append(pid)
        return index

    def text_similarity(self, pid: str) -> dict[str, float]:
        """Cosine similarity of this paper's words with every paper sharing at least one of them."""
        words, index = self._words, self._papers_by_word
        out: dict[str, float] = defaultdict(float)
        for word, weight in words[pid].items():
            for other in index[word]:
                if other != pid:
                    out[other] += weight * words[other][word]
        return out

    @cached_property
    def _signatures(self) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
        """Each paper's (techniques, modalities), the part of :meth:`similarity` that is not wording."""
        shared: dict = {}  # one object per distinct signature (the memo of _placement_score keys on identity)
        return {
            pid: shared.setdefault(s, s)
            for pid, s in (
                (pid, (frozenset(p.placement.techniques), frozenset(p.modality))) for pid, p in self.papers.items()
            )
        }

    @cached_property
    def _papers_by_signature(self) -> dict[tuple[frozenset[str], frozenset[str]], list[str]]:
        groups: dict[tuple[frozenset[str], frozenset[str]], list[str]] = defaultdict(list)
        for pid in self.ordered_ids:
            groups[self._signatures[pid]].append(pid)
        return groups

    @cached_property
    def _signatures_by_technique(self) -> dict[str, list[tuple[frozenset[str], frozenset[str]]]]:
        index: dict[str, list] = defaultdict(list)
        for signature in self._papers_by_signature:
            for technique in signature[0]:
                index[technique].append(signature)
        return index

    @cached_property
    def _placement_scores(self) -> dict:
        return {}

    def _placement_score(self, a: tuple[frozenset, frozenset], b: tuple[frozenset, frozenset]) -> float:
        """The techniques-and-modalities part of :meth:`similarity`, memoised per pair of signatures (far fewer
        than pairs of papers)."""
        key = (id(a), id(b))  # signatures are shared objects (one per distinct pair, see _signatures)
        score = self._placement_scores.get(key)
        if score is None:
            score = self._placement_scores[key] = SIMILARITY_WEIGHTS["techniques"] * _jaccard(
                a[0], b[0]
            ) + SIMILARITY_WEIGHTS["modality"] * _jaccard(a[1], b[1])
        return score

    def similarity(self, pid: str, other: str, text: float) -> float:
        """How related two papers are: shared techniques and modalities (Jaccard overlaps) and the cosine similarity
        of their words (``text``, from :meth:`text_similarity`), weighted by :data:`SIMILARITY_WEIGHTS`."""
        signatures = self._signatures
        return self._placement_score(signatures[pid], signatures[other]) + SIMILARITY_WEIGHTS["text"] * text

    def related(self, pid: str, limit: int = RELATED_LIMIT) -> list[str]:
        """The ``limit`` papers most similar to this one (:meth:`similarity`) among those sharing a technique or a
        distinctive word; ties go to the newer paper. Same result as :meth:`_related_by_scoring_all`.

        Papers sharing a word are scored one by one (a bounded number: see :data:`COMMON_WORD_PAPERS`). The others
        that share a technique score by their techniques and modalities alone, so they are taken group by group
        (papers with the same techniques and modalities score the same), best group first, each group newest first,
        until ``limit`` are found: the work per paper does not grow with the catalogue."""
        text = self.text_similarity(pid)
        signatures, placement, weight = self._signatures, self._placement_score, SIMILARITY_WEIGHTS["text"]
        mine = signatures[pid]
        scores = {o: placement(mine, signatures[o]) + weight * x for o, x in text.items()}  # = similarity()
        scores.update(self._best_by_placement(pid, text, limit))
        rank = self.rank
        return heapq.nsmallest(limit, (o for o in scores if scores[o] > 0), key=lambda o: (-scores[o], rank[o]))

    def _best_by_placement(self, pid: str, skip, limit: int) -> dict[str, float]:
        """The ``limit`` best papers sharing a technique and not in ``skip``, scored by placement alone."""
        mine = self._signatures[pid]
        levels: dict[float, list[list[str]]] = defaultdict(list)  # score -> the groups scoring it
        for signature in {s for t in mine[0] for s in self._signatures_by_technique[t]}:
            levels[self._placement_score(mine, signature)].append(self._papers_by_signature[signature])
        found: dict[str, float] = {}
        rank = self.rank
        for score in sorted(levels, reverse=True):
            for other in heapq.merge(*levels[score], key=rank.__getitem__):
                if other != pid and other not in skip:
                    found[other] = score
                    if len(found) == limit:
                        return found
        return found

    def _related_by_scoring_all(self, pid: str, limit: int = RELATED_LIMIT) -> list[str]:
        """The plain definition of :meth:`related`: score every paper sharing a technique or a word, then sort."""
        text = self.text_similarity(pid)
        techniques = self._signatures[pid][0]
        scores = {
            o: self.similarity(pid, o, text.get(o, 0.0))
            for o in self.papers
            if o != pid and (o in text or techniques & self._signatures[o][0])
        }
        return sorted((o for o in scores if scores[o] > 0), key=lambda o: (-scores[o], self.rank[o]))[:limit]

    def cell_count(self, cell: str) -> int:
        """Papers in a cell."""
        return len(self.by_cell.get(cell, []))
