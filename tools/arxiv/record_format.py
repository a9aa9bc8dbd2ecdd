"""The verification record format (documented in CONTRIBUTING.md, "Verification records"): the record model, reading
a record file with file:line problems, and what a record says about each catalogue field and its sources."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from tools.catalogue import provenance as sources
from tools.catalogue.paths import display_path
from tools.catalogue.problems import Problem, ProblemError
from tools.catalogue.schema import PREPRINT
from tools.catalogue.yamlio import line_of, load_yaml_with_lines

MAX_RECORD_FILE_BYTES = 64 * 2**20  # JSON Lines are read line by line
MAX_YAML_FILE_BYTES = 16 * 2**20  # a YAML document is parsed whole
EXCLUDE_REASONS = ("out_of_scope", "wrong_id", "duplicate_of", "not_found")
RETIRED_FIELDS = ("title", "authors", "venue", "code", "arxiv", "year")


# ============================================================================================ the record format
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecordCode(_Strict):
    """A code repository named in a record; ``official`` when the paper or its authors name it."""

    url: str
    official: bool | None = None


class RecordPlacement(_Strict):
    """A record's placement: cells and techniques from taxonomy.yaml, with a review flag and note."""

    cells: list[str]
    techniques: list[str]
    needs_review: bool = False
    note: str | None = None


