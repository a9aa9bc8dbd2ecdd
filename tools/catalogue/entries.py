"""Creating and writing paper entries: one place for the file layout, shared by `new`, `import`, `add`, `triage`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tools.catalogue.paths import PAPERS_DIR, display_path
from tools.catalogue.problems import Problem, ProblemError
from tools.catalogue.provenance import citation_problems
from tools.catalogue.same_paper import Described, duplicate_pairs
from tools.catalogue.schema import FIELD_ORDER, Paper
from tools.catalogue.taxonomy import Taxonomy, load_taxonomy
from tools.catalogue.yamlio import atomic_write, dump_entry


def paper_path(paper_id: str, papers_dir: Path = PAPERS_DIR) -> Path:
    """The file of the entry ``paper_id``."""
    return Path(papers_dir) / f"{paper_id}.yaml"


def to_yaml_data(paper: Paper) -> dict[str, Any]:
    """The entry as plain data in canonical key order, leaving out empty optional fields."""
    data = paper.model_dump(mode="python", exclude_defaults=True)
    for required in ("training", "authors"):
        data.setdefault(required, getattr(paper, required))
    return {key: data[key] for key in FIELD_ORDER if key in data}


def build_paper(
    data: dict[str, Any], taxonomy: Taxonomy | None = None, label: str = "<new entry>", line: int = 1
) -> Paper:
    """Validate plain data as a paper (the schema, then how its sources are cited); raises ProblemError naming each
    bad field at ``label:line``."""
    taxonomy = taxonomy or load_taxonomy()
    try:
        paper = Paper.model_validate(data, context={"taxonomy": taxonomy})
    except ValidationError as exc:
        raise ProblemError(
            [
                Problem(label, line, ".".join(map(str, err["loc"])), err["msg"].removeprefix("Value error, "))
                for err in exc.errors()
            ]
        ) from None
    problems = [
        Problem(label, line, ".".join(map(str, loc)), message)
        for loc, message in citation_problems(paper, taxonomy.paper_list_repos)
    ]
    if problems:
        raise ProblemError(problems)
    return paper


def conflicts_with(paper: Paper, existing: dict[str, Paper]) -> list[str]:
    """Why ``paper`` must not be added next to ``existing``: the same id, or the same paper
    (tools/catalogue/same_paper.py:
    arXiv id, DOI, a variant of the title; entries it lists in ``distinct_from`` excepted)."""
    return [reason for _, reasons in find_conflicts([paper], existing).items() for reason in reasons]


def find_conflicts(papers: list[Paper], existing: dict[str, Paper]) -> dict[str, list[str]]:
    """For several new papers at once (one duplicate search): id -> why it must not be added next to ``existing``
    (nor next to another of ``papers``)."""
    out: dict[str, list[str]] = {p.id: [] for p in papers}
    new_keys = {f"\0{p.id}": p for p in papers}
    for p in papers:
        if p.id in existing:
            out[p.id].append(f"the id {p.id!r} is taken by papers/{p.id}.yaml")
    pool = [Described.of(p) for pid, p in existing.items()] + [Described.of(p, key) for key, p in new_keys.items()]
    for match in duplicate_pairs(pool, involving=set(new_keys)):
        for mine, other in ((match.a, match.b), (match.b, match.a)):
            if mine not in new_keys:
                continue
            paper = new_keys[mine]
            other_id = other[1:] if other in new_keys else other
            if other_id in paper.distinct_from or other_id == paper.id:
                continue
            if other in new_keys:
                if mine < other:
                    out[paper.id].append(f"{match.why}: the same paper as the new entry {other_id}")
            else:
                out[paper.id].append(
                    f"{match.why}: already catalogued as papers/{other_id}.yaml ({existing[other_id].title!r})"
                )
    return out


def write_paper(paper: Paper, papers_dir: Path = PAPERS_DIR) -> Path:
    """Write an entry to its file atomically and return the path."""
    path = paper_path(paper.id, papers_dir)
    atomic_write(path, dump_entry(to_yaml_data(paper)))
    return path


def describe(path: Path) -> str:
    """A file's path as messages show it."""
    return display_path(path)
