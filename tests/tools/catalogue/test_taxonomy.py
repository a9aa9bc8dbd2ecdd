"""The taxonomy validates itself, rejects dangling references, and maps every category of the sources."""

from __future__ import annotations

import pytest
import yaml

from tools.catalogue.paths import SHARED_DIR, TAXONOMY_PATH
from tools.catalogue.taxonomy import load_taxonomy, read_taxonomy
from tools.catalogue.yamlio import dump_yaml

SEED = SHARED_DIR / "literature" / "papers_seed.jsonl"
needs_seed = pytest.mark.skipif(not SEED.exists(), reason="../shared/literature is not beside the checkout")


def test_repository_taxonomy_is_consistent():
    tax, problems = read_taxonomy()
    assert problems == []
    assert tax.stage_ids == ["encode", "prefill", "decode"]
    assert tax.axis_ids == ["density", "attention", "memory"]
    assert len(tax.cell_ids) == 9 and set(tax.cells) == set(tax.cell_ids)
    assert len(tax.frontiers) == 4
    for t in tax.techniques:
        assert t.keywords and t.description and set(t.cells) <= set(tax.cell_ids)
    kv = next(g for g in tax.technique_groups if g.id == "kv_cache_compression")
    assert len(kv.techniques) == 7 and all(
        t.startswith(("kv_", "low_rank_kv", "cross_layer_kv")) for t in kv.techniques
    )


def _broken(tmp_path, mutate):
    data = yaml.safe_load(TAXONOMY_PATH.read_text(encoding="utf-8"))
    mutate(data)
    path = tmp_path / "taxonomy.yaml"
    path.write_text(dump_yaml(data), encoding="utf-8")  # never aliases (the reader rejects them)
    return read_taxonomy(path)[1]


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda d: d["cells"].pop("decode.memory"), "cell 'decode.memory' is not described"),
        (lambda d: d["cells"].update({"decode.speed": "x"}), "'decode.speed' is not a <stage>.<axis> cell"),
        (lambda d: d["techniques"][0]["cells"].append("encode.nothing"), "unknown cell 'encode.nothing'"),
        (lambda d: d["techniques"].append(dict(d["techniques"][0])), "duplicate id 'token_pruning'"),
        (lambda d: d["cells"].update({"decode.memory": " "}), "empty description"),
        (lambda d: d["techniques"][0].update({"cells": ["decode.nothing"]}), "unknown cell 'decode.nothing'"),
        (
            lambda d: d["technique_groups"][0]["techniques"].append("teleport"),
            "visual_token_reduction: unknown technique 'teleport'",
        ),
        (
            lambda d: d["technique_groups"].append(dict(d["technique_groups"][0])),
            "duplicate id 'visual_token_reduction'",
        ),
    ],
)
def test_taxonomy_rejects_dangling_references(tmp_path, mutate, fragment):
    problems = _broken(tmp_path, mutate)
    assert any(fragment in p.message for p in problems), problems
    assert all(p.file.endswith("taxonomy.yaml") and p.line >= 1 for p in problems)


def test_every_technique_cell_is_reachable_and_every_cell_has_a_technique():
    tax = load_taxonomy()
    covered = {c for t in tax.techniques for c in t.cells}
    assert covered == set(tax.cell_ids)


def test_venue_parsing():
    tax = load_taxonomy()
    venue, year, track = tax.parse_venue("EMNLP 2025 Findings")
    assert (venue.id, year, track) == ("EMNLP", 2025, "Findings")
    assert tax.parse_venue("ACM MM 2024")[0].kind == "conference"
    assert tax.parse_venue("TPAMI 2025")[0].kind == "journal"
    for bad in ("CVPR2025", "cvpr 2025", "CVPR 25", "CVPR 2025 Oral", "arXiv 2024"):
        assert tax.parse_venue(bad) is None
