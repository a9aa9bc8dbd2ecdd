"""The catalogue indexed for the website: papers by stage, axis, cell and technique; page paths; related papers."""
from __future__ import annotations

import datetime as dt
import heapq
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Mapping

from tools.schema import ARXIV_NEW, Paper
from tools.taxonomy import Taxonomy

RELATED_LIMIT = 10
NEWEST_LIMIT = 12


def cell_slug(cell: str) -> str:
    return cell.replace(".", "-")


# Page paths, relative to the docs folder (the Markdown source; mkdocs turns x.md into x.html).
def paper_page(pid: str) -> str:
    return f"papers/{pid}.md"


def cell_page(cell: str) -> str:
    return f"cells/{cell_slug(cell)}.md"


def stage_page(stage: str) -> str:
    return f"stages/{stage}.md"


def axis_page(axis: str) -> str:
    return f"axes/{axis}.md"


def technique_page(technique: str) -> str:
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


def display_name(paper: Paper) -> str:
    return paper.short_name or paper.title


def short_authors(paper: Paper, limit: int = 3) -> str:
    if not paper.authors:
        return "authors unknown"
    names = paper.authors[:limit]
    more = len(paper.authors) > limit or paper.authors_status == "truncated"
    return ", ".join(names) + (" et al." if more else "")


@dataclass
class SiteModel:
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
        return {pid: i for i, pid in enumerate(self.ordered_ids)}

    @cached_property
    def cell_sets(self) -> dict[str, frozenset[str]]:
        return {pid: frozenset(paper.placement.cells) for pid, paper in self.papers.items()}

    def newest(self, limit: int = NEWEST_LIMIT) -> list[str]:
        return self.ordered_ids[:limit]

    def related(self, pid: str, limit: int = RELATED_LIMIT) -> list[str]:
        """Papers sharing a technique: most shared techniques first, then shared cells, then newest.

        The technique lists are walked together in site order (newest first), so each candidate's count of shared
        techniques is known when it is reached; the walk stops once ``limit`` papers share every technique and every
        cell (nothing later can outrank them), which keeps this near-constant per paper at thousands of papers."""
        techniques = set(self.papers[pid].placement.techniques)
        cells = self.cell_sets[pid]
        cell_sets, rank = self.cell_sets, self.rank
        best = (len(techniques), len(cells))
        tiers: dict[tuple[int, int], list[str]] = defaultdict(list)  # (shared techniques, shared cells) -> ids
        merged = heapq.merge(*(self.by_technique[t] for t in techniques), key=rank.__getitem__)
        for other, group in itertools.groupby(merged):
            if other == pid:
                continue
            tier = (sum(1 for _ in group), len(cells & cell_sets[other]))
            tiers[tier].append(other)
            if tier == best and len(tiers[tier]) == limit:
                break
        ranked = [other for tier in sorted(tiers, reverse=True) for other in tiers[tier]]
        return ranked[:limit]

    def _related_by_sorting(self, pid: str, limit: int = RELATED_LIMIT) -> list[str]:
        """The plain definition of :meth:`related` (scores every candidate, then sorts), kept for its test."""
        techniques = set(self.papers[pid].placement.techniques)
        cells = self.cell_sets[pid]
        scores: dict[str, int] = defaultdict(int)
        for technique in techniques:
            for other in self.by_technique[technique]:
                if other != pid:
                    scores[other] += 1
        return sorted(scores, key=lambda o: (-scores[o], -len(cells & self.cell_sets[o]), self.rank[o]))[:limit]

    def cell_count(self, cell: str) -> int:
        return len(self.by_cell.get(cell, []))
