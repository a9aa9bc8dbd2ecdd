"""The explorer's data and the catalogue's exports.

``data/papers.json`` holds one record per paper (plain text only: ``site/assets/explorer.js`` inserts it with
``textContent``, never as HTML), the vocabularies the filters show, and the export columns. The explorer exports
the papers it shows as CSV and JSON with those columns and as BibTeX from ``data/bibtex.json`` (each paper's entry,
as in atlas.bib); ``data/catalogue.csv`` and ``data/catalogue.json`` are the same exports of the whole catalogue,
written here by :func:`export_csv` and :func:`export_json`, so an export of every paper from the explorer is
byte for byte the published file.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Mapping

from tools.outputs.site.model import SiteModel, first_version_date
from tools.outputs.site.refimpls import implementations
from tools.outputs.text import plain

# (column, record key): what a CSV or JSON export holds, in order. Lists are joined with "; " in CSV; booleans are
# "yes" or "" in CSV.
EXPORT_COLUMNS = [
    ("id", "id"),
    ("citation_key", "key"),
    ("title", "title"),
    ("short_name", "name"),
    ("authors", "authors"),
    ("year", "year"),
    ("first_version", "date"),
    ("venue", "venue"),
    ("venue_status", "venue_status"),
    ("arxiv", "arxiv"),
    ("doi", "doi"),
    ("paper_url", "link"),
    ("code", "code_urls"),
    ("official_code", "official_code"),
    ("stages", "stages"),
    ("axes", "axes"),
    ("techniques", "techniques"),
    ("modality", "modality"),
    ("training", "training"),
    ("summary", "summary"),
    ("page", "url"),
]


def paper_link(paper) -> str:
    """The paper's own page: its arXiv abstract, else its paper URL, else its DOI."""
    if paper.arxiv:
        return f"https://arxiv.org/abs/{paper.arxiv}"
    if paper.paper_url:
        return paper.paper_url
    return f"https://doi.org/{paper.doi}" if paper.doi else ""


def venue_status(paper) -> str:
    """How far the venue is verified: "checked", "searched <date>" (a preprint searched for without a venue
    confirmed) or "not checked"."""
    if paper.venue_checked:
        return "checked"
    return f"searched {paper.venue_searched.isoformat()}" if paper.venue_searched else "not checked"


def explorer_records(model: SiteModel) -> list[dict]:
    """One record per paper for the explorer and the exports."""
    tax = model.taxonomy
    stage_order, axis_order = {s: i for i, s in enumerate(tax.stage_ids)}, {a: i for i, a in enumerate(tax.axis_ids)}
    out = []
    for pid in model.ordered_ids:
        p = model.papers[pid]
        parsed = None if p.is_preprint else tax.parse_venue(p.venue)
        date = first_version_date(p)
        out.append(
            {
                "id": pid,
                "key": model.keys[pid],
                "title": plain(p.title),
                "name": plain(p.short_name or ""),
                "authors": [plain(a) for a in p.authors],
                "authors_truncated": p.authors_status == "truncated",
                "year": p.year,
                "date": date.isoformat() if date else "",
                "venue": p.venue,
                "venue_name": parsed[0].id if parsed else ("arXiv" if p.is_preprint else p.venue),
                "venue_status": venue_status(p),
                "arxiv": p.arxiv or "",
                "doi": p.doi or "",
                "link": paper_link(p),
                "stages": sorted({c.split(".", 1)[0] for c in p.placement.cells}, key=stage_order.__getitem__),
                "axes": sorted({c.split(".", 1)[1] for c in p.placement.cells}, key=axis_order.__getitem__),
                "cells": list(p.placement.cells),
                "techniques": list(p.placement.techniques),
                "modality": list(p.modality),
                "training": p.training or "unknown",
                "code": bool(p.code),
                "code_urls": [c.url for c in sorted(p.code, key=lambda c: not c.official)],  # official first
                "official_code": p.official_code is not None,
                "refimpl": bool(implementations(p)),
                "claims": len(p.claims),
                "summary": plain(p.summary or ""),
                "url": f"papers/{pid}.html",
            }
        )
    return out


def _json_text(data) -> str:
    # ensure_ascii keeps the file 7-bit; "<" is escaped too, harmless in JSON and safe if ever inlined in HTML.
    return json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c")


def explorer_json(model: SiteModel, records: list[dict] | None = None) -> str:
    """The explorer's data file."""
    tax = model.taxonomy
    vocab = {
        "stages": {s.id: s.name for s in tax.stages},
        "axes": {a.id: a.name for a in tax.axes},
        "techniques": {t.id: t.name for t in tax.techniques},
        "groups": {g.id: {"name": g.name, "techniques": list(g.techniques)} for g in tax.technique_groups},
        "modalities": {m.id: m.name for m in tax.modalities},
        "training": {**{r.id: r.name for r in tax.training_regimes}, "unknown": "Unknown"},
    }
    return _json_text(
        {"vocab": vocab, "columns": EXPORT_COLUMNS, "papers": explorer_records(model) if records is None else records}
    )


def bibtex_json(paper_bibs: Mapping[str, str]) -> str:
    """Each paper's BibTeX entry by id, for the explorer's .bib export (loaded only when asked for)."""
    return _json_text(dict(paper_bibs))


def export_values(record: dict) -> list:
    """A record's values in the export columns' order."""
    return [record[key] for _, key in EXPORT_COLUMNS]


def _csv_cell(value) -> str:
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else ""
    return str(value)


def export_csv(records: list[dict]) -> str:
    """CSV (RFC 4180: CRLF line ends, fields quoted when they hold a comma, quote or line break)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow([name for name, _ in EXPORT_COLUMNS])
    for record in records:
        writer.writerow([_csv_cell(v) for v in export_values(record)])
    return buffer.getvalue()


def export_json(records: list[dict]) -> str:
    """A JSON array of objects with the export columns, compact (as JavaScript's ``JSON.stringify`` writes it)."""
    return (
        json.dumps(
            [dict(zip((name for name, _ in EXPORT_COLUMNS), export_values(r))) for r in records],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        + "\n"
    )
