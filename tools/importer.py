"""Bulk import: JSON Lines rows from paper lists (+ author lists + verified metadata) -> ``papers/<id>.yaml``.

Three input formats, all JSON Lines (one object per line):

* **rows** (``SeedRow``), like ``../shared/literature/papers_seed.jsonl``: a paper as one public list gives it.
* **authors** (``AuthorRow``), like ``papers_authors.jsonl``: author lists matched to rows by arXiv id or title.
* **verified** (``VerifiedRow``, the format of ``/work/scratch/VERIFY_TASK.md``): facts read on the paper's own pages
  (arXiv abstract page, proceedings page, official README), each with the address it was read from. Verified facts
  are authoritative over the lists; a list value that differs becomes a ``disagreement`` in the entry.

Placement: a paper the survey lists -> ``method: survey`` through ``survey_categories``; a list category whose mapping
is unambiguous -> ``method: mapped``; a decision in ``tools/data/curated_placements.yaml`` (reviewed by a person; it
also overrides a mapping that does not fit a paper, with a note) -> ``method: curated``; otherwise the mapped proposal,
flagged ``needs_review``. A later ``--verified`` file (e.g. ``tools/data/verified_extra.jsonl``) corrects earlier
verified rows field by field.

Which value wins, per fact: a paper's own page (verified) > an author list > a paper list; among lists, a conference or
journal beats an "arXiv" listing (often stale), and the title spelling that carries the method's name (or is not in
capitals) beats one that drops it. Every loser is recorded as a ``disagreement`` with the value kept and why.

Re-import rules (the importer is idempotent and never overwrites curated work):

* A matching entry is found by arXiv id, then DOI, then normalised title (its recorded title variants included).
  Its id and file name never change.
* A fact (title, authors, venue, code, modality, ...) is replaced only when its provenance names one of this paper's
  inputs (or a paper list) and the new value comes from a source of at least the same authority; an unsourced fact
  only by one read on a page (a list is never a source), and a fact re-read after a verified input's date is kept.
  A value whose provenance names no input (set by hand, or read from a verified file not passed this time) is
  kept, and a different proposal is only reported. (Edit a field by hand -> put the page you read in its provenance.)
* A paper on the rejected list (tools/data/rejected.yaml) is left out.
* ``summary`` and ``claims`` are only filled when empty. ``placement`` is recomputed when its method is survey or
  mapped, or when it came from the curated-placements file; a placement curated in the entry itself is kept.
* Disagreements a re-import cannot reproduce (added by hand, or from inputs not passed this time) are kept.
* ``reference_impls``, ``frontiers``, ``distinct_from`` and ``bibtex_key`` are never touched.
* ``last_verified`` changes only when the entry's content changes (to the verification date of the facts, or today).
* Importing in one run or in several writes the same files (provenance keys in the schema's order), except where a
  later input would change a fill-only field (summary, claims) or a new entry's id: those keep what came first.

Every input is read and checked before anything is written: a bad row stops the import with ``file:line: message``.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from tools.citekeys import STOPWORDS, ascii_fold
from tools.entries import build_paper, paper_path, to_yaml_data
from tools.paths import PAPERS_DIR, ROOT, display_path
from tools.problems import Problem, ProblemError
from tools import provenance as sources
from tools.schema import ARXIV_NEW, ARXIV_OLD, PREPRINT, PROVENANCE_FIELDS, Claim, Paper
from tools.taxonomy import CategoryMapping, Taxonomy, load_taxonomy
from tools.titles import normalise_title
from tools.validate import paper_files, validate_file
from tools.yamlio import atomic_write, dump_entry, line_of, load_yaml_with_lines

CURATED_PLACEMENTS = ROOT / "tools" / "data" / "curated_placements.yaml"
CURATED_SOURCE = "tools/data/curated_placements.yaml"


# ============================================================================================ input rows
class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SeedRow(_Row):
    """One paper as a public list gives it (the seed's format)."""

    arxiv_id: str | None = None
    title: str = Field(min_length=3)
    year: int | None = None
    venue: str | None = None
    code_url: str | None = None
    paper_url: str | None = None
    source_category: str | None = None
    source: str = Field(min_length=3, description="owner/repo:path@commit of the list")
    survey_placement: list[str] | None = None
    also_in: list[str] | None = None
    arxiv_id_from: str | None = None
    code_url_from: str | None = None


class ConflictingSource(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    source: str
    authors: list[str] = Field(default_factory=list)
    title_in_source: str | None = None


class AuthorRow(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    arxiv_id: str | None = None
    seed_title: str
    title_in_source: str | None = None
    authors: list[str] = Field(min_length=1)
    source: str = Field(min_length=3)
    venue: str | None = None
    authors_truncated: bool = False
    conflict: bool | None = None
    conflicting_sources: list[ConflictingSource] | None = None
    note: str | None = None


class VerifiedClaimSetting(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    budget: str | None = None
    benchmark: str | None = None
    baseline: str | None = None


class VerifiedRow(BaseModel):
    """Facts read on a paper's own pages by a verifier (every fact with the address it was read from)."""

    model_config = ConfigDict(extra="ignore")
    _superseded: dict[str, tuple[str, Any]] = PrivateAttr(default_factory=dict)  # set by layer_verified
    _earlier_sources: set[str] = PrivateAttr(default_factory=set)  # sources of the rows this one corrects

    def all_sources(self) -> set[str]:
        """Every page this row (and the verified rows it corrects) was read from."""
        own = {x for x in [*self.sources.values(), self.venue_source, self.code_source] if x}
        return own | self._earlier_sources | {src for src, _ in self._superseded.values()}
    seed_title: str | None = None
    seed_arxiv_id: str | None = None
    arxiv_id: str | None = None
    title: str | None = None
    authors: list[str] | None = None
    v1_date: str | None = None
    year: int | None = Field(default=None, description="only for a paper without a venue year or arXiv id")
    primary_class: str | None = None
    doi: str | None = None
    journal_ref: str | None = None
    arxiv_comment: str | None = None
    venue: str | None = None
    venue_source: str | None = None
    code_url: str | None = None
    code_official: bool | None = None
    code_source: str | None = None
    summary: str | None = None
    modality: list[str] | None = None
    training: str | None = None
    claims: list[dict[str, Any]] | None = None
    sources: dict[str, str | None] = Field(default_factory=dict)
    verified_on: str | None = None
    notes: str | None = None


class CuratedPlacement(BaseModel):
    """One reviewed placement decision (tools/data/curated_placements.yaml)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    techniques: list[str] | None = None
    cells: list[str] | None = None
    modality: list[str] | None = None
    training: Literal["training-free", "training-aware"] | None = None
    basis: Literal["title", "abstract"] = "title"
    short_name: str | None = None
    note: str | None = None


@dataclass
class Located:
    """A parsed row and where it was read."""

    row: Any
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _problems(shown: str, line: int, exc: ValidationError) -> list[Problem]:
    def message(e: dict) -> str:
        if e["type"] == "extra_forbidden":
            return "unknown field (not part of the row format)"
        if e["type"] == "missing":
            return "required field is missing"
        return e["msg"].removeprefix("Value error, ")

    return [Problem(shown, line, ".".join(map(str, e["loc"])), message(e)) for e in exc.errors()]


def read_jsonl(path: Path, model: type[BaseModel]) -> list[Located]:
    """Parse a JSON Lines file into ``model`` rows; raises ProblemError naming ``file:line`` for every bad row."""
    rows, problems = parse_jsonl(path, model)
    if problems:
        raise ProblemError(problems)
    return rows


def parse_jsonl(path: Path, model: type[BaseModel]) -> tuple[list[Located], list[Problem]]:
    """The good rows of a JSON Lines file and a problem (``file:line``) for each bad one."""
    shown = display_path(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        return [], [Problem(shown, 1, "", f"cannot read the file: {exc.strerror or exc}")]
    except UnicodeDecodeError:
        return [], [Problem(shown, 1, "", "not valid UTF-8")]
    rows, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(shown, number, "", f"not valid JSON: {exc.msg} (column {exc.colno})"))
            continue
        if not isinstance(data, dict):
            problems.append(Problem(shown, number, "", f"a row must be a JSON object, not {type(data).__name__}"))
            continue
        try:
            rows.append(Located(model.model_validate(data), shown, number))
        except ValidationError as exc:
            problems.extend(_problems(shown, number, exc))
    return rows, problems


def read_curated(path: Path, taxonomy: Taxonomy) -> dict[str, tuple[CuratedPlacement, int]]:
    """key (arXiv id or paper id) -> (decision, line). Raises ProblemError for bad decisions."""
    if not Path(path).exists():
        return {}
    shown = display_path(path)
    data, lines = load_yaml_with_lines(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ProblemError([Problem(shown, 1, "", "must be a mapping: arXiv id or paper id -> decision")])
    out, problems = {}, []
    modalities = {m.id for m in taxonomy.modalities}
    for key, value in data.items():
        line = line_of(lines, (key,))
        try:
            decision = CuratedPlacement.model_validate(value)
        except ValidationError as exc:
            problems.extend(_problems(shown, line, exc))
            continue
        if (decision.techniques is None) != (decision.cells is None):
            problems.append(Problem(shown, line, key, "give both techniques and cells, or neither"))
        elif decision.techniques is not None:
            for msg in taxonomy.placement_problems(decision.techniques, decision.cells):
                problems.append(Problem(shown, line, key, msg))
        for mod in decision.modality or []:
            if mod not in modalities:
                problems.append(Problem(shown, line, key, f"unknown modality {mod!r}"))
        out[str(key)] = (decision, line)
    if problems:
        raise ProblemError(problems)
    return out


# ============================================================================================ normalisation
_PRESENTATION = {"oral", "highlight", "spotlight", "poster"}
_VENUE_ALIASES = {
    "trans. mach. learn. res.": "TMLR",
    "transactions on machine learning research": "TMLR",
    "acm sigcomm": "SIGCOMM",
    "nips": "NeurIPS",
    "acm multimedia": "ACM MM",
    "acmmm": "ACM MM",
    "mm": "ACM MM",
    "vldb endowment": "VLDB",
    "pvldb": "VLDB",
}


def normalise_venue(raw: str | None, taxonomy: Taxonomy) -> str | None:
    """A list's venue string -> the taxonomy's form ("CVPR 2025", "EMNLP 2023 Findings", "ICML 2023 Workshop",
    "arXiv"); None for an empty value. Raises ValueError for a venue the taxonomy does not know."""
    if raw is None or not raw.strip():
        return None
    text = " ".join(raw.replace("\u2019", "'").split())
    if re.fullmatch(r"(?i)arxiv(\s*'?\d{2,4})?(\s+preprint)?", text):
        return PREPRINT
    findings = bool(re.search(r"(?i)\bfindings\b", text))
    text = re.sub(r"(?i)\bfindings( of( the)?)?\b", " ", text)
    # Year: "2024", or an apostrophe form "EMNLP'23".
    year = None
    m = re.search(r"\b((?:19|20)\d\d)\b", text)
    if m:
        year = int(m.group(1))
        text = text[: m.start()] + " " + text[m.end():]
    else:
        m = re.search(r"'(\d\d)\b", text)
        if m:
            year = 2000 + int(m.group(1))
            text = text[: m.start()] + " " + text[m.end():]
    if year is None:
        raise ValueError(f"venue {raw!r} has no year")
    words = [w for w in text.split() if w.lower() not in _PRESENTATION]
    name_text = " ".join(words).strip(" ,.-")
    venue_ids = sorted(taxonomy.venue_by_id, key=len, reverse=True)
    lowered = name_text.lower()
    name, rest = None, ""
    for alias, target in _VENUE_ALIASES.items():
        alias = alias.rstrip(".")
        if lowered == alias or lowered.startswith(alias + " "):
            name, rest = target, name_text[len(alias):]
            break
    if name is None:
        for vid in venue_ids:
            if lowered == vid.lower() or lowered.startswith(vid.lower() + " "):
                name, rest = vid, name_text[len(vid):]
                break
    if name is None:
        raise ValueError(
            f"venue {raw!r} is not a known venue: add it to `venues` in taxonomy.yaml (then run `python -m tools "
            "schema`)"
        )
    rest_words = [w for w in rest.split() if w]
    workshop = any(w.lower().startswith("workshop") for w in rest_words) or bool(rest_words)
    track = " Findings" if findings else (" Workshop" if workshop else "")
    return f"{name} {year}{track}"


def venue_from_citation(raw: str | None, taxonomy: Taxonomy) -> str | None:
    """A venue as a BibTeX entry or a README spells it ("Proceedings of ... (ICCV) 2023") -> normalised, or None
    when it does not name both a known venue and a year (then it is not used: no guessing)."""
    if not raw:
        return None
    try:
        return normalise_venue(raw, taxonomy)
    except ValueError:
        pass
    year = re.search(r"\b((?:19|20)\d\d)\b", raw)
    if not year:
        return None
    for vid in sorted(taxonomy.venue_by_id, key=len, reverse=True):
        if re.search(rf"(?<![A-Za-z]){re.escape(vid)}(?![A-Za-z])", raw):
            return f"{vid} {year.group(1)}"
    return None


def normalise_url(url: str | None) -> str | None:
    if not url:
        return None
    return url.strip().rstrip("/").removesuffix(".git").rstrip("/")


def _same_url(a: str | None, b: str | None) -> bool:
    na, nb = normalise_url(a), normalise_url(b)
    if na is None or nb is None:
        return na == nb
    strip = lambda u: re.sub(r"^https?://(www\.)?", "", u).lower()  # noqa: E731
    return strip(na) == strip(nb)


def _same_title(a: str, b: str) -> bool:
    """Titles that differ only in case, spacing or quotes are the same spelling for the report."""
    fold = lambda t: " ".join(unicodedata.normalize("NFKC", t).casefold().replace("\u2019", "'").split())  # noqa: E731
    return fold(a) == fold(b)


def arxiv_from_url(url: str | None) -> str | None:
    if not url:
        return None
    m = re.search(r"arxiv\.org/(?:abs|pdf|html)/([^\s?#]+?)(?:v\d+)?(?:\.pdf)?/?$", url)
    return m.group(1) if m else None


def doi_from_url(url: str | None) -> str | None:
    if not url:
        return None
    m = re.search(r"doi\.org/(10\.\d{4,9}/\S+)$", url)
    return m.group(1) if m else None


def is_arxiv_id(value: str | None) -> bool:
    return bool(value) and bool(ARXIV_NEW.match(value) or ARXIV_OLD.match(value))


def arxiv_url(arxiv: str) -> str:
    return f"https://arxiv.org/abs/{arxiv}"


def slugify(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", ascii_fold(text).lower())).strip("-")


def short_name_of(title: str) -> str | None:
    """The method name before ':' when it is short (at most two words, 24 characters): 'FastV: ...' -> FastV."""
    if ":" not in title:
        return None
    head = title.split(":", 1)[0].strip()
    if not head or len(head) > 24 or len(head.split()) > 2 or not re.search(r"[A-Za-z]", head):
        return None
    return head


def _significant_words(text: str) -> list[str]:
    words = [slugify(w) for w in re.split(r"[\s/]+", text)]
    return [w for w in words if w and w not in STOPWORDS]


def id_candidates(title: str, short_name: str | None, year: int) -> list[str]:
    """Ids to try, most readable first: short name (or three significant title words), then longer variants."""
    if short_name:
        base = slugify(short_name)[:40].strip("-")
        rest = _significant_words(title.split(":", 1)[1] if ":" in title else title)
    else:
        words = _significant_words(title)
        base, rest = "-".join(words[:3]), words[3:]
    out = [f"{base}-{year}"]
    for n in (1, 2, 3):
        if len(rest) >= n:
            out.append(f"{base}-{'-'.join(rest[:n])}-{year}")
    return [re.sub(r"-+", "-", c)[:80].strip("-") for c in out]


# ============================================================================================ the import plan
@dataclass
class Record:
    """One paper: the rows of every input that describe it."""

    seeds: list[Located] = field(default_factory=list)
    authors: Located | None = None
    verified: Located | None = None

    @property
    def primary(self) -> SeedRow | None:
        return self.seeds[0].row if self.seeds else None

    @property
    def where(self) -> str:
        first = self.seeds[0] if self.seeds else self.verified
        return first.where if first else "<input>"

    def arxiv_ids(self) -> list[str]:
        out = []
        v = self.verified.row if self.verified else None
        if v and is_arxiv_id(v.arxiv_id):
            out.append(v.arxiv_id)
        for s in self.seeds:
            if s.row.arxiv_id and s.row.arxiv_id not in out:
                out.append(s.row.arxiv_id)
        return out

    def dois(self) -> list[str]:
        out = []
        if self.verified and self.verified.row.doi:
            out.append(self.verified.row.doi.lower())
        for s in self.seeds:
            d = doi_from_url(s.row.paper_url)
            if d and d.lower() not in out:
                out.append(d.lower())
        return out

    def titles(self) -> list[str]:
        out = []
        if self.verified and self.verified.row.title:
            out.append(self.verified.row.title)
        out += [s.row.title for s in self.seeds]
        if self.authors and self.authors.row.title_in_source:
            out.append(self.authors.row.title_in_source)
        return out

    def rank(self, provenance: str | None, existing: bool = False) -> int | None:
        """The authority of a provenance value among this paper's inputs: 4 the curated-placements file, 3 a
        verified page, 2 an author list, 1 a paper list, 0 nothing recorded yet; None when it names no input
        (a person wrote it, or it came from an input not given this time). An existing value taken from the
        curated-placements file ranks 0: the file is read again on every run, so its current decision (or, when
        the decision is gone, the mapping) replaces it."""
        if provenance is None or provenance.startswith("not decided yet"):
            return 0
        if CURATED_SOURCE in provenance:
            return 0 if existing else 4
        v = self.verified.row if self.verified else None
        verified = v.all_sources() | set(_verified_derived_sources(v)) if v else set()
        authors = {self.authors.row.source} if self.authors else set()
        lists = {x for s in self.seeds for x in (s.row.source, s.row.code_url_from, s.row.arxiv_id_from) if x}

        def cites(pool: set[str]) -> bool:
            return provenance in pool or any(len(x) > 12 and x in provenance for x in pool)

        if cites(verified):
            return 3
        if cites(authors):
            return 2
        list_repos = _list_repos(self)
        if cites(lists) or any(sources.repository_of(m.group(0)) in list_repos
                               for m in _LIST_POINTER.finditer(provenance)):
            return 1
        return None


def _verified_derived_sources(v: VerifiedRow) -> list[str]:
    page = v.sources.get("title") or (arxiv_url(v.arxiv_id) if is_arxiv_id(v.arxiv_id) else None)
    out = [page] if page else []
    for key in ("summary", "title"):
        if v.sources.get(key):
            out += [f"curated from the abstract ({v.sources[key]})"]
    return [x for x in out if x]


@dataclass
class Change:
    """What the import does to one entry."""

    paper: Paper
    path: Path
    action: Literal["create", "update", "unchanged"]
    text: str
    record_where: str
    kept: list[str] = field(default_factory=list)  # human-set values kept although the inputs propose others


@dataclass
class ImportReport:
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # non-fatal: dropped claims, merged rows, skipped values

    def count(self, action: str) -> int:
        return sum(1 for c in self.changes if c.action == action)

    def summary_lines(self) -> list[str]:
        papers = [c.paper for c in self.changes]
        unknown = sum(1 for p in papers if p.authors_status == "unknown")
        review = [p.id for p in papers if p.placement.needs_review]
        methods = {m: sum(1 for p in papers if p.placement.method == m) for m in ("survey", "mapped", "curated")}
        lines = [
            f"{len(papers)} paper(s): {self.count('create')} created, {self.count('update')} updated, "
            f"{self.count('unchanged')} unchanged",
            f"placement: {methods['survey']} survey, {methods['mapped']} mapped, {methods['curated']} curated; "
            f"{len(review)} need review",
            f"authors: {sum(1 for p in papers if p.authors_status == 'complete')} complete, "
            f"{sum(1 for p in papers if p.authors_status == 'truncated')} truncated, {unknown} unknown",
            f"{sum(len(p.disagreements) for p in papers)} disagreement(s) recorded in "
            f"{sum(1 for p in papers if p.disagreements)} paper(s); "
            f"{sum(len(p.claims) for p in papers)} claim(s) in {sum(1 for p in papers if p.claims)} paper(s)",
        ]
        kept = [(c.paper.id, k) for c in self.changes for k in c.kept]
        if kept:
            lines.append(f"{len(kept)} value(s) set by hand were kept although the inputs differ:")
            lines += [f"  {pid}: {k}" for pid, k in kept]
        if review:
            lines.append("placements to review: " + ", ".join(review[:30]) + (" ..." if len(review) > 30 else ""))
        return lines


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def group_records(
    seeds: list[Located], authors: list[Located], verified: list[Located]
) -> tuple[list[Record], list[str]]:
    """Join the inputs into one record per paper. Seed rows that share an arXiv id, DOI or normalised title (after
    the verified corrections) are the same paper listed twice: they are merged into one record."""
    notes: list[str] = []
    by_seed_key: dict[tuple, int] = {}
    for i, s in enumerate(seeds):
        if s.row.arxiv_id:
            by_seed_key.setdefault(("arxiv", s.row.arxiv_id), i)
        by_seed_key.setdefault(("title", s.row.title), i)
    # verified rows -> the seed row they verify (exact: they carry the seed's title and id)
    verified_of: dict[int, Located] = {}
    extra_verified: list[Located] = []
    for v in verified:
        row = v.row
        idx = None
        if row.seed_title is not None:
            idx = by_seed_key.get(("title", row.seed_title))
        if idx is None and row.seed_arxiv_id:
            idx = by_seed_key.get(("arxiv", row.seed_arxiv_id))
        if idx is None and is_arxiv_id(row.arxiv_id):
            idx = by_seed_key.get(("arxiv", row.arxiv_id))
        if idx is None:  # a row that an earlier verified row already tied to a seed row (by its corrected id or title)
            keys = [("verified-arxiv", a) for a in (row.arxiv_id, row.seed_arxiv_id) if is_arxiv_id(a)]
            keys += [("verified-title", normalise_title(t)) for t in (row.title, row.seed_title) if t]
            idx = next((by_seed_key[k] for k in keys if k in by_seed_key), None)
        if idx is not None:
            if is_arxiv_id(row.arxiv_id):
                by_seed_key.setdefault(("verified-arxiv", row.arxiv_id), idx)
            if row.title:
                by_seed_key.setdefault(("verified-title", normalise_title(row.title)), idx)
        if idx is None:
            extra_verified.append(v)
        elif idx in verified_of:
            verified_of[idx] = layer_verified(verified_of[idx], v)
            notes.append(f"{v.where}: corrects the verified row {verified_of[idx].where} field by field")
        else:
            verified_of[idx] = v
    authors_of: dict[int, Located] = {}
    for a in authors:
        idx = by_seed_key.get(("arxiv", a.row.arxiv_id)) if a.row.arxiv_id else None
        if idx is None:
            idx = by_seed_key.get(("title", a.row.seed_title))
        if idx is not None and idx not in authors_of:
            authors_of[idx] = a
    # same paper listed twice: union seed rows by arXiv id (verified first), DOI and normalised title
    uf = _UnionFind(len(seeds))
    seen: dict[tuple, int] = {}
    for i, s in enumerate(seeds):
        v = verified_of.get(i)
        keys = []
        arx = v.row.arxiv_id if v and is_arxiv_id(v.row.arxiv_id) else s.row.arxiv_id
        if arx:
            keys.append(("arxiv", arx))
        doi = (v.row.doi if v and v.row.doi else None) or doi_from_url(s.row.paper_url)
        if doi:
            keys.append(("doi", doi.lower()))
        keys.append(("title", normalise_title(s.row.title)))
        if v and v.row.title:
            keys.append(("title", normalise_title(v.row.title)))
        for key in keys:
            if key in seen:
                uf.union(seen[key], i)
            else:
                seen[key] = i
    groups: dict[int, list[int]] = {}
    for i in range(len(seeds)):
        groups.setdefault(uf.find(i), []).append(i)
    records = []
    for root, members in sorted(groups.items()):
        rec = Record(seeds=[seeds[i] for i in members])
        rec.verified = next((verified_of[i] for i in members if i in verified_of), None)
        rec.authors = next((authors_of[i] for i in members if i in authors_of), None)
        if len(members) > 1:
            listed = ", ".join(f"{seeds[i].where} ({seeds[i].row.title!r})" for i in members)
            notes.append(f"merged rows listing the same paper: {listed}")
        records.append(rec)
    extra_by_key: dict[str, Record] = {}
    for v in extra_verified:
        key = v.row.arxiv_id if is_arxiv_id(v.row.arxiv_id) else (v.row.doi or v.row.title)
        if not key:
            notes.append(f"{v.where}: verified row names no paper (no arXiv id, DOI or title): skipped")
            continue
        if key in extra_by_key:
            rec = extra_by_key[key]
            rec.verified = layer_verified(rec.verified, v)
            notes.append(f"{v.where}: corrects an earlier verified row field by field")
            continue
        extra_by_key[key] = Record(verified=v)
        records.append(extra_by_key[key])
    return records, notes


_LAYERED_FACTS = {"title": "title", "venue": "venue", "code_url": "code_url"}


def layer_verified(first: Located, later: Located) -> Located:
    """A later verified row (a correction file passed after the main ones) overrides the earlier row field by
    field; an overridden title, venue or code link is remembered so that it is reported as a disagreement."""
    a, b = first.row, later.row
    update: dict[str, Any] = {}
    superseded = dict(a._superseded)
    for name in VerifiedRow.model_fields:
        value = getattr(b, name)
        if name in ("seed_title", "seed_arxiv_id") or value in (None, [], {}):
            continue
        if name == "sources":
            update["sources"] = {**a.sources, **{k: x for k, x in value.items() if x}}
            continue
        old = getattr(a, name)
        if name in _LAYERED_FACTS and old not in (None, value):
            src = {"title": a.sources.get("title"), "venue": a.venue_source or a.sources.get("venue"),
                   "code_url": a.code_source or a.sources.get("code_url")}[name]
            superseded[name] = (src or first.where, old)
        update[name] = value
    if b.notes and a.notes:
        update["notes"] = f"{a.notes}; {b.notes}"
    merged = a.model_copy(update=update)
    merged._superseded = superseded
    merged._earlier_sources = a.all_sources()
    return Located(merged, first.file, first.line)


# ------------------------------------------------------------------------------------------------ facts of a record
@dataclass
class Proposal:
    """The importer's view of one paper, before it meets an existing entry."""

    data: dict[str, Any]
    provenance: dict[str, str]
    disagreements: list[dict[str, Any]]
    verified_on: dt.date | None


def _date(text: str | None) -> dt.date | None:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def _shouting(title: str) -> bool:
    """An all-capitals title (as some lists copy them from PDF title pages)."""
    letters = [c for c in title if c.isalpha()]
    return bool(letters) and sum(c.isupper() for c in letters) > 0.8 * len(letters)


def _name_prefixed_variant(title: str, others: list[tuple[str, str]]) -> tuple[str, str] | None:
    """A list that writes 'SmoothQuant: Accurate and ...' where the row says 'Accurate and ...' gives the fuller
    title: (source, title) of such a variant, or None."""
    for source, other in others:
        if ":" in other and short_name_of(other) and _same_title(other.split(":", 1)[1].strip(), title):
            return source, other
    return None


def _dedupe(names: list[str]) -> tuple[list[str], list[str]]:
    out, dropped = [], []
    for n in (" ".join(x.split()) for x in names):
        if n and n not in out:
            out.append(n)
        elif n:
            dropped.append(n)
    return out, dropped


def _disagreement(field_name: str, values: dict[str, str], kept: str, why: str) -> dict[str, Any] | None:
    values = {k: v for k, v in values.items() if v}
    if len(values) < 2 or len(set(values.values())) < 2:
        return None
    return {"field": field_name, "values": values, "kept": kept, "why": why}


@dataclass
class _Facts:
    """What the steps of Importer.propose share: the rows of one paper and the facts gathered so far."""

    rec: Record
    seed: SeedRow | None
    v: VerifiedRow | None
    a: AuthorRow | None
    page: str | None  # the verified page of the paper (its arXiv or proceedings page)
    data: dict[str, Any] = field(default_factory=dict)
    prov: dict[str, str] = field(default_factory=dict)
    dis: list[dict[str, Any]] = field(default_factory=list)


class Importer:
    """Turns records into entries; one instance per run (it carries the taxonomy and the curated decisions)."""

    def __init__(self, taxonomy: Taxonomy, curated: dict[str, tuple[CuratedPlacement, int]]):
        self.tax = taxonomy
        self.curated = curated
        self.notes: list[str] = []

    # ---------------------------------------------------------------- facts
    def propose(self, rec: Record) -> Proposal:
        """The facts of one paper from its rows, each with its source, and the disagreements among the sources."""
        v = rec.verified.row if rec.verified else None
        page = None
        if v:
            page = v.sources.get("title") or (arxiv_url(v.arxiv_id) if is_arxiv_id(v.arxiv_id) else None)
        f = _Facts(rec, rec.primary, v, rec.authors.row if rec.authors else None, page)
        for step in (self._title, self._short_name, self._identifiers, self._authors, self._venue_and_year, self._code,
                     self._summary_and_claims):
            step(f)
        # a verifier who found nothing (every fact null) did not verify the entry
        verified_on = _date(v.verified_on) if v and (v.title or v.authors or is_arxiv_id(v.arxiv_id)) else None
        return Proposal(data=f.data, provenance=f.prov, disagreements=f.dis, verified_on=verified_on)

    def _title(self, f: "_Facts") -> None:
        """The title: verified > the list's (or the spelling that carries the method name); variants are reported."""
        rec, seed, v, a, data, prov, dis, verified_page = f.rec, f.seed, f.v, f.a, f.data, f.prov, f.dis, f.page
        title_values: dict[str, str] = {}
        if v and v.title and (v.sources.get("title") or not seed):
            data["title"], prov["title"] = " ".join(v.title.split()), v.sources.get("title") or verified_page
        elif seed:
            data["title"], prov["title"] = seed.title, seed.source
            others = [(s.row.source, s.row.title) for s in rec.seeds[1:]] + (
                [(a.source, a.title_in_source)] if a and a.title_in_source else [])
            named = _name_prefixed_variant(seed.title, others)
            if named:
                prov["title"], data["title"] = named
            if _shouting(data["title"]):  # the same title in ordinary case, when another source writes it so
                calm = next(((src, t) for src, t in others if _same_title(t, data["title"]) and not _shouting(t)), None)
                if calm:
                    prov["title"], data["title"] = calm
        # else: a correction row without a title; it can only update an existing entry (checked in plan_import)
        for s in rec.seeds:
            title_values.setdefault(s.row.source, s.row.title)
            if s.row.source in title_values and title_values[s.row.source] != s.row.title:
                title_values[f"{s.row.source} (another row)"] = s.row.title
        if a and a.title_in_source:
            title_values.setdefault(a.source, a.title_in_source)
        if v and "title" in v._superseded:
            title_values.setdefault(*v._superseded["title"])
        if v and v.title and v.sources.get("title") and "title" in data:
            title_values[v.sources["title"]] = data["title"]
        variants = {}
        for src, t in title_values.items():
            if not any(_same_title(t, u) for u in variants.values()):
                variants[src] = t
        if len(variants) > 1 and "title" in data:
            merged = len(rec.seeds) > 1
            if v and v.title and prov["title"] != getattr(seed, "source", None):
                why = "the official title on the paper's own page"
            elif seed and data["title"] != seed.title:
                why = ("not verified yet: the spelling that carries the method's name before the colon (the other "
                       "list drops it)")
            else:
                why = "not verified yet: the title of the list the row was taken from"
            if merged:
                why = "the same paper is listed twice under different titles (rows merged); kept " + why
            d = _disagreement("title", title_values, data["title"], why)
            if d:
                dis.append(d)

    def _short_name(self, f: "_Facts") -> None:
        """The method's name: before the colon of the kept title, else of another source's spelling of it."""
        if "title" not in f.data:
            return
        spellings = [(f.data["title"], f.prov["title"])] + [(s.row.title, s.row.source) for s in f.rec.seeds]
        if f.a and f.a.title_in_source:
            spellings.append((f.a.title_in_source, f.a.source))
        names = [(n, src) for n, src in ((short_name_of(t), src) for t, src in spellings) if n]
        if not names:
            return
        short, source = names[0]
        if _shouting(short) and len(short) > 6:  # "SAGEATTENTION" -> "SageAttention" when a source writes it so
            short, source = next(((n, s) for n, s in names if n.lower() == short.lower() and not _shouting(n)),
                                 (short, source))
        f.data["short_name"], f.prov["short_name"] = short, source

    def _identifiers(self, f: "_Facts") -> None:
        """arXiv id, DOI, primary class and paper link; an id or link that points elsewhere is reported."""
        rec, seed, v, a, data, prov, dis, verified_page = f.rec, f.seed, f.v, f.a, f.data, f.prov, f.dis, f.page
        seed_arxiv = next((s.row.arxiv_id for s in rec.seeds if s.row.arxiv_id), None)
        if v and is_arxiv_id(v.arxiv_id):
            data["arxiv"], prov["arxiv"] = v.arxiv_id, verified_page or arxiv_url(v.arxiv_id)
            if seed_arxiv and seed_arxiv != v.arxiv_id:
                dis.append({
                    "field": "arxiv", "values": {rec.seeds[0].row.source: seed_arxiv, prov["arxiv"]: v.arxiv_id},
                    "kept": v.arxiv_id, "why": "the arXiv page of the paper is the authority for its id",
                })
        elif seed_arxiv:
            src = next(s.row.arxiv_id_from or s.row.source for s in rec.seeds if s.row.arxiv_id)
            data["arxiv"], prov["arxiv"] = seed_arxiv, src
        for s in rec.seeds:  # a paper link that points at another arXiv id
            linked = arxiv_from_url(s.row.paper_url)
            reported = linked == s.row.arxiv_id and any(d["field"] == "arxiv" for d in dis)  # same fact as above
            if linked and data.get("arxiv") and linked != data["arxiv"] and is_arxiv_id(linked) and not reported:
                dis.append({
                    "field": "arxiv", "values": {f"{s.row.source} (paper link)": linked, prov["arxiv"]: data["arxiv"]},
                    "kept": data["arxiv"], "why": "the list's paper link points at a different arXiv id",
                })
        doi = (v.doi if v and v.doi else None) or next((doi_from_url(s.row.paper_url) for s in rec.seeds
                                                        if doi_from_url(s.row.paper_url)), None)
        if doi:
            data["doi"] = doi
            prov["doi"] = (verified_page if v and v.doi else next(s.row.source for s in rec.seeds
                                                                   if doi_from_url(s.row.paper_url)))
        if v and v.primary_class and re.fullmatch(r"[a-z-]+(\.[A-Za-z-]+)?", v.primary_class):
            data["primary_class"], prov["primary_class"] = v.primary_class, verified_page or "verified"
        paper_url = next((s.row.paper_url for s in rec.seeds if s.row.paper_url and not arxiv_from_url(s.row.paper_url)
                          and re.match(r"^https?://[^\s/$.?#][^\s]*$", s.row.paper_url)), None)
        if paper_url:
            data["paper_url"] = paper_url
            prov["paper_url"] = next(s.row.source for s in rec.seeds if s.row.paper_url == paper_url)
        elif "arxiv" in data:
            data["paper_url"] = arxiv_url(data["arxiv"])
            prov["paper_url"] = prov["arxiv"]

    def _authors(self, f: "_Facts") -> None:
        """Authors: verified > author list > unknown (never guessed)."""
        rec, seed, v, a, data, prov, dis, verified_page = f.rec, f.seed, f.v, f.a, f.data, f.prov, f.dis, f.page
        if v and v.authors and v.sources.get("authors"):
            names, dropped = _dedupe(v.authors)
            data["authors"], data["authors_status"], prov["authors"] = names, "complete", v.sources["authors"]
            if dropped:
                self.notes.append(f"{rec.verified.where}: author(s) listed twice, kept once: {dropped}")
            if a and a.authors != v.authors and _dedupe(a.authors)[0] != names:
                d = _disagreement("authors", {a.source: ", ".join(a.authors), v.sources["authors"]: ", ".join(names)},
                                  ", ".join(names), "the author list on the paper's own page")
                if d:
                    dis.append(d)
        elif a:
            names, dropped = _dedupe(a.authors)
            data["authors"], prov["authors"] = names, a.source
            data["authors_status"] = "truncated" if a.authors_truncated else "complete"
            if dropped:
                self.notes.append(f"{rec.authors.where}: author(s) listed twice, kept once: {dropped}")
        elif rec.seeds:
            data["authors"], data["authors_status"] = [], "unknown"
        if a and a.conflicting_sources and data["authors_status"] != "unknown":
            values = {a.source: ", ".join(a.authors)}
            for c in a.conflicting_sources:
                if c.authors:
                    values.setdefault(c.source, ", ".join(c.authors))
            if prov["authors"] not in values:
                values[prov["authors"]] = ", ".join(data["authors"])
            why = ("the author list on the paper's own page" if v and v.authors
                   else "the author list matched to the row by arXiv id or title; other lists differ (often another "
                        "version of the paper, or a different paper under a similar title)")
            d = _disagreement("authors", values, ", ".join(data["authors"]), why)
            if d and not any(x["field"] == "authors" for x in dis):
                dis.append(d)

    def _venue_and_year(self, f: "_Facts") -> None:
        """Venue (verified or listed conference > preprint) and the year that goes with it."""
        rec, seed, v, a, data, prov, dis, verified_page = f.rec, f.seed, f.v, f.a, f.data, f.prov, f.dis, f.page
        venue_values: dict[str, str] = {}
        for s in rec.seeds:
            try:
                nv = normalise_venue(s.row.venue, self.tax)
            except ValueError as exc:
                raise ProblemError([Problem(s.file, s.line, "venue", str(exc))]) from None
            if nv:
                venue_values.setdefault(s.row.source, nv)
        if a and a.venue:
            nv = venue_from_citation(a.venue, self.tax)
            if nv:
                venue_values.setdefault(a.source, nv)
        if v and "venue" in v._superseded:
            src, old = v._superseded["venue"]
            try:
                venue_values.setdefault(src, normalise_venue(old, self.tax))
            except ValueError:
                pass
        verified_venue = None
        if v and v.venue:
            try:
                verified_venue = normalise_venue(v.venue, self.tax)
            except ValueError as exc:
                self.notes.append(f"{rec.verified.where}: verified venue not used: {exc}")
        listed_conference = {k: x for k, x in venue_values.items() if x != PREPRINT}
        if verified_venue == PREPRINT and listed_conference:
            src, data["venue"] = next(iter(listed_conference.items()))
            prov["venue"] = src
            venue_values[v.venue_source or v.sources.get("venue") or verified_page or "verified"] = PREPRINT
            why = ("a list names a conference or journal; the pages read during verification state none, which does "
                   "not contradict it (arXiv listings are often stale)")
        elif verified_venue:
            vsrc = v.venue_source or v.sources.get("venue") or verified_page or "verified"
            data["venue"], prov["venue"] = verified_venue, vsrc
            venue_values[vsrc] = verified_venue
            why = ("stated by the paper's own pages (arXiv comment, proceedings or official README)"
                   if verified_venue != PREPRINT else
                   "no page of the paper read during verification states an acceptance; lists may be stale or wrong")
        else:
            conf = {k: x for k, x in venue_values.items() if x != PREPRINT}
            if conf:
                src, data["venue"] = next(iter(conf.items()))
                prov["venue"] = src
                why = "a conference or journal named by a list outranks an arXiv listing, which is often stale"
            elif venue_values:
                src, data["venue"] = next(iter(venue_values.items()))
                prov["venue"] = src
                why = "no source names a conference or journal"
            elif seed:
                data["venue"] = PREPRINT
                prov["venue"] = f"no source read so far names a venue ({seed.source})"
                why = ""
            else:  # a correction row that says nothing about the venue
                why = ""
        if len(set(venue_values.values())) > 1:
            dis.append({"field": "venue", "values": venue_values, "kept": data["venue"], "why": why})
        parsed = self.tax.parse_venue(data["venue"]) if data.get("venue", PREPRINT) != PREPRINT else None
        v1 = _date(v.v1_date) if v else None
        if v1:
            data["first_version"], prov["first_version"] = v1, v.sources.get("v1_date") or verified_page
        if parsed:
            data["year"], prov["year"] = parsed[1], prov["venue"]
        elif v1:
            data["year"], prov["year"] = v1.year, prov["first_version"]
        elif v and v.year and v.sources.get("year"):
            data["year"], prov["year"] = v.year, v.sources["year"]
        elif data.get("arxiv") and ARXIV_NEW.match(data["arxiv"]):
            data["year"], prov["year"] = 2000 + int(data["arxiv"][:2]), prov["arxiv"]
        elif seed and seed.year:
            data["year"], prov["year"] = seed.year, seed.source
        # else: no year; enough to update an existing entry, not to create one (checked in plan_import)

    def _code(self, f: "_Facts") -> None:
        """The code link: an official one found by verification > the list's; differences are reported."""
        rec, seed, v, a, data, prov, dis, verified_page = f.rec, f.seed, f.v, f.a, f.data, f.prov, f.dis, f.page
        code_values: dict[str, str] = {}
        for s in rec.seeds:
            if s.row.code_url:
                code_values.setdefault(s.row.code_url_from or s.row.source, s.row.code_url)
        if v and "code_url" in v._superseded:
            code_values.setdefault(*v._superseded["code_url"])
        unconfirmed = v and v.code_url and not v.code_official and code_values and not any(
            _same_url(u, v.code_url) for u in code_values.values())
        if unconfirmed:  # a list's link is not replaced by a repository nobody confirmed as the authors'
            csrc = v.code_source or v.sources.get("code_url") or verified_page or "verified"
            src, url = next(iter(code_values.items()))
            data["code"], prov["code"] = [{"url": normalise_url(url), "official": None}], src
            dis.append({"field": "code", "values": {**code_values, csrc: normalise_url(v.code_url)},
                        "kept": data["code"][0]["url"],
                        "why": "the repository found during verification is not confirmed as the authors'; the "
                               "list's link is kept (not confirmed either)"})
        elif v and v.code_url:
            csrc = v.code_source or v.sources.get("code_url") or verified_page or "verified"
            data["code"] = [{"url": normalise_url(v.code_url), "official": v.code_official}]
            prov["code"] = csrc
            distinct = [u for u in code_values.values() if not _same_url(u, v.code_url)]
            if distinct:
                code_values[csrc] = normalise_url(v.code_url)
                dis.append({
                    "field": "code", "values": code_values, "kept": data["code"][0]["url"],
                    "why": ("the repository the paper or its authors link" if v.code_official
                            else "the repository found during verification (not confirmed as official)"),
                })
        elif code_values:
            src, url = next(iter(code_values.items()))
            data["code"] = [{"url": normalise_url(url), "official": None}]  # a list's link: not verified
            prov["code"] = src
            if len({normalise_url(u).lower() for u in code_values.values()}) > 1:
                dis.append({"field": "code", "values": code_values, "kept": data["code"][0]["url"],
                            "why": "not verified yet: the link of the list the row was taken from"})
        # a code URL must look like a URL
        if data.get("code") and not re.match(r"^https?://[^\s/$.?#][^\s]*$", data["code"][0]["url"] or ""):
            self.notes.append(f"{rec.where}: code link {data['code'][0]['url']!r} is not a URL: dropped")
            data.pop("code")
            prov.pop("code", None)

    def _summary_and_claims(self, f: "_Facts") -> None:
        """Summary and claims come from verified rows only; a claim the schema rejects is left out and noted."""
        rec, seed, v, a, data, prov, dis, verified_page = f.rec, f.seed, f.v, f.a, f.data, f.prov, f.dis, f.page
        if v and v.summary:
            data["summary"] = " ".join(v.summary.split())
            prov["summary"] = v.sources.get("summary") or verified_page or "verified"
        if v and v.claims:
            claims = []
            for i, c in enumerate(v.claims):
                c = {k: x for k, x in c.items() if x is not None}
                m = re.match(r"^(https?://\S+)\s+\((.+)\)$", str(c.get("source", "")))
                if m:
                    c["source"], c["where"] = m.group(1), f"{c.get('where', 'source')} ({m.group(2)})"
                if isinstance(c.get("setting"), dict):
                    c["setting"] = {k: str(x) for k, x in c["setting"].items() if x is not None}
                try:
                    claims.append(Claim.model_validate(c, context={"taxonomy": self.tax}).model_dump(
                        mode="python", exclude_defaults=True))
                except ValidationError as exc:
                    msg = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
                    self.notes.append(f"{rec.verified.where}: claim {i + 1} not used: {msg}")
            if claims:
                data["claims"] = claims
                prov["claims"] = claims[0]["source"]

    # ---------------------------------------------------------------- placement
    def curated_for(self, rec: Record, paper_id: str | None, arxiv: str | None) -> tuple[CuratedPlacement, str] | None:
        for key in (arxiv, *(rec.arxiv_ids()), paper_id):
            if key and key in self.curated:
                return self.curated[key][0], key
        return None

    def place(self, rec: Record, prop: Proposal, paper_id: str, existing: Paper | None = None) -> None:
        """Fill placement, modality and training (and their provenance) into the proposal."""
        data, prov = prop.data, prop.provenance
        seed = rec.primary
        v = rec.verified.row if rec.verified else None
        curated = self.curated_for(rec, paper_id, data.get("arxiv") or (existing.arxiv if existing else None))
        decision = curated[0] if curated else None
        survey_maps: list[CategoryMapping] = []
        if seed and seed.survey_placement:
            for cat in seed.survey_placement:
                m = self.tax.survey_mapping(cat)
                if m is None:
                    s = rec.seeds[0]
                    raise ProblemError([Problem(s.file, s.line, "survey_placement",
                                                f"survey category {cat!r} has no mapping in taxonomy.yaml")])
                survey_maps.append(m)
        source_map = None
        if seed and not survey_maps and seed.source_category:
            source_map = self.tax.source_mapping(seed.source.split(":", 1)[0], seed.source_category)
        maps = survey_maps or ([source_map] if source_map else [])
        if survey_maps:
            mapping_source = f"the survey's placement {' + '.join(seed.survey_placement)} ({seed.source})"
        elif source_map:
            mapping_source = f"mapped from the category {seed.source_category!r} ({seed.source})"
        else:
            mapping_source = None

        survey_placement = None
        if survey_maps:
            survey_placement = {
                "techniques": _union(m.techniques for m in survey_maps),
                "cells": _union(m.cells for m in survey_maps),
            }
        if decision and decision.techniques:
            placement = {"cells": decision.cells, "techniques": decision.techniques, "method": "curated"}
            basis = "the title and abstract" if decision.basis == "abstract" else "the title only"
            prov["placement"] = f"curated from {basis} ({CURATED_SOURCE})"
            note = decision.note
            if survey_placement and (set(survey_placement["cells"]) != set(decision.cells)
                                     or set(survey_placement["techniques"]) != set(decision.techniques)):
                if not note:
                    key = curated[1]
                    raise ProblemError([Problem(CURATED_SOURCE, self.curated[key][1], key,
                                                "differs from the survey's own placement: say why in `note`")])
            if note:
                placement["note"] = note
        elif survey_placement:
            placement = {**survey_placement, "method": "survey"}
            prov["placement"] = mapping_source
            doubts = [m.note or "curate" for m in survey_maps if m.ambiguous]
            if doubts:
                placement.update(needs_review=True, note=f"ambiguous survey category ({'; '.join(doubts)})")
        elif source_map and not source_map.ambiguous:
            placement = {"cells": list(source_map.cells), "techniques": list(source_map.techniques), "method": "mapped"}
            prov["placement"] = mapping_source
        elif source_map:
            placement = {"cells": list(source_map.cells), "techniques": list(source_map.techniques),
                         "method": "mapped", "needs_review": True,
                         "note": f"ambiguous list category ({source_map.note or 'curate'}): proposal only"}
            prov["placement"] = f"mapped from the ambiguous category {seed.source_category!r} ({seed.source})"
        elif existing is not None:
            placement = existing.placement.model_dump(mode="python", exclude_defaults=True)
            if "placement" in existing.provenance:
                prov["placement"] = existing.provenance["placement"]
            maps = []
        else:
            where = rec.seeds[0] if rec.seeds else rec.verified
            raise ProblemError([Problem(where.file, where.line, "source_category",
                                        f"no placement: category {seed.source_category if seed else None!r} has no "
                                        f"mapping and {CURATED_SOURCE} has no decision for this paper")])
        data["placement"] = placement

        # modality: curated > verified > mapping
        modality, mod_src = None, None
        by_verifier = f"curated from the abstract ({v.sources.get('summary') or v.sources.get('title')})" if v else ""
        if decision and decision.modality:
            modality = decision.modality
            mod_src = prov.get("placement") if decision.techniques else f"curated ({CURATED_SOURCE})"
        elif v and v.modality and all(m in {x.id for x in self.tax.modalities} for m in v.modality):
            modality, mod_src = _union([v.modality]), by_verifier
        else:
            mods = [m.modality for m in maps if m.modality]
            if mods:
                modality, mod_src = _union(mods), mapping_source
            elif existing is not None:
                modality, mod_src = existing.modality, existing.provenance.get("modality")
        if not modality:
            modality, mod_src = ["image"], "not decided yet: no source or mapping gives the modality"
            data["placement"] = dict(data["placement"])
            data["placement"]["needs_review"] = True
            data["placement"].setdefault("note", "modality not decided yet")
        data["modality"] = modality
        if mod_src:
            prov["modality"] = mod_src
        training, tr_src = None, None
        if decision and decision.training:
            training, tr_src = decision.training, f"curated ({CURATED_SOURCE})"
        elif v and v.training in ("training-free", "training-aware"):
            training, tr_src = v.training, by_verifier
        else:
            regimes = {m.training for m in maps if m.training}
            if len(regimes) == 1:
                training, tr_src = regimes.pop(), mapping_source
            elif not maps and existing is not None:
                training, tr_src = existing.training, existing.provenance.get("training")
        data["training"] = training
        if tr_src and training:
            prov["training"] = tr_src
        if decision and decision.short_name:
            data["short_name"], prov["short_name"] = decision.short_name, f"curated ({CURATED_SOURCE})"


# ------------------------------------------------------------------------------------------------ sources
TITLE_ONLY_NOTE = "placed from the title only: read the abstract"
LIST_ONLY_NOTE = "placed from a list's category only ({category}, {repo}): read the abstract"
_LIST_POINTER = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+:[^@()]*?@[0-9a-f]{7,40}")
_CATEGORY = re.compile(r"^(?:mapped from the (?:ambiguous )?category '(?P<category>.*)'|the survey's placement "
                       r"(?P<survey>.+?)) \(")
# List commits that the list's public history does not have (checked on a clone of the repository, 2026-12-04: the
# survey repository's public head is bd2bf45 of 2026-04-08): a row citing one cannot be checked, so it is not recorded.
UNPUBLISHED_LIST_COMMITS = frozenset({("sudis-zju/efficient-lvlms-inference", "1ab1451")})
_SEED_LISTING = re.compile(r"^seed document \S+ \(an arXiv listing of (?P<arxiv>\S+) ")


def _address_in(text: str) -> str | None:
    """The public address a provenance text of the importer names ("curated from the abstract (URL)", "URL (note)",
    an http address, the seed document of an arXiv listing), or None."""
    text = text.strip()
    if text.startswith("http://"):
        text = "https://" + text[len("http://"):]
    if sources.is_address(text):
        return text
    seed = _SEED_LISTING.match(text)
    if seed and is_arxiv_id(seed["arxiv"]):
        return arxiv_url(seed["arxiv"])
    inner = re.match(r"^curated from the (?:title and )?abstract \((.*)\)$", text)
    if inner:
        return _address_in(inner.group(1))
    head = re.match(r"^(https?://\S+?|[A-Za-z0-9][\w.-]*/[\w.-]+:[^@()]*?@[0-9a-f]{7,40}) \(", text)
    return _address_in(head.group(1)) if head else None


def entry_sources(data: dict[str, Any], paper_lists: frozenset[str]) -> list[str]:
    """Turn the importer's bookkeeping into an entry's sources, in place; returns what was dropped, one line each.

    The importer tracks where each value came from, paper lists included ("owner/list:README.md@abc1234",
    "mapped from the category 'X' (owner/list:...)", "curated from the title only (tools/data/...)"). An entry
    keeps only public addresses (tools/provenance.py): a pointer into a paper list (``paper_lists``) goes to
    ``listed_in``; "curated from the abstract (URL)" and "URL (note)" keep the URL; a copy of the arXiv page (also
    as a claim's source) becomes its canonical address with ``read_via``; anything else is dropped (the fact stays,
    unsourced). A placement whose
    only basis was the title or a list's category is flagged ``needs_review`` with a note saying so. Disagreement
    sources that are not addresses (local files, notes) are dropped, and a disagreement left with one source goes.
    Running it twice changes nothing.
    """
    dropped: list[str] = []
    listed = list(data.get("listed_in") or [])
    read_via = dict(data.get("read_via") or {})

    def list_pointers(text: str) -> list[str]:
        return [m.group(0) for m in _LIST_POINTER.finditer(text)
                if sources.repository_of(m.group(0)) in paper_lists and not unpublished(m.group(0))]

    def unpublished(pointer: str) -> bool:
        match = sources.LISTING.match(pointer.split(" (", 1)[0])
        return bool(match) and (match["repo"].lower(), match["commit"][:7]) in UNPUBLISHED_LIST_COMMITS

    def note_list(text: str) -> None:
        for pointer in list_pointers(text):
            if pointer not in listed:
                listed.append(pointer)

    provenance = {}
    flagged = None
    for name, value in (data.get("provenance") or {}).items():
        note_list(value)
        found = _address_in(value)
        if found and sources.POINTER.match(found) and sources.repository_of(found) in paper_lists:
            found = None  # a list is not a source
        if found:
            canonical = sources.canonical_arxiv_address(found, data.get("arxiv"))
            if canonical:
                read_via.setdefault(canonical, found)
                found = canonical
            provenance[name] = found
            continue
        dropped.append(f"provenance.{name}: {value}")
        if name == "placement":
            category = _CATEGORY.match(value)
            if "from the title only" in value:
                flagged = TITLE_ONLY_NOTE
            elif category:
                repos = sorted({sources.LISTING.match(m.group(0))["repo"] for m in _LIST_POINTER.finditer(value)
                                if sources.repository_of(m.group(0)) in paper_lists})
                flagged = LIST_ONLY_NOTE.format(category=category["category"] or category["survey"],
                                                repo=", ".join(repos) or "a paper list")
    data["provenance"] = provenance
    for claim in data.get("claims") or []:
        found = _address_in(claim["source"]) if isinstance(claim, dict) and claim.get("source") else None
        if found:
            canonical = sources.canonical_arxiv_address(found, data.get("arxiv"))
            if canonical:
                read_via.setdefault(canonical, found)
                found = canonical
            claim["source"] = found
    placement = data.get("placement")
    if flagged and placement is not None:
        placement = dict(placement)
        note = placement.get("note") or ""
        if not note.startswith(("placed from the title only", "placed from a list's category")):
            placement["note"] = f"{flagged}. {note}".strip() if note else flagged
        placement["needs_review"] = True
        data["placement"] = placement
    kept_disagreements = []
    for d in data.get("disagreements") or []:
        values = {}
        for key, value in d["values"].items():
            if unpublished(key):
                dropped.append(f"disagreements ({d['field']}): source at an unpublished commit {key}")
                continue
            head = key
            if sources.disagreement_source_problem(key):
                head = _address_in(key) or (list_pointers(key) or [None])[0]
                if head and sources.disagreement_source_problem(head):
                    head = None
            if head is None:
                dropped.append(f"disagreements ({d['field']}): source {key}")
                continue
            values.setdefault(head, value)
        if len(values) >= 2 and len(set(values.values())) >= 2:
            kept_disagreements.append({**d, "values": values})
        else:
            dropped.append(f"disagreements ({d['field']}): fewer than two sources left")
    data["disagreements"] = kept_disagreements
    data["listed_in"] = [x for x in listed if not unpublished(x)]
    cited = set(provenance.values()) | {c["source"] for c in data.get("claims") or [] if isinstance(c, dict)}
    data["read_via"] = {k: v for k, v in read_via.items() if k in cited and k != v}
    return dropped


def _union(lists: Iterable[Iterable[str]]) -> list[str]:
    out: list[str] = []
    for items in lists:
        for x in items:
            if x not in out:
                out.append(x)
    return out


# ============================================================================================ existing entries
@dataclass
class Existing:
    papers: dict[str, Paper]
    files: dict[str, Path]

    def index(self) -> dict[tuple, str]:
        idx: dict[tuple, str] = {}
        for pid, p in self.papers.items():
            if p.arxiv:
                idx.setdefault(("arxiv", p.arxiv), pid)
            if p.doi:
                idx.setdefault(("doi", p.doi.lower()), pid)
            idx.setdefault(("title", normalise_title(p.title)), pid)
            for d in p.disagreements:
                if d.field == "title":
                    for t in d.values.values():
                        idx.setdefault(("title", normalise_title(t)), pid)
                if d.field == "arxiv":
                    for t in d.values.values():
                        idx.setdefault(("arxiv", t), pid)
        return idx


def load_existing(papers_dir: Path, taxonomy: Taxonomy) -> Existing:
    """The entries already in ``papers_dir``; any invalid one stops the import (fix it first)."""
    papers, files, problems = {}, {}, []
    for path in paper_files(papers_dir):
        paper, _, probs = validate_file(path, taxonomy)
        problems += [p for p in probs if "reference_impls" not in p.field]
        if paper is not None:
            papers[paper.id], files[paper.id] = paper, path
    if problems:
        raise ProblemError(problems)
    return Existing(papers, files)


FACT_FIELDS = ("title", "arxiv", "doi", "primary_class", "paper_url", "authors", "venue", "year", "first_version",
               "code", "short_name")
FILL_ONLY_FIELDS = ("summary", "claims")
PRESERVED_FIELDS = ("reference_impls", "frontiers", "distinct_from", "bibtex_key")


def merge_with_existing(old: Paper, prop: Proposal, rec: Record,
                        paper_lists: frozenset[str] = frozenset()) -> tuple[dict[str, Any], list[str]]:
    """The entry data after re-import, and a line per value that was kept against a different proposal.

    A value is replaced only when the importer can tell where it came from (its provenance names one of this
    paper's inputs, or a paper list) and the proposal comes from a source of at least the same authority:
    verified page > author list > paper list. A value whose source is not among the inputs (set by hand, or read
    from a verified file not passed this time) is kept. An unsourced value (one a list gave) is replaced only by a
    value read on a page, never by another list's; and a value read on the same page as a verified input, but in a
    verification later than that input's (``add --from``), is kept.
    """
    data = old.model_dump(mode="python")
    reread_later = prop.verified_on is not None and old.last_verified > prop.verified_on
    prov = dict(old.provenance)
    kept: list[str] = []
    kept_fields: set[str] = set()
    new = prop.data
    for name in FACT_FIELDS + ("modality", "training"):
        if name not in new:
            continue
        value, current = new[name], data.get(name)
        old_rank, new_rank = rec.rank(prov.get(name), existing=True), rec.rank(prop.provenance.get(name))
        if prov.get(name) is None and not _is_page(prop.provenance.get(name), rec, paper_lists):
            old_rank = None  # a list is no source: it fills a gap but replaces nothing
        elif old_rank == 3 and reread_later:
            old_rank = None
        if _comparable(current) == _comparable(value):
            if name in prop.provenance and old_rank is not None and new_rank is not None and new_rank >= old_rank:
                prov[name] = prop.provenance[name]
            continue
        if current in (None, [], "") or (old_rank is not None and new_rank is not None and new_rank >= old_rank):
            data[name] = value
            if name == "authors":
                data["authors_status"] = new["authors_status"]
            if name in prop.provenance:
                prov[name] = prop.provenance[name]
            else:
                prov.pop(name, None)
        else:
            kept_fields.add(name)
            kept.append(f"{name}: kept {_short(current)} ({prov.get(name, 'no provenance')}, not among these "
                        f"inputs or of higher authority); inputs propose {_short(value)} ({prop.provenance.get(name)})")
    for name in FILL_ONLY_FIELDS:  # filled when empty, never overwritten
        if name in new and not data.get(name):
            data[name] = new[name]
            prov[name] = prop.provenance[name]
    # placement: recomputed when the importer decided it (survey, mapped, or the curated-placements file)
    if old.placement.method in ("survey", "mapped") or CURATED_SOURCE in prov.get("placement", ""):
        data["placement"] = new["placement"]
        if "placement" in prop.provenance:
            prov["placement"] = prop.provenance["placement"]
    elif _comparable(data["placement"]) != _comparable(new["placement"]):
        kept.append(f"placement: kept {_short(data['placement'])} (curated in the entry); inputs propose "
                    f"{_short(new['placement'])}")
    data["disagreements"] = _merge_disagreements(data.get("disagreements") or [], prop.disagreements, rec,
                                                 {"code" if f == "code" else f for f in kept_fields})
    data["provenance"] = prov
    return data, kept


def _is_page(source: str | None, rec: Record, paper_lists: frozenset[str]) -> bool:
    """A public address that is not a paper list (``paper_lists``, or a list this paper's rows come from)."""
    source = _address_in(source) if source else None
    if not source:
        return False
    repo = sources.repository_of(source) if sources.POINTER.match(source) else None
    return repo is None or repo not in paper_lists | _list_repos(rec)


def _list_repos(rec: Record) -> set[str]:
    found = {sources.repository_of(x) for s in rec.seeds
             for x in (s.row.source, *(s.row.also_in or []), s.row.arxiv_id_from, s.row.code_url_from) if x}
    return found - {None}


def _merge_disagreements(existing: list[dict], own: list[dict], rec: Record, kept_fields: set[str]) -> list[dict]:
    """The importer's disagreements, plus existing ones it cannot reproduce from these inputs (added by hand, or
    recorded from a verified file not passed this time). For a field whose value was kept against the inputs, the
    existing disagreements stay as they are; an own disagreement equal to an existing one (same values and kept
    value) keeps the existing wording; one that an existing one already covers is left out."""
    own = [d for d in own if d["field"] not in kept_fields]
    same = {(_dis_key(e), e["kept"]): e for e in existing}
    own = [same.get((_dis_key(d), d["kept"]), d) for d in own]
    own_keys = {_dis_key(d) for d in own}
    carried = [d for d in existing if _dis_key(d) not in own_keys
               and (d["field"] in kept_fields or any(rec.rank(k) is None for k in d["values"]))]
    covered = [
        d for d in own
        if any(e["field"] == d["field"] and set(d["values"].items()) <= set(e["values"].items()) for e in carried)
    ]
    chosen = [d for d in own if d not in covered] + carried
    return [e for e in existing if e in chosen] + [d for d in chosen if d not in existing]  # existing order first


def _dis_key(d: dict) -> tuple:
    return d["field"], tuple(sorted(d["values"].items()))


def _comparable(value: Any) -> Any:
    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if v not in (None, False, [], {})}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return json.dumps(strip(value), sort_keys=True, default=str)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 90 else text[:87] + "..."


# ============================================================================================ the run
def plan_import(
    rows: list[Path],
    *,
    authors: list[Path] = (),
    verified: list[Path] = (),
    curated_path: Path = CURATED_PLACEMENTS,
    papers_dir: Path = PAPERS_DIR,
    taxonomy: Taxonomy | None = None,
    today: dt.date | None = None,
    rejected_path: Path | None = None,
) -> ImportReport:
    """Read and check every input, join the rows per paper, and compute each entry; writes nothing. A paper on the
    rejected list (tools/rejected.py; by arXiv id, or the id its entry had) is left out and reported."""
    from tools.rejected import REJECTED_PATH, read_rejected

    rejected = read_rejected(rejected_path or REJECTED_PATH)
    tax = taxonomy or load_taxonomy()
    today = today or dt.date.today()
    problems: list[Problem] = []
    seeds, author_rows, verified_rows = [], [], []
    for path, model, bucket in ([(p, SeedRow, seeds) for p in rows] + [(p, AuthorRow, author_rows) for p in authors]
                                + [(p, VerifiedRow, verified_rows) for p in verified]):
        good, bad = parse_jsonl(path, model)
        bucket.extend(good)
        problems.extend(bad)
    for s in seeds:
        if s.row.arxiv_id is not None and not is_arxiv_id(s.row.arxiv_id):
            problems.append(Problem(s.file, s.line, "arxiv_id", f"{s.row.arxiv_id!r} is not an arXiv id "
                                                                "(2403.06764 or hep-th/9901001, no version)"))
        if s.row.arxiv_id is None and not s.row.paper_url:
            problems.append(Problem(s.file, s.line, "paper_url", "a row without an arXiv id needs a paper_url"))
        try:
            normalise_venue(s.row.venue, tax)
        except ValueError as exc:
            problems.append(Problem(s.file, s.line, "venue", str(exc)))
        if not s.row.survey_placement and not s.row.source_category:
            problems.append(Problem(s.file, s.line, "source_category", "give source_category or survey_placement"))
    try:
        curated = read_curated(curated_path, tax)
    except ProblemError as exc:
        problems.extend(exc.problems)
        curated = {}
    if problems:
        raise ProblemError(problems)

    records, notes = group_records(seeds, author_rows, verified_rows)
    existing = load_existing(papers_dir, tax)
    index = existing.index()
    importer = Importer(tax, curated)
    report = ImportReport(notes=notes)
    taken_ids = set(existing.papers)
    planned: list[tuple[Record, Proposal, str | None]] = []
    claimed: dict[str, str] = {}
    for rec in records:
        refusal = next((rejected.refusal(a) for a in rec.arxiv_ids() if rejected.refusal(a)), None)
        if refusal:
            report.notes.append(f"{rec.where}: arXiv {rec.arxiv_ids()[0]} left out: {refusal}")
            continue
        try:
            prop = importer.propose(rec)
        except ProblemError as exc:
            problems.extend(exc.problems)
            continue
        match = _match(rec, prop, index)
        if match and match in claimed:
            problems.append(Problem(*_file_line(rec.where), "", f"the same entry papers/{match}.yaml also matches "
                                    f"{claimed[match]}: merge the rows or fix the one that is wrong"))
            continue
        if match:
            claimed[match] = rec.where
        if match is None and ("title" not in prop.data or "year" not in prop.data):
            missing = " and ".join(f for f in ("title", "year") if f not in prop.data)
            problems.append(Problem(*_file_line(rec.where), "", f"no {missing}: the inputs give neither (nor a venue "
                                    "year or arXiv id), so no new entry can be made, and no existing entry matches"))
            continue
        if rec.seeds == [] and match is None and not importer.curated_for(rec, None, prop.data.get("arxiv")):
            problems.append(Problem(*_file_line(rec.where), "", "a verified paper that is new to the catalogue needs "
                                    f"a placement decision in {CURATED_SOURCE}"))
            continue
        planned.append((rec, prop, match))
    if problems:
        raise ProblemError(problems)

    new_ids = _assign_ids([(rec, prop) for rec, prop, match in planned if match is None], taken_ids, importer)
    for rec, prop, match in planned:
        pid = match or new_ids[id(rec)]
        if match is None and rejected.refusal(paper_id=pid):
            report.notes.append(f"{rec.where}: {pid} left out: {rejected.refusal(paper_id=pid)}")
            continue
        try:
            importer.place(rec, prop, pid, existing.papers.get(match) if match else None)
        except ProblemError as exc:
            problems.extend(exc.problems)
            continue
        if match:
            old = existing.papers[match]
            data, kept = merge_with_existing(old, prop, rec, tax.paper_list_repos)
            path = existing.files[match]
        else:
            data, kept = dict(prop.data), []
            if "authors" not in data:
                data["authors"], data["authors_status"] = [], "unknown"
            data.setdefault("venue", PREPRINT)
            data["id"] = pid
            data["provenance"] = prop.provenance
            data["disagreements"] = prop.disagreements
            path = paper_path(pid, papers_dir)
        data["id"] = pid
        data.setdefault("last_verified", today)
        # provenance in the schema's field order, so a fresh import and a re-import write the same bytes
        data["provenance"] = {k: data["provenance"][k] for k in PROVENANCE_FIELDS if k in data["provenance"]}
        entry_sources(data, tax.paper_list_repos | _list_repos(rec))
        try:
            paper = _build_dropping_bad_summary(data, tax, path, report, rec)
        except ProblemError as exc:
            problems += [Problem(*_file_line(rec.where), p.field, f"would write an invalid papers/{pid}.yaml: "
                                 f"{p.message}") for p in exc.problems]
            continue
        text = dump_entry(to_yaml_data(paper))
        if match:
            old_text = Path(path).read_text(encoding="utf-8")
            if text == old_text:
                report.changes.append(Change(paper, path, "unchanged", text, rec.where, kept))
                continue
            if _without_date(text) == _without_date(old_text):
                report.changes.append(Change(paper, path, "unchanged", old_text, rec.where, kept))
                continue
            if _facts_of(paper) != _facts_of(existing.papers[match]):  # not for a list or a review note only
                paper = paper.model_copy(update={"last_verified": prop.verified_on or today})
            text = dump_entry(to_yaml_data(paper))
            report.changes.append(Change(paper, path, "update", text, rec.where, kept))
        else:
            paper = paper.model_copy(update={"last_verified": prop.verified_on or today})
            text = dump_entry(to_yaml_data(paper))
            report.changes.append(Change(paper, path, "create", text, rec.where, kept))
    if problems:
        raise ProblemError(problems)
    report.notes.extend(importer.notes)
    return report


def _build_dropping_bad_summary(data: dict, tax: Taxonomy, path: Path, report: ImportReport, rec: Record) -> Paper:
    """Validate the entry; a verified summary the schema rejects (too long, too many sentences) is left out and
    reported rather than stopping the import."""
    try:
        return build_paper(_clean(data), tax, label=display_path(path))
    except ProblemError as exc:
        if data.get("summary") and all(p.field == "summary" for p in exc.problems):
            report.notes.append(f"{rec.where}: summary not used: {exc.problems[0].message}")
            data = {k: v for k, v in data.items() if k != "summary"}
            data["provenance"] = {k: v for k, v in data["provenance"].items() if k != "summary"}
            return build_paper(_clean(data), tax, label=display_path(path))
        raise


def _facts_of(paper: Paper) -> dict[str, Any]:
    """An entry without its bookkeeping (the lists that carry it, the review state of its placement, the date)."""
    data = paper.model_dump(mode="json", exclude={"last_verified", "listed_in"})
    data["placement"] = {k: v for k, v in data["placement"].items() if k not in ("note", "needs_review")}
    return data


def _without_date(text: str) -> str:
    return re.sub(r"(?m)^last_verified: .*$", "", text)


def _clean(data: dict[str, Any]) -> dict[str, Any]:
    """Drop empty optional values (the writer leaves them out anyway) so validation sees what is written."""
    out = {}
    for k, v in data.items():
        if v is None and k not in ("training",):
            continue
        out[k] = v
    return out


def _file_line(where: str) -> tuple[str, int]:
    file, _, line = where.rpartition(":")
    return (file, int(line)) if line.isdigit() else (where, 1)


def _match(rec: Record, prop: Proposal, index: dict[tuple, str]) -> str | None:
    """The existing entry describing this paper: by arXiv id, then DOI, then a normalised title."""
    keys = [("arxiv", a) for a in ([prop.data.get("arxiv")] + rec.arxiv_ids()) if a]
    keys += [("doi", d) for d in ([prop.data["doi"].lower()] if prop.data.get("doi") else []) + rec.dois()]
    keys += [("title", normalise_title(t)) for t in [prop.data.get("title"), *rec.titles()] if t]
    for key in keys:
        if key in index:
            return index[key]
    return None


def _assign_ids(new: list[tuple[Record, Proposal]], taken: set[str], importer: Importer) -> dict[int, str]:
    """Stable ids for new entries: the short name (or first significant title words) and the year. Papers that
    would share an id all get a longer one (the next title words), so the order of rows never decides."""
    cands = {}
    for rec, prop in new:
        short = prop.data.get("short_name")
        curated = importer.curated_for(rec, None, prop.data.get("arxiv"))
        if curated and curated[0].short_name:
            short = curated[0].short_name
            prop.data["short_name"] = short
            prop.provenance["short_name"] = f"curated ({CURATED_SOURCE})"
        cands[id(rec)] = id_candidates(prop.data["title"], short, prop.data["year"])
    first = {}
    for key, c in cands.items():
        first.setdefault(c[0], []).append(key)
    out: dict[int, str] = {}
    for key, c in cands.items():
        options = c if (len(first[c[0]]) == 1 and c[0] not in taken) else c[1:] or c
        chosen = next((o for o in options if o not in taken and o not in out.values()), None)
        n = 2
        while chosen is None:
            trial = f"{options[-1].rsplit('-', 1)[0]}-{n}-{options[-1].rsplit('-', 1)[1]}"
            chosen = trial if trial not in taken and trial not in out.values() else None
            n += 1
        out[key] = chosen
    return out


def apply_import(report: ImportReport) -> list[Path]:
    """Write every created or changed entry (atomically, one file at a time); returns the paths written."""
    written = []
    for change in report.changes:
        if change.action in ("create", "update"):
            atomic_write(change.path, change.text)
            written.append(change.path)
    return written
