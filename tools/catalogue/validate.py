"""Validate the catalogue: every paper file against the schema and taxonomy, then the cross-file rules.

Per file, beyond the schema: the file name matches the id; ``reference_impls`` and ``closest_impl`` name entries of
the reference-implementation registry (``reference_impls/registry.py``: plain data, importable without torch), and a
``reference_impls`` entry follows this paper's arXiv id; sources are canonical (tools/catalogue/provenance.py: a copy
of the
arXiv page is cited through its canonical address with ``read_via``, a paper list is never a source).

Cross-file rules: unique id, arXiv id, DOI and citation key; no two entries describe the same paper
(tools/catalogue/same_paper.py) unless one lists the other in ``distinct_from``; ``distinct_from`` points at existing
ids.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from reference_impls import registry
from tools.catalogue.paths import PAPERS_DIR, display_path
from tools.catalogue.problems import Problem, ProblemError
from tools.catalogue.provenance import citation_problems
from tools.catalogue.same_paper import Described, duplicate_pairs
from tools.catalogue.schema import Paper
from tools.catalogue.taxonomy import Taxonomy, load_taxonomy
from tools.catalogue.yamlio import NodeLines, line_of, load_yaml_with_lines


@dataclass
class Catalogue:
    """The valid entries by id, their files, and the problems found."""

    papers: dict[str, Paper] = field(default_factory=dict)  # id -> paper
    files: dict[str, Path] = field(default_factory=dict)  # id -> file
    lines: dict[str, dict] = field(default_factory=dict)  # id -> node lines
    problems: list[Problem] = field(default_factory=list)


PAPER_SUFFIX = ".yaml"
YAML_SUFFIXES = (".yaml", ".yml")  # compared in lower case: a .yml or .YAML file is listed, then rejected by name


def is_yaml_name(path: Path) -> bool:
    """Whether a file name looks like a YAML file (any letter case), so that a wrong name is reported."""
    return Path(path).suffix.lower() in YAML_SUFFIXES


def paper_files(papers_dir: Path = PAPERS_DIR) -> list[Path]:
    """Every YAML-named entry of ``papers_dir`` (hidden ones excepted), whatever it is: ``validate_file`` reports
    a misnamed file, a symbolic link or a special file instead of reading it."""
    folder = Path(papers_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_yaml_name(p) and not p.name.startswith("."))


# ------------------------------------------------------------------------------------------------------ one file
_KNOWN_FIELDS = list(Paper.model_fields)


def _message(err: dict) -> str:
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    kind = err.get("type", "")
    value = err.get("input")
    if kind == "extra_forbidden":
        name = str(err["loc"][-1]) if err["loc"] else ""
        close = difflib.get_close_matches(name, _KNOWN_FIELDS, n=1)
        msg = "unknown key (not in the schema)" + (f"; did you mean {close[0]!r}?" if close else "")
    elif isinstance(value, bool) and kind in ("string_type", "int_type", "float_type", "date_type"):
        msg += f"; YAML read an unquoted yes/no/on/off/true/false as the boolean {value}: quote the value if it is text"
    elif kind == "missing":
        msg = "required field is missing"
    return msg


def _data_path(data, loc: tuple) -> tuple:
    """The part of a pydantic error location that exists in the data (drops union-member tags like 'float')."""
    path, node = [], data
    for part in loc:
        if isinstance(node, dict):
            path.append(part)
            if part not in node:
                break  # a missing or unknown key: name it and stop
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        else:
            break  # inside a scalar: what is left are union-member tags
    return tuple(path)


def _as_written(lines, loc: tuple, err: dict) -> str:
    """For a number where text was expected: how to quote it, from the scalar as written in the file (YAML reads
    an unquoted 2403.10 as 2403.1, so the value alone cannot say)."""
    value = err.get("input")
    written = lines.scalar_text(loc) if isinstance(lines, NodeLines) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and written and loc:
        return f' as written: {loc[-1]}: "{written}"'
    return ""


def problems_from_validation(shown: str, lines: dict, exc: ValidationError, data=None) -> list[Problem]:
    """The schema's validation errors as problems at the lines of the fields they concern."""
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"]) if data is None else _data_path(data, tuple(err["loc"]))
        field_name = ".".join(str(part) for part in loc)
        hint = _as_written(lines, loc, err) if loc == ("arxiv",) else ""
        out.append(Problem(shown, line_of(lines, loc), field_name, _message(err) + hint))
    return out


