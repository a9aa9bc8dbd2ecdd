"""The JSON Schema of a paper file, generated from the pydantic models plus the taxonomy's vocabularies.

Committed at schema/paper.schema.json (CI checks it is fresh); every paper file's first line points editors at it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tools.catalogue.schema import PROVENANCE_FIELDS, Paper
from tools.catalogue.taxonomy import Taxonomy


def _ecma_escape(text: str) -> str:
    """Escape for ECMA-262 regexes (JSON Schema); Python's re.escape also escapes spaces and hyphens, which ECMA
    rejects in unicode mode."""
    return re.sub(r"([.^$*+?()\[\]{}|\\/])", r"\\\1", text)


def _enum_items(schema: dict, values: list[str]) -> None:
    schema.setdefault("items", {})["enum"] = values


def build_schema(tax: Taxonomy) -> dict[str, Any]:
    """The JSON Schema of a paper file, from the model and the taxonomy's ids."""
    schema = Paper.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Efficient LVLM Inference Atlas: paper entry"
    defs = schema["$defs"]
    props = schema["properties"]
    _enum_items(defs["Placement"]["properties"]["cells"], tax.cell_ids)
    _enum_items(defs["Placement"]["properties"]["techniques"], [t.id for t in tax.techniques])
    _enum_items(props["modality"], [m.id for m in tax.modalities])
    _enum_items(props["frontiers"], [f.id for f in tax.frontiers])
    props["training"] = {
        "anyOf": [{"enum": [r.id for r in tax.training_regimes]}, {"type": "null"}],
        "description": props["training"].get("description", ""),
    }
    claim = defs["Claim"]["properties"]
    claim["metric"] = {"enum": [m.id for m in tax.metrics], "description": "a metric id from taxonomy.yaml"}
    claim["unit"] = {"enum": sorted({u for m in tax.metrics for u in m.units})}
    venue_names = "|".join(_ecma_escape(v.id) for v in tax.venues)
    props["venue"] = {
        "anyOf": [
            {"const": "arXiv"},
            {"type": "string", "pattern": rf"^({venue_names}) (19|20)\d\d( (Findings|Workshop))?$"},
        ],
        "description": props["venue"].get("description", ""),
    }
    props["arxiv"]["anyOf"] = [
        {"type": "string", "pattern": r"^(\d{4}\.\d{4,5}|[a-z]+(-[a-z]+)*(\.[A-Z]{2})?/\d{7})$"},
        {"type": "null"},
    ]
    props["provenance"]["propertyNames"] = {"enum": list(PROVENANCE_FIELDS)}
    return schema


def render_schema(tax: Taxonomy) -> str:
    """The JSON Schema as the committed file's text."""
    return json.dumps(build_schema(tax), indent=2, ensure_ascii=False, sort_keys=False) + "\n"
