"""The GPU campaign: every GPU check of the project in one command, most valuable first, inside a time budget.

    python -m benchmarks.campaign                       # GPU: 8-minute budget, results in
    benchmarks/results/campaign_<gpu>/
    python -m benchmarks.campaign --budget-min 9 --out DIR
    python -m benchmarks.campaign --smoke               # every step at tiny shapes on CPU (CI runs this)
    python -m benchmarks.campaign --list                # the steps, their estimates and limits

Needs only torch, triton and transformers (and pytest for the test step): the lent GPU machines have no pydantic
and no network. Each step runs in its own subprocess under its own time limit; a step whose estimate no longer fits
in what is left of the budget is skipped and the summary says so. The state of every step is kept in
``campaign.json`` inside the output folder, so a second invocation with the same ``--out`` runs only the steps not
yet run (``--retry`` also re-runs those that failed or timed out). The folder holds one JSON record per benchmark
(``<step>.json``, written by the benchmark itself through ``benchmarks._common.write_result``), each step's log, the
JUnit report of the GPU tests, ``environment.json`` (versions, commit, ``nvidia-smi -q``, SDPA backends that accept
the benchmark shapes, measured copy / read bandwidth and bf16 matmul rate) and ``summary.md``.

Estimates are seconds measured on an H200 with a cold Triton cache on 2026-12-04 (a step that timed out there has
its limit as a lower bound); they only decide what is tried, never what is reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


@dataclasses.dataclass(frozen=True)
class Step:
    """One campaign step: a module run as ``python -m module args`` (``--out`` added), or the environment probe."""

    name: str
    what: str
    estimate_s: int  # full run, H200, cold Triton cache
    limit_s: int
    module: str | None = None
    args: tuple[str, ...] = ()
    smoke_args: tuple[str, ...] = ("--smoke",)


STEPS = (
    Step(
        "environment", "versions, commit, nvidia-smi -q, SDPA backends, copy/read bandwidth, bf16 matmul rate", 20, 90
    ),
    Step(
        "gpu_tests",
        "the gpu-marked tests (bf16/fp16, autotune, large shapes), JUnit report",
        240,
        420,
        module="pytest",
        args=("-q", "-m", "gpu", "tests/reference_impls", "-p", "no:cacheprovider"),
        smoke_args=("-q", "-m", "gpu", "tests/reference_impls/test_ops_select.py", "-p", "no:cacheprovider"),
    ),
    Step(
        "ops",
        "scored attention vs forced-backend SDPA and eager (32/32 heads); KV compaction vs copy",
        75,
        300,
        module="benchmarks.bench_ops",
        args=("--no-64k",),
    ),
    Step(
        "prefill",
        "FastV / PyramidDrop prefill at LLaVA-1.5-7B shapes vs FLOP-predicted speedup",
        95,
        240,
        module="benchmarks.bench_prefill",
    ),
    Step(
        "decode_kv",
        "decode attention over full / compressed / quantised caches vs SDPA and copy bandwidth",
        60,
        300,
        module="benchmarks.bench_decode_kv",
        args=("--contexts", "8192,32768", "--batches", "1,8"),
    ),
    Step("encode", "ToMe and VisionZip ViT throughput and TTFT", 70, 240, module="benchmarks.bench_encode"),
    Step("quant", "INT8 / FP8 GEMMs vs bf16; decode tokens/s", 65, 180, module="benchmarks.bench_quant"),
    Step(
        "pevlm",
        "PEVLM block-parallel attention vs full attention at 32-128 frames",
        30,
        180,
        module="benchmarks.bench_pevlm",
    ),
    Step(
        "gdn", "SWA + Gated DeltaNet stack vs full attention, decode vs context", 40, 180, module="benchmarks.bench_gdn"
    ),
    Step(
        "speculative",
        "chain / tree SD, LVSpec, SpecVLM on the minimal model",
        90,
        240,
        module="benchmarks.bench_speculative",
    ),
    Step("litevlm", "the LiteVLM pipeline ablation", 150, 300, module="benchmarks.bench_litevlm"),
    Step(
        "techniques",
        "the other techniques (KV quantisation/merging/sharing/low rank, paged attention, serving, lookahead, "
        "SparseGPT, LLMLingua, Shared Attention, FastViTHD, FOCUS, LongVU, KV offloading, early exit, feature "
        "caching) beside their baselines",
        180,
        420,
        module="benchmarks.bench_techniques",
    ),
)
DONE = ("ok",)
_now = time.monotonic  # the budget's clock (tests replace it)
PER_TEST_TIMEOUT_S = 90
FINISHED = ("ok", "failed", "timed_out")


# ---------------------------------------------------------------------------------------------- environment
def _run_text(cmd: list[str], timeout: int = 60) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable: {exc}"
    return out.stdout if out.returncode == 0 else f"exit {out.returncode}: {out.stderr.strip()[:500]}"


def probe_environment(out_dir: Path, smoke: bool) -> dict:
    """Write ``nvidia-smi.txt`` and return the environment record (run in the step's subprocess)."""
    import torch

    from benchmarks._common import bandwidth_ceilings, do_bench_ms, git_commit, pick_device, sdpa_with_backend

    device = pick_device()
    env: dict = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
    }
    for module in ("torch", "triton", "transformers", "numpy", "pytest"):
        try:
            env[module] = __import__(module).__version__
        except Exception as exc:  # noqa: BLE001 - an optional module that is missing or broken
            env[module] = f"unavailable: {type(exc).__name__}"
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name(device)
        props = torch.cuda.get_device_properties(device)
        env["sm_count"] = props.multi_processor_count
        env["capability"] = list(torch.cuda.get_device_capability(device))
        env["memory_gib"] = round(props.total_memory / 2**30, 1)
        (out_dir / "nvidia-smi.txt").write_text(_run_text(["nvidia-smi", "-q"]))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    L, H, D = (4096, 32, 128) if not smoke else (64, 4, 32)
    q, k, v = (torch.randn(1, H, L, D, device=device, dtype=dtype) for _ in range(3))
    backends = {}
    for name in ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION"):
        try:
            _, ran = sdpa_with_backend(q, k, v, backends=(name,), is_causal=True)
        except RuntimeError:
            ran = None
        backends[name] = ran == name
    env["sdpa_backends_accepting_causal_bf16_32x4096x128"] = backends
    env["bandwidth"] = bandwidth_ceilings(device, (1 << 30) if not smoke else (1 << 20))
    n = 8192 if not smoke else 128
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    ms = do_bench_ms(lambda: a @ b, device, reps=3)
    env["matmul"] = {"n": n, "dtype": str(dtype), "ms": ms, "tflop_s": 2 * n**3 / ms / 1e9}
    return env