def validate_file(path: Path, taxonomy: Taxonomy) -> tuple[Paper | None, dict, list[Problem]]:
    """Validate one paper file; returns (paper or None, node lines, problems). Never raises for bad input."""
    shown = display_path(path)
    if Path(path).suffix != PAPER_SUFFIX:
        return (
            None,
            {},
            [Problem(shown, 1, "", f"paper files end in {PAPER_SUFFIX}: rename it to {Path(path).stem}{PAPER_SUFFIX}")],
        )
    try:
        data, lines = load_yaml_with_lines(path)
    except ProblemError as exc:
        return None, {}, exc.problems
    except OSError as exc:
        return None, {}, [Problem(shown, 1, "", f"cannot read the file: {exc.strerror or exc}")]
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        return None, lines, [Problem(shown, 1, "", f"a paper file must be a YAML mapping, this one is {kind}")]
    try:
        paper = Paper.model_validate(data, context={"taxonomy": taxonomy})
    except ValidationError as exc:
        return None, lines, problems_from_validation(shown, lines, exc, data)
    problems = []
    if Path(path).stem != paper.id:
        problems.append(Problem(shown, line_of(lines, ("id",)), "id", f"the file must be named {paper.id}.yaml"))
    for name in ("reference_impls", "closest_impl"):
        for i, ref in enumerate(getattr(paper, name)):
            message = reference_problem(ref, paper.arxiv if name == "reference_impls" else None)
            if message:
                problems.append(Problem(shown, line_of(lines, (name, i)), f"{name}.{i}", message))
    for loc, message in citation_problems(paper, taxonomy.paper_list_repos):
        problems.append(Problem(shown, line_of(lines, loc), ".".join(map(str, loc)), message))
    return paper, lines, problems


def reference_problem(ref: str, arxiv: str | None = None) -> str | None:
    """Why ``ref`` (a module, ``module:object`` or spec function) is not a registered reference implementation of the
    paper with ``arxiv`` (None when it is)."""
    entry = registry.for_link(ref)
    if entry is None:
        return f"{ref} is not in the reference implementation registry (python -m reference_impls list)"
    if arxiv and entry.arxiv and arxiv not in entry.arxiv:
        return f"{ref} is registered as {entry.name}, which follows arXiv {', '.join(entry.arxiv)}, not {arxiv}"
    return None


# ------------------------------------------------------------------------------------------------------ all files
def cross_file_problems(cat: Catalogue) -> list[Problem]:
    """Problems between entries: ids, arXiv ids, DOIs and citation keys used twice, the same paper twice, dangling
    ``distinct_from``."""
    problems: list[Problem] = []

    def where(pid: str, loc: tuple) -> tuple[str, int]:
        return display_path(cat.files[pid]), line_of(cat.lines[pid], loc)

    def unique(label: str, loc: tuple, value_of) -> None:
        seen: dict[str, str] = {}
        for pid in sorted(cat.papers):
            value = value_of(cat.papers[pid])
            if value is None:
                continue
            if value in seen:
                shown, line = where(pid, loc)
                other = display_path(cat.files[seen[value]])
                problems.append(Problem(shown, line, loc[0], f"{label} {value!r} is also used by {other}"))
            else:
                seen[value] = pid

    unique("arXiv id", ("arxiv",), lambda p: p.arxiv)
    unique("DOI", ("doi",), lambda p: p.doi.lower() if p.doi else None)
    unique("citation key", ("bibtex_key",), lambda p: p.bibtex_key)
    # Generated keys are unique by construction (tools.catalogue.citekeys.assign_keys skips every taken key).
    for pid, paper in cat.papers.items():
        for i, other in enumerate(paper.distinct_from):
            if other not in cat.papers:
                shown, line = where(pid, ("distinct_from", i))
                problems.append(Problem(shown, line, f"distinct_from.{i}", f"no paper has the id {other!r}"))
    for match in duplicate_pairs(Described.of(p) for p in cat.papers.values()):
        a, b = match.a, match.b
        pa, pb = cat.papers[a], cat.papers[b]
        if b in pa.distinct_from or a in pb.distinct_from:
            continue
        if pa.arxiv and pa.arxiv == pb.arxiv or pa.doi and pb.doi and pa.doi.lower() == pb.doi.lower():
            continue  # reported above as a shared arXiv id or DOI
        shown, line = where(b, ("title",))
        problems.append(
            Problem(
                shown,
                line,
                "title",
                f"the same paper as {display_path(cat.files[a])}? ({match.why}); merge them, or add "
                f"'distinct_from: [{a}]' if they are different papers",
            )
        )
    return problems


