"""The paper schema: one YAML file per paper in ``papers/``, named ``<id>.yaml``.

Strict pydantic v2 models (an unknown key is an error). Rules that need the taxonomy (techniques, cells, metrics,
units, venues, modalities, training regimes) run with ``context={"taxonomy": Taxonomy}``; the JSON Schema written by
``python -m tools schema`` inlines the taxonomy's vocabularies so editors can complete them.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tools.catalogue import provenance as sources
from tools.catalogue.taxonomy import Taxonomy

ID_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
ARXIV_NEW = re.compile(r"^\d{4}\.\d{4,5}$")
ARXIV_OLD = re.compile(r"^[a-z]+(?:-[a-z]+)*(?:\.[A-Z]{2})?/\d{7}$")
ARXIV_VERSIONED = re.compile(r"^(?:\d{4}\.\d{4,5}|[a-z-]+(?:\.[A-Z]{2})?/\d{7})v\d+$")
DOI_PATTERN = r"^10\.\d{4,9}/\S+$"
URL_PATTERN = r"^https?://[^\s/$.?#][^\s]*$"
PREPRINT = "arXiv"

# Fields whose source a provenance record may name.
PROVENANCE_FIELDS = (
    "title",
    "authors",
    "year",
    "first_version",
    "venue",
    "arxiv",
    "doi",
    "primary_class",
    "paper_url",
    "code",
    "placement",
    "modality",
    "training",
    "summary",
    "claims",
    "short_name",
)

Url = Annotated[str, Field(pattern=URL_PATTERN, max_length=500)]
NonEmpty = Annotated[str, Field(min_length=1)]
IMPL_PATTERN = r"^reference_impls(\.[a-z_][a-z0-9_]*)+(:[A-Za-z_]\w*)?$"
ImplRef = Annotated[str, Field(pattern=IMPL_PATTERN)]


def _checked(problem_of):
    def check(value: str) -> str:
        problem = problem_of(value)
        if problem:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


# A public address: an https URL, or owner/repo:path@commit (tools/catalogue/provenance.py).
Source = Annotated[str, Field(min_length=1, max_length=500), _checked(sources.source_problem)]
SecureUrl = Annotated[str, Field(pattern=sources.URL.pattern, max_length=500)]
CopyUrl = Annotated[str, Field(pattern=URL_PATTERN, max_length=1000)]  # a copy read over http is recorded as it was
Listing = Annotated[str, Field(max_length=300), _checked(sources.listing_problem)]
DisagreementSource = Annotated[str, Field(min_length=1, max_length=500), _checked(sources.disagreement_source_problem)]


def _taxonomy(info: ValidationInfo) -> Taxonomy | None:
    return (info.context or {}).get("taxonomy")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=False)


class CodeLink(_Model):
    """A code repository of the paper; ``official`` when the paper or its authors name it."""

    url: Url
    official: bool | None = Field(
        description="true: the paper or its authors link this repository; false: a third-party one; null: not verified"
    )


class Placement(_Model):
    """Where the paper sits in the taxonomy: techniques and cells, how that was decided, and whether a review is
    owed."""

    cells: list[str] = Field(min_length=1, description="(stage, axis) cells, e.g. prefill.density")
    techniques: list[str] = Field(min_length=1, description="technique ids from taxonomy.yaml")
    method: Literal["survey", "mapped", "curated"] = Field(description="how the placement was decided")
    needs_review: bool = Field(
        default=False,
        description="a human judgement is still owed (e.g. decided from the title or a list's category only)",
    )
    note: str | None = Field(
        default=None, description="why the placement needs review, differs from the survey's, or is unusual"
    )

    @model_validator(mode="after")
    def _check_against_taxonomy(self, info: ValidationInfo) -> "Placement":
        for name, values in (("cells", self.cells), ("techniques", self.techniques)):
            if len(set(values)) != len(values):
                raise ValueError(f"{name} lists a value twice")
        tax = _taxonomy(info)
        if tax is not None:
            problems = tax.placement_problems(self.techniques, self.cells)
            if problems:
                raise ValueError("; ".join(problems))
        return self


class ClaimSetting(_Model):
    """The setting a claim was measured in: model, budget, benchmark, baseline."""

    model: str | None = None
    budget: str | None = None
    benchmark: str | None = None
    baseline: str | None = None
    baseline_score: float | int | None = Field(
        None,
        description="the unmodified model's score on this benchmark as the paper reports it (the results page "
        "flags papers that report different baseline scores for the same model and benchmark)",
    )


class Claim(_Model):
    """One efficiency number the paper states: metric, value, unit, qualifier, setting and where it was read."""

    metric: NonEmpty
    value: float | int
    unit: NonEmpty
    qualifier: Literal["up to", "about", "more than", "at least"] | None = None
    setting: ClaimSetting = Field(default_factory=ClaimSetting)
    note: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        default=None,
        description="what the number measures, when the metric and setting do not say it all "
        "(e.g. decode throughput, time to first token)",
    )
    where: NonEmpty = Field(description="where the paper states it: abstract, Table 2, Section 4.1 ...")
    source: Source = Field(description="the page the number was read from (a public address)")

    @model_validator(mode="after")
    def _metric_and_unit(self, info: ValidationInfo) -> "Claim":
        tax = _taxonomy(info)
        if tax is not None:
            metric = tax.metric_by_id.get(self.metric)
            if metric is None:
                raise ValueError(f"unknown metric {self.metric!r} (see metrics in taxonomy.yaml)")
            if self.unit not in metric.units:
                raise ValueError(f"metric {self.metric!r} takes units {metric.units}, not {self.unit!r}")
        return self


class Disagreement(_Model):
    """Sources that disagree on a fact, the value the catalogue keeps, and why (feeds the reconciliation report)."""

    field: Literal["title", "venue", "code", "arxiv", "year", "authors"]
    values: dict[DisagreementSource, str] = Field(
        min_length=2, description="source (a public address or a list at a commit) -> the value it gives"
    )
    kept: str
    why: NonEmpty


class Paper(_Model):
    """One catalogue entry (``papers/<id>.yaml``): every fact with the address of the page it was read on."""

    id: Annotated[str, Field(pattern=ID_PATTERN, max_length=80, description="canonical id; the file is <id>.yaml")]
    title: Annotated[str, Field(min_length=3, max_length=400)]
    short_name: Annotated[str, Field(min_length=1, max_length=60)] | None = None
    authors: list[Annotated[str, Field(min_length=1, max_length=120)]]
    authors_status: Literal["complete", "truncated", "unknown"] = Field(
        description="unknown: no source gave the authors yet (then the list is empty)"
    )
    year: Annotated[int, Field(ge=1990)]
    first_version: Annotated[dt.date, Field(strict=False)] | None = Field(
        default=None, description="date of the first public version (arXiv v1)"
    )
    venue: str = Field(description='"CVPR 2025", "EMNLP 2025 Findings", or "arXiv" for a preprint')
    venue_checked: bool = Field(
        default=False,
        description="a page read in a verification pass states the venue (the proceedings, or the authors' own "
        "statement of acceptance), named in provenance.venue; always false for a preprint",
    )
    venue_searched: Annotated[dt.date, Field(strict=False)] | None = Field(
        default=None,
        description="a preprint only: the date of the latest verification pass that searched for its publication "
        "(its arXiv page, proceedings pages, the official README) that confirmed no venue",
    )
    arxiv: str | None = Field(default=None, description='arXiv id without version, quoted: "2403.06764"')
    doi: Annotated[str, Field(pattern=DOI_PATTERN)] | None = None
    primary_class: Annotated[str, Field(pattern=r"^[a-z-]+(\.[A-Za-z-]+)?$")] | None = None
    paper_url: Url | None = None
    code: list[CodeLink] = Field(default_factory=list)
    placement: Placement
    modality: list[str] = Field(min_length=1)
    training: str | None = Field(description="training-free, training-aware, or null when unknown")
    frontiers: list[str] = Field(default_factory=list)
    summary: Annotated[str, Field(min_length=20, max_length=900)] | None = None
    claims: list[Claim] = Field(default_factory=list)
    reference_impls: list[ImplRef] = Field(
        default_factory=list, description="modules (optionally :object) that implement the paper"
    )
    closest_impl: list[ImplRef] = Field(
        default_factory=list,
        description="modules that implement a close variant of the paper's method (not the method itself)",
    )
    closest_impl_note: Annotated[str, Field(min_length=10, max_length=300)] | None = Field(
        default=None, description="how the paper's method differs from its closest implementation"
    )
    bibtex_key: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_:-]*$")] | None = None
    distinct_from: list[Annotated[str, Field(pattern=ID_PATTERN)]] = Field(
        default_factory=list, description="ids of papers whose titles are near-duplicates but which are different"
    )
    disagreements: list[Disagreement] = Field(default_factory=list)
    provenance: dict[str, Source] = Field(
        default_factory=dict,
        description="field -> the public address of the page it was read on (an https URL, or "
        "owner/repo:path@commit for a repository file); a fact without one is unsourced",
    )
    read_via: dict[SecureUrl, CopyUrl] = Field(
        default_factory=dict,
        description="canonical address cited above -> the copy actually read (a mirror of the arXiv page, say)",
    )
    listed_in: list[Listing] = Field(
        default_factory=list,
        description="paper lists that carry the paper (owner/repo@commit or owner/repo:path@commit); never a "
        "source of facts",
    )
    last_verified: Annotated[dt.date, Field(strict=False)]

    # ------------------------------------------------------------------ single-field rules
    @field_validator("arxiv", mode="before")
    @classmethod
    def _arxiv_is_a_string(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError(f"the arXiv id was read as the number {value!r}; quote it")
        if isinstance(value, str):
            if ARXIV_VERSIONED.match(value):
                bare = re.sub(r"v\d+$", "", value)
                raise ValueError(f"drop the version suffix: {value!r} -> {bare!r}")
            if not (ARXIV_NEW.match(value) or ARXIV_OLD.match(value)):
                raise ValueError(f"{value!r} is not an arXiv id (2403.06764 or hep-th/9901001)")
        return value

    @field_validator("year")
    @classmethod
    def _not_in_the_future(cls, value: int) -> int:
        latest = dt.date.today().year + 1  # a paper may already be listed for next year's venue
        if value > latest:
            raise ValueError(f"year {value} is in the future: the latest year allowed now is {latest}")
        return value

    @field_validator("summary")
    @classmethod
    def _one_to_three_sentences(cls, value: str | None) -> str | None:
        if value is None:
            return value
        sentences = [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9])", value.strip()) if s]
        if len(sentences) > 3:
            raise ValueError(f"a summary has one to three sentences, this one has {len(sentences)}")
        return value

    @field_validator("provenance")
    @classmethod
    def _provenance_fields(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(PROVENANCE_FIELDS))
        if unknown:
            raise ValueError(f"unknown provenance field(s) {unknown}; allowed: {', '.join(PROVENANCE_FIELDS)}")
        return value

    # ------------------------------------------------------------------ whole-entry rules
    @model_validator(mode="after")
    def _cross_field_rules(self, info: ValidationInfo) -> "Paper":
        if self.authors_status == "unknown" and self.authors:
            raise ValueError("authors_status is 'unknown' but authors are listed; use 'complete' or 'truncated'")
        if self.authors_status != "unknown" and not self.authors:
            raise ValueError("authors is empty: list them, or set authors_status: unknown")
        if len(set(self.authors)) != len(self.authors):
            raise ValueError("an author is listed twice")
        if self.first_version is not None and self.first_version.year > self.year + 1:
            raise ValueError(f"first_version {self.first_version} is later than the year {self.year}")
        if self.arxiv is None and self.doi is None and self.paper_url is None:
            raise ValueError("give at least one of arxiv, doi or paper_url")
        if self.id in self.distinct_from:
            raise ValueError("distinct_from lists the entry's own id")
        if len(set(self.listed_in)) != len(self.listed_in):
            raise ValueError("listed_in lists a value twice")
        if self.closest_impl and not self.closest_impl_note:
            raise ValueError("closest_impl needs closest_impl_note: how the paper's method differs")
        if self.closest_impl_note and not self.closest_impl:
            raise ValueError("closest_impl_note without closest_impl")
        both = sorted(set(self.closest_impl) & set(self.reference_impls))
        if both:
            raise ValueError(
                f"{both} is in reference_impls and closest_impl: a module implements the paper or a "
                "variant of it, not both"
            )
        if self.venue_checked and self.venue == PREPRINT:
            raise ValueError(
                "venue_checked: only a published venue can be checked (a page silent on the venue proves nothing); "
                "leave it false for a preprint"
            )
        if self.venue_searched and self.venue != PREPRINT:
            raise ValueError(
                "venue_searched: only a preprint carries the date of a search that found no venue; "
                "a published venue is checked (venue_checked) or not"
            )
        if self.venue_checked and "venue" not in self.provenance:
            raise ValueError("venue_checked: name the proceedings page (or the authors' statement) in provenance.venue")
        tax = _taxonomy(info)
        if tax is not None:
            self._check_vocabularies(tax)
        return self

    def _check_vocabularies(self, tax: Taxonomy) -> None:
        if self.venue != PREPRINT:
            parsed = tax.parse_venue(self.venue)
            if parsed is None:
                raise ValueError(
                    f"venue {self.venue!r} is not normalised: use '<VENUE> <YEAR>' with a venue id from "
                    "taxonomy.yaml (optionally followed by 'Findings' or 'Workshop'), or 'arXiv' for a preprint"
                )
        modalities = tax.modality_ids
        for mod in self.modality:
            if mod not in modalities:
                raise ValueError(f"unknown modality {mod!r} (one of {sorted(modalities)})")
        if len(set(self.modality)) != len(self.modality):
            raise ValueError("modality lists a value twice")
        regimes = tax.training_ids
        if self.training is not None and self.training not in regimes:
            raise ValueError(f"unknown training regime {self.training!r} (one of {sorted(regimes)}, or null)")
        frontiers = tax.frontier_ids
        for fr in self.frontiers:
            if fr not in frontiers:
                raise ValueError(f"unknown frontier {fr!r} (one of {sorted(frontiers)})")

    # ------------------------------------------------------------------ derived facts
    @property
    def first_version_year(self) -> int:
        """Year of version 1: the first_version date, else the year encoded in a new-style arXiv id, else year."""
        if self.first_version is not None:
            return self.first_version.year
        if self.arxiv and ARXIV_NEW.match(self.arxiv):
            return 2000 + int(self.arxiv[:2])
        return self.year

    @property
    def is_preprint(self) -> bool:
        """Whether no acceptance at a venue is known."""
        return self.venue == PREPRINT

    @property
    def official_code(self) -> str | None:
        """The official repository's address, else the first code link, else None."""
        return next((c.url for c in self.code if c.official), None)


# The order of keys in a paper file (the writer uses it; a reader accepts any order).
FIELD_ORDER = list(Paper.model_fields)
