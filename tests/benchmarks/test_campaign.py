"""The GPU campaign command (benchmarks/campaign.py): every step at smoke size on CPU, the budget, and resuming."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

from benchmarks import campaign  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def run_campaign(*args):
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.campaign", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_smoke_runs_every_step_then_resumes_without_rerunning(tmp_path):
    out = tmp_path / "campaign"
    first = run_campaign("--smoke", "--out", str(out))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    state = json.loads((out / "campaign.json").read_text())
    assert {name: rec["status"] for name, rec in state["steps"].items()} == {s.name: "ok" for s in campaign.STEPS}
    for step in campaign.STEPS:
        if step.module and step.module != "pytest":
            record = json.loads((out / f"{step.name}.json").read_text())
            assert record["smoke"] is True and record["run"]["date"], step.name
    assert campaign.junit_counts(out / "gpu_tests.xml")["tests"] >= 1
    env = json.loads((out / "environment.json").read_text())
    assert env["bandwidth"]["copy_gb_s"] > 0 and env["matmul"]["tflop_s"] > 0
    summary = (out / "summary.md").read_text()
    assert "smoke run" in summary and "| ops | ok |" in summary

    second = run_campaign("--smoke", "--out", str(out))
    assert second.returncode == 0
    assert second.stdout.count("not re-run") == len(campaign.STEPS)
    assert len(json.loads((out / "campaign.json").read_text())["invocations"]) == 2


def test_steps_that_do_not_fit_the_budget_are_skipped_and_said_so(tmp_path, monkeypatch):
    ran, clock = [], [0.0]

    def fake_run_step(step, out_dir, smoke, limit_s):  # each step takes exactly its estimate
        ran.append((step.name, limit_s))
        clock[0] += step.estimate_s
        return {"status": "ok", "returncode": 0, "seconds": step.estimate_s, "limit_s": round(limit_s), "log": "x"}

    monkeypatch.setattr(campaign, "run_step", fake_run_step)
    monkeypatch.setattr(campaign, "_now", lambda: clock[0])
    budget = campaign.STEPS[0].estimate_s + campaign.STEPS[1].estimate_s + 1
    state = campaign.run_campaign(tmp_path, budget, smoke=False, only=None, retry=False)
    assert [name for name, _ in ran][:2] == ["environment", "gpu_tests"]
    skipped = {n: r for n, r in state["steps"].items() if r["status"] == "skipped"}
    assert "ops" in skipped and skipped["ops"]["why"].startswith(f"needs about {campaign.STEPS[2].estimate_s} s")
    assert ran[1][1] == min(campaign.STEPS[1].limit_s, budget - campaign.STEPS[0].estimate_s)
    summary = (tmp_path / "summary.md").read_text()
    assert "| ops | skipped |" in summary

    # a second invocation runs the skipped steps, not the finished ones; --retry re-runs failures only on request
    ran.clear()
    state["steps"]["gpu_tests"]["status"] = "timed_out"
    campaign.save_state(tmp_path, state)
    campaign.run_campaign(tmp_path, 10_000, smoke=False, only=None, retry=False)
    assert "environment" not in [n for n, _ in ran] and "gpu_tests" not in [n for n, _ in ran]
    assert "ops" in [n for n, _ in ran]
    ran.clear()
    campaign.run_campaign(tmp_path, 10_000, smoke=False, only=None, retry=True)
    assert [n for n, _ in ran] == ["gpu_tests"]


def test_a_step_past_its_limit_is_killed_and_recorded(tmp_path, monkeypatch):
    step = campaign.Step("sleeper", "sleeps", 1, 1, module="time_sleeper")
    monkeypatch.setattr(
        campaign, "step_command", lambda s, out_dir, smoke: [sys.executable, "-c", "import time; time.sleep(30)"]
    )
    record = campaign.run_step(step, tmp_path, smoke=True, limit_s=1)
    assert record["status"] == "timed_out" and record["seconds"] < 10


def test_bad_budget_is_one_clear_error():
    result = run_campaign("--budget-min", "nan")
    assert result.returncode == 2 and "--budget-min must be a positive number" in result.stderr
