"""Shared benchmark helpers (benchmarks/_common.py): targets, the SDPA audit, and how the campaign summary prints
targets."""

import pytest

torch = pytest.importorskip("torch")

from benchmarks import campaign  # noqa: E402
from benchmarks._common import sdpa_backends_of, sdpa_math_off, target  # noqa: E402


def test_target_entries():
    low = target("copy fraction", 0.15, 0.8)
    assert low["met"] is False and low["missed_by"] == pytest.approx(0.65) and low["ratio"] == pytest.approx(0.1875)
    assert low["why"] is None and low["target"] == ">= 0.8"
    high = target("time / SDPA", 0.75, 1.2, at_most=True, unit="x")
    assert high["met"] is True and high["missed_by"] == 0.0 and high["target"] == "<= 1.2x"
    over = target("time / SDPA", 8.4, 1.2, at_most=True)
    assert over["met"] is False and over["missed_by"] == pytest.approx(7.2)
    smoke = target("copy fraction", 0.15, 0.8, smoke=True)
    assert smoke["met"] is None and smoke["missed_by"] is None and smoke["ratio"] == pytest.approx(0.1875)
    assert target("x", None, 1.0)["met"] is None and target("x", float("nan"), 1.0)["met"] is None


def test_sdpa_audit_counts_every_call_by_backend():
    q = torch.randn(1, 2, 5, 8)

    def two_calls():
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
        torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)

    counts = sdpa_backends_of(two_calls)
    assert sum(counts.values()) == 2 and set(counts) <= {
        "MATH",
        "FLASH_ATTENTION",
        "EFFICIENT_ATTENTION",
        "CUDNN_ATTENTION",
        "OVERRIDEABLE",
    }
    assert sdpa_backends_of(lambda: None) == {}
    assert torch.nn.functional.scaled_dot_product_attention.__name__ == "scaled_dot_product_attention"  # restored
    with sdpa_math_off(counts):  # no CUDA here: a no-op
        two_calls()


def test_summary_prints_targets_misses_and_math():
    record = {
        "targets": [
            target("kv_compact in place: fraction of copy bandwidth", 0.05, 0.8),
            target("decode attention B=8 L=32768", 0.84, 0.7),
            dict(target("scored attention at 16k", 0.75, 1.2, at_most=True), why="fixed overheads"),
        ],
        "rows": [{"sdpa_calls": {"FLASH_ATTENTION": 3, "MATH": 2}}, {"sdpa_backend": "MATH"}],
    }
    lines = campaign.headline("ops", record)
    assert lines[0].startswith("kv_compact in place") and "missed by 0.75" in lines[0]
    assert "why: to be written after reviewing this run" in lines[0]
    assert lines[1].endswith(": met") and "met" in lines[2] and "why" not in lines[1]
    assert lines[-1].startswith("SDPA on the math backend: 3 call(s)")
    miss = dict(record["targets"][0], why="launch-bound")
    assert campaign.headline("ops", {"targets": [miss]}) == [
        "kv_compact in place: fraction of copy bandwidth: 0.05 (target >= 0.8): missed by 0.75 (measured / bound = "
        "0.06); why: launch-bound"
    ]