# ---------------------------------------------------------------------------------------------- running steps
def load_state(out_dir: Path) -> dict:
    path = out_dir / "campaign.json"
    if path.exists():
        return json.loads(path.read_text())
    return {"steps": {}}


def save_state(out_dir: Path, state: dict) -> None:
    tmp = out_dir / "campaign.json.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(out_dir / "campaign.json")


def step_command(step: Step, out_dir: Path, smoke: bool) -> list[str]:
    if step.name == "environment":
        return [sys.executable, "-m", "benchmarks.campaign", "--probe-environment", str(out_dir)] + (
            ["--smoke"] if smoke else []
        )
    if step.module == "pytest":
        args = list(step.smoke_args if smoke else step.args)
        # one line per test in the log and the slowest tests at the end; a per-test limit where pytest-timeout is
        # installed (the GPU machines have it), so one slow test cannot take the whole step and its report
        args += ["-v", "--durations=15"]
        if importlib.util.find_spec("pytest_timeout") is not None:
            args += ["--timeout", str(PER_TEST_TIMEOUT_S)]
        return [sys.executable, "-m", "pytest", *args, "--junitxml", str(out_dir / "gpu_tests.xml")]
    args = step.smoke_args if smoke else step.args
    return [sys.executable, "-m", step.module, *args, "--out", str(out_dir / f"{step.name}.json")]


