"""Timing / result helpers shared by bench_speculative, bench_pevlm, bench_gdn and bench_quant (DECODE-B)."""
from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device, reps: int = 10, warmup: int = 3) -> float:
    """Median milliseconds of ``fn()``: CUDA events on GPU, perf_counter on CPU; warm-up calls discarded."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def wall_ms(fn, device) -> tuple:
    """One timed call (for end-to-end generation): ``(result, ms)``."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, (time.perf_counter() - t0) * 1e3


def versions(device) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version()}
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:  # pragma: no cover
        info["triton"] = None
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def device_tag(device, smoke: bool) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device).lower()
        tag = "h200" if "h200" in name else "h100" if "h100" in name else "cuda"
    else:
        tag = "cpu"
    return f"{tag}_smoke" if smoke else tag


def write_result(topic: str, device, smoke: bool, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{topic}_{device_tag(device, smoke)}.json"
    payload = {"benchmark": topic, "smoke": smoke, "device": str(device), "versions": versions(device), **payload}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return path
