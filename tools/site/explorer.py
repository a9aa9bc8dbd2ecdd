"""The explorer's data: one JSON array of compact paper records, loaded by ``site/assets/explorer.js``.

The JSON carries plain text only; the script inserts it with ``textContent``, never as HTML.
"""
from __future__ import annotations

import json

from tools.site.model import SiteModel, first_version_date


def explorer_records(model: SiteModel) -> list[dict]:
    tax = model.taxonomy
    out = []
    for pid in model.ordered_ids:
        p = model.papers[pid]
        parsed = None if p.is_preprint else tax.parse_venue(p.venue)
        date = first_version_date(p)
        out.append({
            "id": pid,
            "title": p.title,
            "name": p.short_name or "",
            "authors": ", ".join(p.authors[:3]) + (" et al." if len(p.authors) > 3 or p.authors_status == "truncated"
                                                   else ""),
            "year": p.year,
            "date": date.isoformat() if date else "",
            "venue": p.venue,
            "venue_name": parsed[0].id if parsed else ("arXiv" if p.is_preprint else p.venue),
            "stages": sorted({c.split(".", 1)[0] for c in p.placement.cells}, key=tax.stage_ids.index),
            "axes": sorted({c.split(".", 1)[1] for c in p.placement.cells}, key=tax.axis_ids.index),
            "cells": list(p.placement.cells),
            "techniques": list(p.placement.techniques),
            "modality": list(p.modality),
            "training": p.training or "unknown",
            "code": bool(p.code),
            "official_code": p.official_code is not None,
            "refimpl": bool(p.reference_impls),
            "claims": len(p.claims),
            "url": f"papers/{pid}.html",
        })
    return out


def explorer_json(model: SiteModel) -> str:
    tax = model.taxonomy
    vocab = {
        "stages": {s.id: s.name for s in tax.stages},
        "axes": {a.id: a.name for a in tax.axes},
        "techniques": {t.id: t.name for t in tax.techniques},
        "modalities": {m.id: m.name for m in tax.modalities},
        "training": {**{r.id: r.name for r in tax.training_regimes}, "unknown": "Unknown"},
    }
    # ensure_ascii keeps the file 7-bit; "<" is escaped too, harmless in JSON and safe if ever inlined in HTML.
    text = json.dumps({"vocab": vocab, "papers": explorer_records(model)}, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c")