def run_step(step: Step, out_dir: Path, smoke: bool, limit_s: float) -> dict:
    """Run one step in a subprocess with its log in ``<step>.log``; return its state record."""
    cmd = step_command(step, out_dir, smoke)
    log = out_dir / f"{step.name}.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.monotonic()
    with log.open("w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit_s)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            rc, status = None, "timed_out"
    seconds = round(time.monotonic() - t0, 1)
    return {
        "status": status,
        "returncode": rc,
        "seconds": seconds,
        "limit_s": round(limit_s),
        "log": log.name,
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def run_campaign(out_dir: Path, budget_s: float, smoke: bool, only: list[str] | None, retry: bool) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    state = load_state(out_dir)
    state.setdefault("invocations", []).append(
        {
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "budget_s": budget_s,
            "smoke": smoke,
        }
    )
    start = _now()
    for step in STEPS:
        if only and step.name not in only:
            continue
        previous = state["steps"].get(step.name, {})
        if previous.get("status") in DONE or (previous.get("status") in FINISHED and not retry):
            print(f"[campaign] {step.name}: already {previous['status']} ({previous.get('seconds')} s), not re-run")
            continue
        left = budget_s - (_now() - start)
        estimate = 5 if smoke else step.estimate_s
        if estimate > left:
            state["steps"][step.name] = {
                "status": "skipped",
                "why": f"needs about {estimate} s, {max(0, round(left))} s of the budget left",
            }
            print(f"[campaign] {step.name}: skipped ({state['steps'][step.name]['why']})")
            save_state(out_dir, state)
            continue
        limit = min(step.limit_s, left)
        print(f"[campaign] {step.name}: {step.what} (limit {round(limit)} s)", flush=True)
        record = run_step(step, out_dir, smoke, limit)
        state["steps"][step.name] = record
        save_state(out_dir, state)
        print(f"[campaign] {step.name}: {record['status']} in {record['seconds']} s", flush=True)
    save_state(out_dir, state)
    write_summary(out_dir, state)
    return state


# ---------------------------------------------------------------------------------------------- the summary
def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fmt(x, digits=2) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) else str(x)


def junit_counts(path: Path) -> dict | None:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else list(root)
    keys = ("tests", "failures", "errors", "skipped")
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in keys}
    counts["failed_names"] = [
        f"{case.get('classname')}::{case.get('name')}"
        for s in suites
        for case in s
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return counts


def _target_line(t: dict) -> str:
    """One entry of a record's ``targets`` (``benchmarks._common.target``) as a summary line."""
    line = f"{t['name']}: {_fmt(t['measured'])} (target {t['target']})"
    if t.get("met") is True:
        line += ": met"
    elif t.get("met") is False:
        line += f": missed by {_fmt(t['missed_by'])} (measured / bound = {_fmt(t['ratio'])})"
        line += f"; why: {t['why']}" if t.get("why") else "; why: to be written after reviewing this run"
    else:
        line += ": not judged (smoke run or not measured)"
    if t.get("note"):
        line += f" [{t['note']}]"
    return line


def _math_calls(data) -> int:
    """SDPA calls the audit saw on the math backend, anywhere in a record (``sdpa_calls*`` / ``*sdpa_backend``)."""
    if isinstance(data, dict):
        total = 0
        for key, value in data.items():
            if key.startswith("sdpa_calls") and isinstance(value, dict):
                total += int(value.get("MATH", 0))
            elif key.endswith("sdpa_backend") and value == "MATH":
                total += 1
            else:
                total += _math_calls(value)
        return total
    if isinstance(data, list):
        return sum(_math_calls(x) for x in data)
    return 0


def headline(step: str, data: dict) -> list[str]:
    """The figures that answer the issue's targets: the record's ``targets`` list, plus a warning when any SDPA call
    or baseline ran on the math backend. Records written before targets existed give the older summary lines."""
    lines = [_target_line(t) for t in data.get("targets", [])]
    if data.get("targets") is None:
        lines = legacy_headline(step, data)
    math_calls = _math_calls(data)
    if math_calls:
        lines.append(
            f"SDPA on the math backend: {math_calls} call(s) or baseline(s) in this record (see sdpa_calls / "
            "sdpa_backend)"
        )
    return lines


def legacy_headline(step: str, data: dict) -> list[str]:
    """Summary lines for records without ``targets`` (the first H200 run, commit e18e201)."""
    lines = []
    if step == "ops":
        for row in data.get("scored_attention", []):
            line = (
                f"scored attention L={row['L']} rows={row['n_score_rows']}: {_fmt(row['ratio_ours_over_sdpa'])}x "
                f"SDPA ({row.get('sdpa_backend')}; target <= 1.2)"
            )
            if row.get("speedup_vs_eager") is not None:
                line += f", {_fmt(row['speedup_vs_eager'], 1)}x faster than eager with weights (target >= 10 at 16k)"
            lines.append(line)
        compact = data.get("kv_compact") or {}
        for name in ("triton_out_of_place", "triton_in_place", "triton_in_place_stacked_layers"):
            if name in compact:
                lines.append(
                    f"kv_compact {name}: {_fmt(compact[name]['fraction_of_copy'])} of copy bandwidth (target >= 0.8)"
                )
    elif step == "prefill":
        for row in data.get("results", []):
            if "fraction_of_predicted" in row and row.get("name") != "baseline":
                lines.append(
                    f"{row['name']}: measured {_fmt(row['measured_speedup'])}x vs FLOP-predicted "
                    f"{_fmt(row['predicted_speedup'])}x = {_fmt(row['fraction_of_predicted'])} "
                    "(target >= 0.9)"
                )
    elif step == "decode_kv":
        for row in data.get("rows", []):
            if row["kind"] in ("full", "sdpa_full"):
                lines.append(
                    f"B={row['batch']} L={row['L']} {row['kind']}: {_fmt(row['frac_copy'])} of copy bandwidth"
                    + (" (target >= 0.7)" if row["kind"] == "full" else f" ({row.get('sdpa_backend')})")
                )
    return lines


def write_summary(out_dir: Path, state: dict) -> Path:
    env = _read_json(out_dir / "environment.json") or {}
    lines = ["# GPU campaign", ""]
    if env:
        lines += [
            f"- device: {env.get('gpu', env.get('device'))}; torch {env.get('torch')}, triton {env.get('triton')}, "
            f"transformers {env.get('transformers')}, Python {env.get('python')}, CUDA {env.get('cuda')}",
            f"- commit: {env.get('commit')}; probed {env.get('date')}",
        ]
        bw, mm = env.get("bandwidth") or {}, env.get("matmul") or {}
        if bw:
            lines.append(
                f"- measured ceilings: copy {_fmt(bw.get('copy_gb_s'), 0)} GB/s (read + write), read-only "
                f"{_fmt(bw.get('read_gb_s'), 0)} GB/s, {mm.get('dtype')} matmul {_fmt(mm.get('tflop_s'), 0)} "
                "TFLOP/s"
            )
        if env.get("sdpa_backends_accepting_causal_bf16_32x4096x128"):
            lines.append(
                f"- SDPA backends accepting a causal 32x4096x128 call: "
                f"{env['sdpa_backends_accepting_causal_bf16_32x4096x128']}"
            )
    smoke = any(inv.get("smoke") for inv in state.get("invocations", []))
    if smoke:
        lines.append(
            "- smoke run: tiny shapes; on CPU the Triton kernels run in the interpreter, so no timing here is "
            "a performance figure"
        )
    lines += ["", "| step | status | seconds | note |", "|---|---|---|---|"]
    for step in STEPS:
        rec = state["steps"].get(step.name)
        if rec is None:
            lines.append(f"| {step.name} | not run | | {step.what} |")
            continue
        note = rec.get("why", step.what)
        lines.append(f"| {step.name} | {rec['status']} | {rec.get('seconds', '')} | {note} |")
    junit = junit_counts(out_dir / "gpu_tests.xml")
    if junit:
        lines += [
            "",
            f"GPU tests: {junit['tests']} collected, {junit['failures']} failed, {junit['errors']} errors, "
            f"{junit['skipped']} skipped.",
        ]
        lines += [f"- failed: `{name}`" for name in junit["failed_names"]]
    for step in STEPS:
        data = _read_json(out_dir / f"{step.name}.json")
        if data and step.name != "environment":
            figures = headline(step.name, data)
            if figures:
                lines += ["", f"## {step.name}", ""] + [f"- {x}" for x in figures]
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def default_out(smoke: bool) -> Path:
    from benchmarks._common import device_tag, pick_device

    return RESULTS / f"campaign_{device_tag(pick_device(), smoke)}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-min", type=float, default=8.0, help="total minutes for all steps (default 8)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results/campaign_<gpu>)")
    p.add_argument("--smoke", action="store_true", help="tiny shapes on CPU: checks every step runs")
    p.add_argument("--only", default=None, help="comma-separated step names")
    p.add_argument("--retry", action="store_true", help="also re-run steps that failed or timed out")
    p.add_argument("--list", action="store_true", help="print the steps and exit")
    p.add_argument("--probe-environment", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.list:
        for s in STEPS:
            print(f"{s.name:12s} ~{s.estimate_s:4d} s (limit {s.limit_s:4d} s)  {s.what}")
        return 0
    if args.probe_environment is not None:
        env = probe_environment(args.probe_environment, args.smoke)
        path = args.probe_environment / "environment.json"
        path.write_text(json.dumps(env, indent=2) + "\n")
        print(json.dumps(env, indent=2))
        return 0
    if not (args.budget_min > 0 and args.budget_min < 24 * 60):
        p.error("--budget-min must be a positive number of minutes")
    only = args.only.split(",") if args.only else None
    unknown = sorted(set(only or ()) - {s.name for s in STEPS})
    if unknown:
        p.error(f"unknown step(s) {unknown}; --list shows them")
    out_dir = args.out or default_out(args.smoke)
    state = run_campaign(out_dir, args.budget_min * 60, args.smoke, only, args.retry)
    print((out_dir / "summary.md").read_text())
    failed = [n for n, r in state["steps"].items() if r["status"] in ("failed", "timed_out")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
