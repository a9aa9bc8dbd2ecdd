"""The taxonomy (``taxonomy.yaml``): its model, its own consistency rules, and look-ups used everywhere else.

``taxonomy.yaml`` is the single source of truth for stages, axes, cells, techniques, frontiers, modalities, training
regimes, claim metrics, venues, and the mappings from the survey's and the source lists' categories.
"""

from __future__ import annotations

import re
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tools.catalogue.paths import TAXONOMY_PATH, display_path
from tools.catalogue.problems import Problem, ProblemError
from tools.catalogue.yamlio import line_of, load_yaml_with_lines

Id = str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Stage(_Strict):
    """An inference stage (encode, prefill, decode) and its bottleneck."""

    id: Id
    name: str
    bottleneck: str


class Axis(_Strict):
    """An axis of efficiency (density, attention, memory)."""

    id: Id
    name: str
    description: str


class Technique(_Strict):
    """A technique: the cells it may occupy and the keywords placement suggestion matches."""

    id: Id
    name: str
    description: str
    cells: list[str] = Field(min_length=1)
    keywords: list[str] = Field(min_length=1)


class TechniqueGroup(_Strict):
    """Related techniques offered together when browsing (e.g. every KV-cache compression technique)."""

    id: Id
    name: str
    techniques: list[Id] = Field(min_length=2)


class Named(_Strict):
    """An id with a display name (frontiers, modalities, training regimes, placement methods)."""

    id: Id
    name: str
    description: str | None = None


class Metric(_Strict):
    """A claim metric and the units it may use."""

    id: Id
    name: str
    units: list[str] = Field(min_length=1)


class Venue(_Strict):
    """A venue a paper may carry (conference or journal)."""

    id: str
    kind: Literal["conference", "journal"]
    name: str