class VerificationRecord(_Strict):
    """One record (JSON object or YAML mapping); fields as in CONTRIBUTING.md."""

    arxiv: str | None = None
    id: str | None = None
    decision: Literal["include", "exclude"]
    exclude_reason: str | None = None
    title: str | None = None
    authors: list[str] | None = None
    authors_status: Literal["complete", "truncated", "unknown"] = "unknown"
    first_version: dt.date | None = None
    year: int | None = None
    venue: str | None = None
    venue_evidence: str | None = None
    venue_checked: bool = False
    venue_searched: dt.date | None = None
    doi: str | None = None
    primary_class: str | None = None
    short_name: str | None = None
    code: list[RecordCode] | None = None
    placement: RecordPlacement | None = None
    modality: list[str] | None = None
    training: str | None = None
    summary: str | None = None
    claims: list[dict[str, Any]] | None = None
    provenance: dict[str, str | None] = Field(default_factory=dict)
    read_via: dict[str, str | None] = Field(default_factory=dict)
    listed_in: list[str] | None = None
    distinct_from: list[str] | None = Field(
        default=None,
        description="catalogue ids or arXiv ids of papers with a similar title that are different papers",
    )
    checked: dt.date
    notes: str | None = Field(default=None, description="for the people who merge the records; not stored")

    @field_validator("provenance", "read_via", mode="before")
    @classmethod
    def _no_nulls(cls, value: Any) -> Any:
        return {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else value

    @field_validator("listed_in", mode="before")
    @classmethod
    def _split_listing(cls, value: Any) -> Any:
        if isinstance(value, str):  # "a/b@123; c/d@456", as the candidates list writes it
            return [x.strip() for x in value.split(";") if x.strip()]
        return value

    @field_validator("venue_searched")
    @classmethod
    def _searched_only_without_venue(cls, value: dt.date | None, info: ValidationInfo) -> dt.date | None:
        if value is not None and info.data.get("venue") not in (None, PREPRINT):
            raise ValueError(
                "only a preprint carries the date of a search that found no venue; this record gives a venue"
            )
        return value

    @field_validator("exclude_reason")
    @classmethod
    def _reason_kind(cls, value: str | None) -> str | None:
        if value is not None:
            kind, _, why = value.partition(":")
            if kind not in EXCLUDE_REASONS or not why.strip():
                raise ValueError(f"write '<kind>: <why>' with kind one of {', '.join(EXCLUDE_REASONS)}")
        return value


@dataclass
class Located:
    """A record with the file and line it was read from."""

    record: VerificationRecord
    file: str
    line: int

    def problem(self, field_name: str, message: str) -> Problem:
        """A problem about this record's field, at its file and line."""
        return Problem(self.file, self.line, field_name, message)


def _validation_problems(shown: str, line: int, exc: ValidationError) -> list[Problem]:
    out = []
    for err in exc.errors():
        kind = err.get("type", "")
        message = err["msg"].removeprefix("Value error, ")
        if kind == "extra_forbidden":
            message = "unknown field (not part of the record format)"
        elif kind == "missing":
            message = "required field is missing"
        out.append(Problem(shown, line, ".".join(map(str, err["loc"])), message))
    return out


def read_records(path: Path) -> tuple[list[Located], list[Problem]]:
    """The records of a JSON Lines file (one object per line) or a YAML file holding a list of mappings, and a problem
    (``file:line: field: message``) for each bad one."""
    shown = display_path(path)
    try:
        size = Path(path).stat().st_size
    except OSError as exc:
        return [], [Problem(shown, 1, "", f"cannot read the file: {exc.strerror or exc}")]
    items: list[tuple[int, Any]] = []
    problems: list[Problem] = []
    if Path(path).suffix in (".yaml", ".yml"):
        if size > MAX_YAML_FILE_BYTES:
            return [], [Problem(shown, 1, "", f"the file is larger than {MAX_YAML_FILE_BYTES // 2**20} MiB")]
        try:
            data, lines = load_yaml_with_lines(path, Path(path).read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            return [], [Problem(shown, 1, "", "not valid UTF-8")]
        except ProblemError as exc:
            return [], exc.problems
        if not isinstance(data, list):
            return [], [Problem(shown, 1, "", "a YAML file of records must be a list of mappings")]
        items = [(line_of(lines, (i,)), item) for i, item in enumerate(data)]
    else:
        if size > MAX_RECORD_FILE_BYTES:
            return [], [Problem(shown, 1, "", f"the file is larger than {MAX_RECORD_FILE_BYTES // 2**20} MiB")]
        try:
            with open(path, encoding="utf-8") as handle:
                for number, text in enumerate(handle, start=1):
                    if not text.strip():
                        continue
                    try:
                        items.append((number, json.loads(text)))
                    except json.JSONDecodeError as exc:
                        problems.append(Problem(shown, number, "", f"not valid JSON: {exc.msg} (column {exc.colno})"))
        except UnicodeDecodeError:
            return [], [Problem(shown, 1, "", "not valid UTF-8")]
    records = []
    for line, item in items:
        if not isinstance(item, dict):
            problems.append(Problem(shown, line, "", f"a record must be an object, not {type(item).__name__}"))
            continue
        try:
            records.append(Located(VerificationRecord.model_validate(item), shown, line))
        except ValidationError as exc:
            problems.extend(_validation_problems(shown, line, exc))
    return records, problems


# ============================================================================================ record -> entry
def _canonical(value: str, arxiv: str | None, read_via: dict[str, str]) -> str:
    """The address to cite: https for http, the arXiv page for a copy of it (the copy goes into read_via)."""
    if value.startswith("http://"):
        value = "https://" + value[len("http://") :]
    canonical = sources.canonical_arxiv_address(value, arxiv)
    if canonical:
        read_via.setdefault(canonical, value)
        return canonical
    return value


def _is_arxiv_page(url: str | None, arxiv: str | None) -> bool:
    return bool(url and arxiv and re.fullmatch(rf"https://arxiv\.org/(abs|html)/{re.escape(arxiv)}(v\d+)?", url))


def record_provenance(rec: VerificationRecord) -> tuple[dict[str, str], dict[str, str]]:
    """(provenance, read_via) of the facts the record gives: its own provenance, the venue evidence, and the facts
    the same page shows (arXiv id, primary class and the year of the arXiv page or proceedings page); copies of the
    arXiv page become its canonical address."""
    read_via = {k: v for k, v in rec.read_via.items() if k != v}
    copies = {copy: canonical for canonical, copy in read_via.items()}
    prov = {k: _canonical(copies.get(v, v), rec.arxiv, read_via) for k, v in rec.provenance.items() if v}
    if rec.venue_evidence and "venue" not in prov:
        prov["venue"] = _canonical(rec.venue_evidence, rec.arxiv, read_via)
    page = prov.get("title")
    if _is_arxiv_page(page, rec.arxiv):
        prov.setdefault("arxiv", page)
        if rec.primary_class:
            prov.setdefault("primary_class", page)
    if rec.year is not None and "year" not in prov:
        year_page = prov.get("venue") if rec.venue and rec.venue != PREPRINT else prov.get("first_version")
        if year_page:
            prov["year"] = year_page
    if rec.short_name and "short_name" not in prov:
        said = prov.get("title") if rec.title and rec.short_name in rec.title else prov.get("summary")
        if said:
            prov["short_name"] = said
    if "arxiv" in prov and rec.arxiv:
        prov.setdefault("paper_url", prov["arxiv"])
    return prov, read_via


def given_facts(rec: VerificationRecord) -> dict[str, Any]:
    """The facts the record speaks about (an empty or null value says nothing, and keeps what the entry has)."""
    out: dict[str, Any] = {}
    for name in (
        "title",
        "first_version",
        "year",
        "venue",
        "arxiv",
        "doi",
        "primary_class",
        "short_name",
        "training",
        "summary",
    ):
        value = getattr(rec, name)
        if value is not None:
            out[name] = value
    if rec.authors:
        out["authors"], out["authors_status"] = list(rec.authors), rec.authors_status
        if rec.authors_status == "unknown":
            out["authors_status"] = "complete"  # authors were read; "unknown" says the list is empty
    if rec.venue is not None:
        out["venue_checked"] = rec.venue_checked
    if rec.venue_searched is not None:
        out["venue_searched"] = rec.venue_searched
    if rec.code:
        out["code"] = [c.model_dump() for c in rec.code]
    if rec.placement is not None:
        placement = {"cells": rec.placement.cells, "techniques": rec.placement.techniques, "method": "curated"}
        if rec.placement.needs_review:
            placement["needs_review"] = True
        if rec.placement.note:
            placement["note"] = rec.placement.note
        out["placement"] = placement
    if rec.modality:
        out["modality"] = list(rec.modality)
    if rec.claims:
        out["claims"] = [_claim(c) for c in rec.claims]
    return out


QUALIFIERS = ("up to", "about", "more than", "at least")
QUALIFIER_SYNONYMS = {
    "over": "more than",
    "around": "about",
    "approximately": "about",
    "roughly": "about",
    "nearly": "about",
    "~": "about",
    "above": "more than",
}


def _claim(claim: dict[str, Any]) -> dict[str, Any]:
    """A record's claim in the schema's form: a qualifier that says more than "up to", "about", "more than" or
    "at least" keeps its leading word when it is one of them (or a synonym) and the rest becomes the claim's note
    ("up to; decode throughput" -> qualifier "up to", note "decode throughput"); nothing is dropped."""
    claim = dict(claim)
    text = claim.get("qualifier")
    if isinstance(text, str) and text not in QUALIFIERS:
        head = next(
            (q for q in (*QUALIFIERS, *QUALIFIER_SYNONYMS) if re.match(rf"{re.escape(q)}\b", text.lower())), None
        )
        rest = text[len(head) :].strip(" ;,:-") if head else text.strip()
        claim["qualifier"] = QUALIFIER_SYNONYMS.get(head, head) if head else None
        if rest:
            claim["note"] = f"{claim['note']}; {rest}" if claim.get("note") else rest
    return claim


def set_claim_source(claim: dict[str, Any], prov: dict[str, str], arxiv: str | None, read_via: dict[str, str]) -> None:
    """A claim's source as an address to cite; a claim without one was read where the record's claims were."""
    if not claim.get("source") and prov.get("claims"):
        claim["source"] = prov["claims"]
    if isinstance(claim.get("source"), str):
        claim["source"] = _canonical(claim["source"], arxiv, read_via)


def shown_value(name: str, value: Any) -> str:
    """A value as the disagreement report shows it: authors joined, the (official) code link, else the value."""
    if name == "authors":
        return ", ".join(value)
    if name == "code":
        official = [c["url"] for c in value if c.get("official")] or [c["url"] for c in value]
        return official[0] if official else ""
    return str(value)
