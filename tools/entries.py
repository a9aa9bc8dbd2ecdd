"""Creating and writing paper entries: one place for the file layout, shared by `new`, `import`, `add`, `triage`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tools.paths import PAPERS_DIR, display_path
from tools.problems import Problem, ProblemError
from tools.schema import FIELD_ORDER, Paper
from tools.taxonomy import Taxonomy, load_taxonomy
from tools.validate import near_duplicate_pairs
from tools.yamlio import atomic_write, dump_entry


def paper_path(paper_id: str, papers_dir: Path = PAPERS_DIR) -> Path:
    return Path(papers_dir) / f"{paper_id}.yaml"


def to_yaml_data(paper: Paper) -> dict[str, Any]:
    """The entry as plain data in canonical key order, leaving out empty optional fields."""
    data = paper.model_dump(mode="python", exclude_defaults=True)
    for required in ("training", "authors"):
        data.setdefault(required, getattr(paper, required))
    return {key: data[key] for key in FIELD_ORDER if key in data}


def build_paper(data: dict[str, Any], taxonomy: Taxonomy | None = None, label: str = "<new entry>") -> Paper:
    """Validate plain data as a paper; raises ProblemError naming each bad field."""
    try:
        return Paper.model_validate(data, context={"taxonomy": taxonomy or load_taxonomy()})
    except ValidationError as exc:
        raise ProblemError(
            [
                Problem(label, 1, ".".join(map(str, err["loc"])), err["msg"].removeprefix("Value error, "))
                for err in exc.errors()
            ]
        ) from None


def conflicts_with(paper: Paper, existing: dict[str, Paper]) -> list[str]:
    """Why ``paper`` must not be added next to ``existing``: same id, arXiv id or DOI, or a near-duplicate title."""
    reasons = []
    for other in existing.values():
        if other.id == paper.id:
            reasons.append(f"the id {paper.id!r} is taken by papers/{other.id}.yaml")
        if paper.arxiv and other.arxiv == paper.arxiv:
            reasons.append(f"arXiv {paper.arxiv} is already catalogued as papers/{other.id}.yaml")
        if paper.doi and other.doi and other.doi.lower() == paper.doi.lower():
            reasons.append(f"DOI {paper.doi} is already catalogued as papers/{other.id}.yaml")
    titles = {pid: p.title for pid, p in existing.items() if pid not in paper.distinct_from}
    titles["\0new"] = paper.title
    for a, b, score in near_duplicate_pairs(titles):
        if "\0new" in (a, b):
            other = b if a == "\0new" else a
            reasons.append(
                f"the title is a near-duplicate (similarity {score:.0f}) of papers/{other}.yaml: "
                f"{existing[other].title!r}"
            )
    return reasons


def write_paper(paper: Paper, papers_dir: Path = PAPERS_DIR) -> Path:
    path = paper_path(paper.id, papers_dir)
    atomic_write(path, dump_entry(to_yaml_data(paper)))
    return path


def describe(path: Path) -> str:
    return display_path(path)
