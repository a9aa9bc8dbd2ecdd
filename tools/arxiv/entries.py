"""From what arXiv says to catalogue entries: new entries (``add``, ``triage``) and refreshed ones (``enrich``).

New entry (``entry_from_record``): title, all authors, ``first_version`` = the v1 date, ``year`` = the v1 year unless
the journal reference (or an "accepted at" comment) names a venue and its year, ``venue`` normalised to the taxonomy's
venue ids (``tools.catalogue.names.normalise_venue``, else the venue named in the reference) else "arXiv", DOI,
primary class, the abstract page as
``paper_url``; every fact's provenance is the abstract page it was read from (the latest version, v1 for the date);
the placement, modality and training regime are a keyword suggestion flagged ``needs_review``
(tools/arxiv/placement.py), without provenance: nobody has read them on a page yet.

Refresh (``plan_enrichment``), field by field (authors, venue, year, DOI, first_version, primary_class, paper_url,
and the latest version in the provenance of ``arxiv``). A field is

* **missing** when empty (authors unknown or truncated, venue still "arXiv"): it is filled;
* **machine-written** when its provenance is this paper's arXiv abstract page (any version), or when it has no
  provenance (an unsourced fact): it is updated when arXiv differs;
* **curated** otherwise (a person read another page): it is kept, and the difference is reported; ``force`` replaces it.

A venue is never turned back into "arXiv", a DOI never removed, and ``last_verified`` changes only with the content,
so refreshing twice changes nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from tools.arxiv.placement import Suggestion, suggest_placement
from tools.arxiv.source import ArxivRecord, abs_url
from tools.catalogue.entries import to_yaml_data
from tools.catalogue.names import id_candidates, normalise_venue, short_name_of
from tools.catalogue.schema import PREPRINT, Paper
from tools.catalogue.taxonomy import Taxonomy

_ACCEPTED = re.compile(
    r"(?i)\b(accepted|to appear|appear(s|ed)? (in|at)|published|camera[- ]ready|oral|spotlight|"
    r"poster|proceedings)\b"
)
_NOT_YET = re.compile(r"(?i)\b(submitted|under review|in submission|preprint)\b")


# ============================================================================================ venue and year
def _with_track(venue: str, text: str) -> str:
    if re.search(r"(?i)\bfindings\b", text) and not venue.endswith(("Findings", "Workshop")):
        return f"{venue} Findings"
    if re.search(r"(?i)\bworkshops?\b", text) and not venue.endswith(("Findings", "Workshop")):
        return f"{venue} Workshop"
    return venue


def _venue_name_in(text: str, taxonomy: Taxonomy) -> str | None:
    """The taxonomy venue id a free-text reference names, most specific evidence first.

    1. an id in parentheses ("... Pattern Recognition (CVPR), 2026"); 2. an acronym id as a word ("Accepted to
    CVPR 2026"); 3. a venue's full name, longest first; a venue whose id is an ordinary phrase ("Pattern
    Recognition", "Nature") only when the reference starts with it, so that "Computer Vision and Pattern
    Recognition" is never read as the journal.
    """
    ids = sorted(taxonomy.venue_by_id, key=len, reverse=True)
    acronyms = [v for v in ids if not re.search(r"[a-z]", v)]
    for vid in acronyms:
        if re.search(rf"\(\s*{re.escape(vid)}\s*(?:['\u2019]?\d{{2,4}})?\s*\)", text):
            return vid
    for vid in acronyms:
        if re.search(rf"(?<![A-Za-z]){re.escape(vid)}(?![A-Za-z])", text):
            return vid
    lowered = " ".join(text.lower().split())
    for venue in sorted(taxonomy.venues, key=lambda v: len(v.name), reverse=True):
        name = venue.name.lower()
        bare = re.sub(r"^(ieee|acm|usenix)(/(cvf|acm|ieee|rsj))? ", "", name)
        if (name in lowered or bare in lowered) and not re.search(r"[a-z]", venue.id):
            return venue.id
    start = re.sub(r"(?i)^(in\s+|proceedings of( the)?\s+|published in\s+)", "", text.strip())
    for vid in ids:
        if re.search(r"[a-z]", vid) and start.lower().startswith(vid.lower()):
            return vid
    return None


def _venue_in(text: str, taxonomy: Taxonomy) -> str | None:
    """A normalised venue ("CVPR 2026", "ICLR 2026 Workshop") named with its year in ``text``, else None."""
    try:
        venue = normalise_venue(text, taxonomy)  # the rules for list-style strings ("EMNLP'23 Findings")
    except ValueError:
        venue = None
    if venue and venue.endswith(" Workshop") and not re.search(r"(?i)\bworkshop", text):
        venue = venue.removesuffix(" Workshop")  # normalise_venue reads any leftover word as a workshop track
    if venue is None or venue == PREPRINT:
        name = _venue_name_in(text, taxonomy)
        if name is None:
            return None
        year = re.search(r"(?<!\d)((?:19|20)\d\d)(?!\d)", text)
        short = re.search(rf"{re.escape(name)}\s*[-'\u2019]\s*(\d\d)(?!\d)", text)
        if year:
            venue = f"{name} {year.group(1)}"
        elif short:
            venue = f"{name} {2000 + int(short.group(1))}"
        else:
            return None
    venue = _with_track(venue, text)
    return venue if taxonomy.parse_venue(venue) else None


def venue_from_record(record: ArxivRecord, taxonomy: Taxonomy) -> tuple[str, str] | None:
    """(normalised venue, where it was read: "journal_ref" or "comment"), or None when arXiv names no venue.

    A comment counts only in a clause that says the paper was accepted or published ("Accepted to CVPR 2025"),
    never "Submitted to ...".
    """
    if record.journal_ref:
        venue = _venue_in(record.journal_ref, taxonomy)
        if venue:
            return venue, "journal_ref"
    if record.comment:
        for clause in re.split(r"(?<=[.;])\s+|\s*;\s*", record.comment):
            if _ACCEPTED.search(clause) and not _NOT_YET.search(clause):
                venue = _venue_in(clause, taxonomy)
                if venue:
                    return venue, "comment"
    return None


def year_for(venue: str, first_version: dt.date, taxonomy: Taxonomy) -> int:
    """The venue's year for a published paper, else the year of version 1."""
    parsed = taxonomy.parse_venue(venue) if venue != PREPRINT else None
    return parsed[1] if parsed else first_version.year


def _unique_authors(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


# ============================================================================================ new entries
def choose_id(title: str, year: int, taken: set[str]) -> str:
    """The first free readable id for a paper (short name or title words, then the year); ``taken`` holds the ids
    in use."""
    candidates = id_candidates(title, short_name_of(title), year)
    for candidate in candidates:
        if candidate and candidate not in taken:
            return candidate
    base = candidates[0] or f"paper-{year}"
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def entry_from_record(
    record: ArxivRecord, taxonomy: Taxonomy, taken: set[str], today: dt.date, suggestion: Suggestion | None = None
) -> dict[str, Any]:
    """The data of a new entry for ``record`` (validate it with ``tools.catalogue.entries.build_paper``)."""
    suggestion = suggestion or suggest_placement(record.title, record.abstract, taxonomy)
    found = venue_from_record(record, taxonomy)
    venue = found[0] if found else PREPRINT
    year = year_for(venue, record.first_version, taxonomy)
    url = record.url
    provenance = {
        "title": url,
        "authors": url,
        "first_version": record.v1_url,
        "year": url if found else record.v1_url,
        "arxiv": url,
        "paper_url": url,
    }
    if found:
        provenance["venue"] = provenance["year"] = url
    if record.doi:
        provenance["doi"] = url
    if record.primary_class:
        provenance["primary_class"] = url
    data = {
        "id": choose_id(record.title, year, taken),
        "title": record.title,
        "short_name": short_name_of(record.title),
        "authors": _unique_authors(record.authors),
        "authors_status": "complete" if record.authors else "unknown",
        "year": year,
        "first_version": record.first_version,
        "venue": venue,
        "venue_checked": bool(found),  # the authors' own statement on the arXiv page (journal_ref or comment)
        "arxiv": record.arxiv,
        "doi": record.doi,
        "primary_class": record.primary_class,
        "paper_url": abs_url(record.arxiv),
        "placement": suggestion.placement(),
        "modality": suggestion.modality,
        "training": suggestion.training,
        "provenance": provenance,
        "last_verified": today,
    }
    if not data["authors"]:
        del provenance["authors"]
    return {k: v for k, v in data.items() if v is not None or k == "training"}


# ============================================================================================ enrichment
def field_state(paper: Paper, name: str) -> str:
    """ "missing", "machine" (written by a tool from arXiv or a paper list) or "curated" (see the module docstring)."""
    value = getattr(paper, name)
    if name == "authors" and paper.authors_status != "complete":
        return "missing"
    if name == "venue" and value == PREPRINT:
        return "missing"
    if value in (None, "", []):
        return "missing"
    source = paper.provenance.get(name)
    if source is None:
        return "machine"  # unsourced: a page (arXiv's) may fill it in
    if paper.arxiv and re.fullmatch(rf"https://arxiv\.org/abs/{re.escape(paper.arxiv)}(v\d+)?", source):
        return "machine"
    return "curated"


@dataclass
class Enrichment:
    """What ``enrich`` would change in one entry from its arXiv record: the new data, the fields changed, the
    curated values kept."""

    paper_id: str
    data: dict[str, Any]  # the refreshed entry (unchanged when ``changed`` is empty)
    changed: list[str] = field(default_factory=list)  # "field: old -> new"
    kept: list[str] = field(default_factory=list)  # curated values that arXiv contradicts


def _show(value: Any) -> str:
    if isinstance(value, list) and len(value) > 4:
        return repr(value[:3])[:-1] + f", ... ({len(value)} in all)]"
    return repr(value.isoformat() if isinstance(value, dt.date) else value)


def plan_enrichment(
    paper: Paper, record: ArxivRecord, taxonomy: Taxonomy, today: dt.date, force: bool = False
) -> Enrichment:
    """The entry refreshed from ``record`` (the rules are in the module docstring)."""
    data = to_yaml_data(paper)
    provenance = dict(data.get("provenance", {}))
    result = Enrichment(paper.id, data)
    url = record.url

    def propose(name: str, value: Any, source: str, extra: dict[str, Any] | None = None) -> None:
        current = getattr(paper, name)
        state = field_state(paper, name)
        if value == current and not (extra and any(data.get(k) != v for k, v in extra.items())):
            if state == "machine" and provenance.get(name) != source:
                provenance[name] = source  # confirmed by arXiv: the latest abstract page is now its source
            return
        if state == "curated" and not force:
            result.kept.append(f"{name}: kept {_show(current)} (curated); arXiv says {_show(value)} (--force replaces)")
            return
        data[name] = value
        data.update(extra or {})
        provenance[name] = source
        result.changed.append(f"{name}: {_show(current)} -> {_show(value)}")

    if record.authors:
        propose("authors", _unique_authors(record.authors), url, {"authors_status": "complete"})
    if record.doi and (paper.doi or "").lower() != record.doi.lower():
        propose("doi", record.doi, url)
    propose("first_version", record.first_version, record.v1_url)
    if record.primary_class:
        propose("primary_class", record.primary_class, url)
    if paper.paper_url is None:
        propose("paper_url", abs_url(record.arxiv), url)
    found = venue_from_record(record, taxonomy)
    if found:  # the authors' own statement on the arXiv page: the venue is checked
        propose("venue", found[0], url, {"venue_checked": True, "venue_searched": None})
    venue = data.get("venue", paper.venue)  # the venue after this refresh (a kept curated one included)
    year_source = provenance.get("venue", record.v1_url) if venue != PREPRINT else record.v1_url
    propose("year", year_for(venue, record.first_version, taxonomy), year_source)
    if field_state(paper, "arxiv") == "machine" and provenance.get("arxiv") != url:
        old = provenance.get("arxiv", "")
        old_version = re.search(r"v(\d+)$", old)
        if old_version and int(old_version.group(1)) != record.version:
            result.changed.append(f"latest version: v{old_version.group(1)} -> v{record.version}")
        provenance["arxiv"] = url
    if provenance != paper.provenance:
        data["provenance"] = provenance
        if not result.changed:
            result.changed.append("provenance: facts confirmed on " + url)
    if result.changed:
        data["last_verified"] = today
    return result