def validate_catalogue(files: list[Path] | None = None, taxonomy: Taxonomy | None = None) -> Catalogue:
    """Validate the given files (default: all of papers/) and the cross-file rules among them."""
    taxonomy = taxonomy or load_taxonomy()
    files = paper_files() if files is None else files
    cat = Catalogue()
    with _gc_paused():
        _validate_files(files, taxonomy, cat)
    cat.problems.extend(cross_file_problems(cat))
    cat.problems.sort()
    return cat


@contextlib.contextmanager
def _gc_paused():
    """Bulk loading creates many long-lived, acyclic objects; the cyclic GC would rescan them again and again.

    Pause it while loading, then move what was loaded to the permanent generation (``gc.freeze``) so that the first
    collection afterwards does not walk the whole catalogue once more (refcounting still frees it all).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _validate_files(files: list[Path], taxonomy: Taxonomy, cat: Catalogue) -> None:
    for path in files:
        paper, lines, problems = validate_file(path, taxonomy)
        cat.problems.extend(problems)
        if paper is None:
            continue
        if paper.id in cat.papers:
            shown = display_path(path)
            cat.problems.append(
                Problem(
                    shown,
                    line_of(lines, ("id",)),
                    "id",
                    f"id {paper.id!r} is also used by {display_path(cat.files[paper.id])}",
                )
            )
            continue
        cat.papers[paper.id] = paper
        cat.files[paper.id] = Path(path)
        cat.lines[paper.id] = lines


def catalogue_for_update(papers_dir: Path, taxonomy: Taxonomy) -> Catalogue:
    """The catalogue as the commands that extend or refresh it see it (add, enrich, discover, triage): each problem
    is one warning line on stderr, an unreadable or invalid file is left out, and the run goes on."""
    cat = validate_catalogue(paper_files(papers_dir), taxonomy)
    for problem in cat.problems:
        print(f"warning: {problem.as_text()}", file=sys.stderr)
    return cat


CHECKED_FACTS = ("title", "authors", "venue", "placement", "summary")


def coverage(papers: dict[str, Paper]) -> dict[str, int]:
    """How much of the catalogue is verified and sourced (printed by ``validate``)."""
    items = list(papers.values())
    return {
        "papers": len(items),
        "venue checked": sum(p.venue_checked for p in items),
        "preprint searched": sum(p.venue_searched is not None for p in items),
        "summary": sum(p.summary is not None for p in items),
        "claims": sum(bool(p.claims) for p in items),
        "no authors": sum(not p.authors for p in items),
        "placement to review": sum(p.placement.needs_review for p in items),
        "facts with a source": sum(
            name in p.provenance for p in items for name in CHECKED_FACTS if name != "summary" or p.summary
        ),
        "facts": sum(1 for p in items for name in CHECKED_FACTS if name != "summary" or p.summary),
        "sources read on a copy": sum(1 for p in items for v in p.provenance.values() if v in p.read_via),
    }


def load_catalogue() -> dict[str, Paper]:
    """All papers, for the output tools; raises ProblemError when the catalogue does not validate."""
    cat = validate_catalogue()
    if cat.problems:
        raise ProblemError(cat.problems)
    return cat.papers


def existing_papers(papers_dir: Path, taxonomy):
    """The catalogue's valid entries and every id already used by a file (valid or not)."""
    catalogue = catalogue_for_update(papers_dir, taxonomy)
    return catalogue.papers, {f.stem for f in paper_files(papers_dir)} | set(catalogue.papers)