class Taxonomy(_Strict):
    """The whole of taxonomy.yaml, with look-ups by id."""

    version: int
    survey_repository: str
    paper_lists: list[str] = Field(default_factory=list)
    stages: list[Stage]
    axes: list[Axis]
    cells: dict[str, str]
    techniques: list[Technique]
    technique_groups: list[TechniqueGroup] = []
    frontiers: list[Named]
    modalities: list[Named]
    training_regimes: list[Named]
    placement_methods: list[Named]
    metrics: list[Metric]
    venues: list[Venue]

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, ignored_types=(cached_property,))

    # ------------------------------------------------------------------ look-ups
    @cached_property
    def paper_list_repos(self) -> frozenset[str]:
        """The paper lists' ``owner/repo``, lower case (never a source of facts)."""
        return frozenset(r.lower() for r in [self.survey_repository, *self.paper_lists])

    @cached_property
    def technique_by_id(self) -> dict[str, Technique]:
        """Techniques by id."""
        return {t.id: t for t in self.techniques}

    @cached_property
    def metric_by_id(self) -> dict[str, Metric]:
        """Claim metrics by id."""
        return {m.id: m for m in self.metrics}

    @cached_property
    def venue_by_id(self) -> dict[str, Venue]:
        """Venues by id."""
        return {v.id: v for v in self.venues}

    @cached_property
    def modality_ids(self) -> frozenset[str]:
        """The modality ids."""
        return frozenset(m.id for m in self.modalities)

    @cached_property
    def training_ids(self) -> frozenset[str]:
        """The training-regime ids."""
        return frozenset(r.id for r in self.training_regimes)

    @cached_property
    def frontier_ids(self) -> frozenset[str]:
        """The frontier ids."""
        return frozenset(f.id for f in self.frontiers)

    @cached_property
    def _allowed_cells(self) -> dict[str, frozenset[str]]:
        return {t.id: frozenset(t.cells) for t in self.techniques}

    @cached_property
    def stage_ids(self) -> list[str]:
        """The stage ids, in order."""
        return [s.id for s in self.stages]

    @cached_property
    def axis_ids(self) -> list[str]:
        """The axis ids, in order."""
        return [a.id for a in self.axes]

    @cached_property
    def cell_ids(self) -> list[str]:
        """The cell ids (``<stage>.<axis>``), in order."""
        return [f"{s}.{a}" for s in self.stage_ids for a in self.axis_ids]

    @cached_property
    def _venue_re(self) -> re.Pattern:
        names = "|".join(re.escape(v) for v in sorted(self.venue_by_id, key=len, reverse=True))
        return re.compile(rf"^(?P<name>{names}) (?P<year>(19|20)\d\d)(?: (?P<track>Findings|Workshop))?$")

    def parse_venue(self, venue: str) -> tuple[Venue, int, str | None] | None:
        """("CVPR 2025") -> (Venue CVPR, 2025, None); None when the string is not a known normalised venue."""
        m = self._venue_re.match(venue)
        if not m:
            return None
        return self.venue_by_id[m["name"]], int(m["year"]), m["track"]

    # ------------------------------------------------------------------ self-validation
    def consistency_problems(self, shown: str, lines: dict) -> list[Problem]:
        """Dangling references and undescribed cells; each problem names the taxonomy line."""
        problems: list[Problem] = []

        def bad(loc: tuple, field: str, message: str) -> None:
            problems.append(Problem(shown, line_of(lines, loc), field, message))

        for kind, items in [
            ("stages", self.stages),
            ("axes", self.axes),
            ("techniques", self.techniques),
            ("technique_groups", self.technique_groups),
            ("frontiers", self.frontiers),
            ("modalities", self.modalities),
            ("training_regimes", self.training_regimes),
            ("placement_methods", self.placement_methods),
            ("metrics", self.metrics),
            ("venues", self.venues),
        ]:
            seen: set[str] = set()
            for i, item in enumerate(items):
                if item.id in seen:
                    bad((kind, i, "id"), f"{kind}.id", f"duplicate id {item.id!r}")
                seen.add(item.id)
                if kind != "venues" and not re.fullmatch(r"[a-z][a-z0-9_-]*", item.id):
                    bad((kind, i, "id"), f"{kind}.id", f"id {item.id!r} must be lowercase letters, digits, _ or -")
        expected = set(self.cell_ids)
        for cell in sorted(expected - set(self.cells)):
            bad(("cells",), "cells", f"cell {cell!r} is not described")
        for cell in sorted(set(self.cells) - expected):
            bad(("cells", cell), "cells", f"{cell!r} is not a <stage>.<axis> cell")
        for cell, text in self.cells.items():
            if not text.strip():
                bad(("cells", cell), "cells", f"cell {cell!r} has an empty description")
        covered: set[str] = set()
        for i, t in enumerate(self.techniques):
            for cell in t.cells:
                if cell not in expected:
                    bad(("techniques", i, "cells"), "techniques.cells", f"{t.id}: unknown cell {cell!r}")
                covered.add(cell)
            if not t.description.strip():
                bad(("techniques", i, "description"), "techniques.description", f"{t.id}: empty description")
        for cell in sorted(expected - covered):
            bad(("cells", cell), "cells", f"no technique may occupy cell {cell!r}")
        for i, group in enumerate(self.technique_groups):
            for technique in group.techniques:
                if technique not in self.technique_by_id:
                    bad(
                        ("technique_groups", i, "techniques"),
                        "technique_groups.techniques",
                        f"{group.id}: unknown technique {technique!r}",
                    )
        return problems

    def placement_problems(self, techniques: list[str], cells: list[str]) -> list[str]:
        """Why a (techniques, cells) placement is invalid; empty when valid.

        Rules: every technique and cell exists; every cell is allowed by at least one of the techniques; every
        technique allows at least one of the cells.
        """
        allowed = self._allowed_cells
        if all(t in allowed for t in techniques):  # fast path for the common, valid case
            cell_set = set(cells)
            if all(allowed[t] & cell_set for t in techniques) and all(
                any(c in allowed[t] for t in techniques) for c in cells
            ):
                return []
        out: list[str] = []
        known_cells = set(self.cell_ids)
        for cell in cells:
            if cell not in known_cells:
                out.append(f"unknown cell {cell!r} (cells are {', '.join(self.cell_ids)})")
        valid = [t for t in techniques if t in self.technique_by_id]
        for t in techniques:
            if t not in self.technique_by_id:
                out.append(f"unknown technique {t!r}")
        for t in valid:
            if not set(self.technique_by_id[t].cells) & set(cells):
                out.append(f"technique {t!r} may occupy {self.technique_by_id[t].cells}, none of {cells}")
        for cell in cells:
            if cell in known_cells and valid and not any(cell in self.technique_by_id[t].cells for t in valid):
                out.append(f"cell {cell!r} is not allowed for any of {valid}")
        return out


def read_taxonomy(path: Path = TAXONOMY_PATH) -> tuple[Taxonomy, list[Problem]]:
    """Load and check the taxonomy; raises ProblemError when it cannot be loaded at all."""
    shown = display_path(path)
    data, lines = load_yaml_with_lines(path)
    if not isinstance(data, dict):
        raise ProblemError([Problem(shown, 1, "", "the taxonomy must be a YAML mapping")])
    try:
        tax = Taxonomy.model_validate(data)
    except ValidationError as exc:
        raise ProblemError(
            [
                Problem(shown, line_of(lines, err["loc"]), ".".join(map(str, err["loc"])), err["msg"])
                for err in exc.errors()
            ]
        ) from None
    return tax, tax.consistency_problems(shown, lines)


@lru_cache(maxsize=4)
def _load_cached(path_str: str) -> Taxonomy:
    tax, problems = read_taxonomy(Path(path_str))
    if problems:
        raise ProblemError(problems)
    return tax


def load_taxonomy(path: Path = TAXONOMY_PATH) -> Taxonomy:
    """The checked taxonomy (cached); raises ProblemError if it is inconsistent."""
    return _load_cached(str(Path(path).resolve()))
