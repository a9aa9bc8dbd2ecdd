"""Shared builders for the catalogue tests: a valid entry, and writing entries to a temporary papers/ folder."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

from tools.catalogue.yamlio import dump_entry

VALID = {
    "id": "fastv-2024",
    "title": "An Image is Worth 1/2 Tokens After Layer 2: Plug-and-Play Inference Acceleration for Large "
    "Vision-Language Models",
    "short_name": "FastV",
    "authors": ["Liang Chen", "Haozhe Zhao"],
    "authors_status": "truncated",
    "year": 2024,
    "first_version": dt.date(2024, 3, 11),
    "venue": "ECCV 2024",
    "arxiv": "2403.06764",
    "paper_url": "https://arxiv.org/abs/2403.06764",
    "code": [{"url": "https://github.com/pkunlp-icler/FastV", "official": True}],
    "placement": {"cells": ["prefill.density"], "techniques": ["token_pruning"], "method": "survey"},
    "modality": ["image"],
    "training": "training-free",
    "summary": "Prunes half of the visual tokens after the second layer by their attention. It keeps accuracy.",
    "claims": [
        {
            "metric": "flops_reduction",
            "value": 45,
            "unit": "%",
            "where": "abstract",
            "source": "https://arxiv.org/abs/2403.06764",
            "setting": {"model": "LLaVA-1.5-13B"},
        },
    ],
    "provenance": {"title": "https://arxiv.org/abs/2403.06764", "authors": "https://arxiv.org/abs/2403.06764"},
    "last_verified": dt.date(2026, 11, 21),
}


def entry(**overrides) -> dict:
    data = copy.deepcopy(VALID)
    for key, value in overrides.items():
        if value is ...:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def write_entry(folder: Path, data: dict, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name or data['id']}.yaml"
    path.write_text(dump_entry(data), encoding="utf-8")
    return path


def write_text(folder: Path, name: str, text: str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path
