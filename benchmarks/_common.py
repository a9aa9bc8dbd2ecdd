"""Helpers shared by every benchmark script: timers, peak memory, device / version info and the result JSON.

Timers (all return median milliseconds; baselines are always measured in the same process):
  ``time_ms``          CUDA events around each call on GPU, ``perf_counter`` on CPU (model-level timings).
  ``do_bench_ms``      ``triton.testing.do_bench`` on GPU (kernel timings), ``perf_counter`` on CPU (smoke only).
  ``trimmed_wall_ms``  synchronise + ``perf_counter`` per call, first 25% of the timed calls discarded (the ToMe
                       upstream protocol).
  ``wall_ms``          one timed call that returns its result too (end-to-end generation).
Results go to ``benchmarks/results/<topic>_<device tag>[_smoke].json`` through ``write_result``; the keys
``benchmark``, ``smoke``, ``device``, ``versions`` come first, then ``run`` (commit, date, the SDPA backends torch
offers, the GPU's clocks, the autotune choices the run made), ``note`` (if given) is what the website shows.

SDPA baselines go through ``sdpa_with_backend``: it forces one backend (flash, cuDNN, memory-efficient, in that
order of preference) and says which one ran, so a baseline never falls back to the math backend silently. SDPA
calls made inside a model are audited: ``sdpa_backends_of(fn)`` runs ``fn`` once untimed and counts, per backend, the
calls torch dispatches (``torch._fused_sdp_choice``, the function torch itself asks); ``sdpa_math_off(counts)`` then
switches the math backend off for the timed calls when the audit found none needs it (a call that later would
raise instead of running math), and the counts go into the record.

Targets: ``target(...)`` builds the entry of a record's ``targets`` list: what is measured, the bound, whether it is
met and by how much it is missed, and a ``why`` that is left empty for a person to fill in after a GPU run (the
campaign summary prints every entry).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).resolve().parent / "results"


def pick_device(requested=None, one_thread: bool = False):
    """``torch.device(requested)``, else CUDA when available, else CPU; ``one_thread`` pins torch to one CPU thread
    (steadier smoke timings on a shared machine)."""
    if one_thread:
        torch.set_num_threads(1)
    return torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))


def sync(device) -> None:
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


def do_bench_ms(fn, device, reps: int) -> float:
    """Median milliseconds of ``fn()``: ``triton.testing.do_bench`` on CUDA (``reps`` unused), else one warm-up
    call and the perf_counter median of ``reps`` calls (interpreter timings are not performance figures)."""
    if device.type == "cuda":
        import triton.testing

        fn()  # compile / autotune outside the timed region
        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def trimmed_wall_ms(fn, device, iters: int, warmup: int) -> float:
    """Median ms of ``fn()`` after ``warmup`` calls, discarding the first 25% of the timed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times[len(times) // 4 :])


def wall_ms(fn, device) -> tuple:
    """One timed call (for end-to-end generation): ``(result, ms)``."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, (time.perf_counter() - t0) * 1e3


def peak_extra_bytes(fn, device):
    """Peak allocated bytes above the current allocation while running ``fn`` once (CUDA only, else None)."""
    if device.type != "cuda":
        return None
    sync(device)
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    sync(device)
    return int(torch.cuda.max_memory_allocated() - base)


def oom_as_string(fn):
    """Run ``fn``; an out-of-memory error becomes the string ``"oom"`` (a baseline that does not fit)."""
    try:
        return fn()
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return "oom"


def versions(device, modules=("triton",)) -> dict:
    """torch / python versions, the given optional modules' versions (None when missing), CUDA version and GPU."""
    info = {"torch": torch.__version__, "python": platform.python_version()}
    for module in modules:
        try:
            info[module] = __import__(module).__version__
        except Exception:  # pragma: no cover - an optional module that is not installed
            info[module] = None
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def device_name(device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def device_tag(device, smoke: bool) -> str:
    """File-name tag: ``cpu``, ``h100``, ``h200`` or the GPU name as a slug; ``_smoke`` appended for smoke runs."""
    if device.type == "cuda":
        name = device_name(device).lower()
        tag = "h200" if "h200" in name else "h100" if "h100" in name else re.sub(r"[^a-z0-9]+", "_", name).strip("_")
    else:
        tag = "cpu"
    return f"{tag}_smoke" if smoke else tag


SDPA_PREFERENCE = ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION")


def sdpa_with_backend(q, k, v, backends=SDPA_PREFERENCE, **kwargs):
    """``(fn, backend)``: ``fn()`` runs ``F.scaled_dot_product_attention(q, k, v, **kwargs)`` with exactly one
    backend forced, the first of ``backends`` that accepts these inputs; ``backend`` names it. On CPU, or when none
    accepts them, the math backend is forced and named ``"MATH"`` so the record says so."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    candidates = list(backends) if q.device.type == "cuda" else []
    for name in candidates + ["MATH"]:
        backend = getattr(SDPBackend, name)

        def fn(backend=backend):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, **kwargs)

        try:
            fn()
        except RuntimeError:
            continue
        return fn, name
    raise RuntimeError("no SDPA backend accepts these inputs")


def _backend_name(choice: int) -> str:
    from torch.nn.attention import SDPBackend

    return SDPBackend(choice).name


@contextlib.contextmanager
def _counting_sdpa(counts: Counter):
    """While active, every ``F.scaled_dot_product_attention`` call is counted under the backend torch picks for it."""
    original = F.scaled_dot_product_attention

    def counted(
        query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False, **kwargs
    ):
        choice = torch._fused_sdp_choice(
            query, key, value, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa
        )
        counts[_backend_name(choice)] += 1
        return original(
            query,
            key,
            value,
            attn_mask=attn_mask,
            dropout_p=dropout_p,
            is_causal=is_causal,
            scale=scale,
            enable_gqa=enable_gqa,
            **kwargs,
        )

    F.scaled_dot_product_attention = counted
    try:
        yield counts
    finally:
        F.scaled_dot_product_attention = original


def sdpa_backends_of(fn) -> dict:
    """Run ``fn()`` once (untimed) and return ``{backend name: number of SDPA calls}`` (empty when it makes none)."""
    counts: Counter = Counter()
    with _counting_sdpa(counts):
        fn()
    return dict(counts)


@contextlib.contextmanager
def sdpa_math_off(counts: dict):
    """The math backend switched off (CUDA) unless ``counts`` (from :func:`sdpa_backends_of`) shows it is needed."""
    if not torch.cuda.is_available() or counts.get("MATH"):
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        yield


def audited(timer, fn, *args, **kwargs):
    """``(timer(fn, *args, **kwargs), sdpa counts)``: the SDPA audit of one untimed call, then the timing with the
    math backend off unless the audit needs it."""
    counts = sdpa_backends_of(fn)
    with sdpa_math_off(counts):
        return timer(fn, *args, **kwargs), counts


def cuda_graph_replay(fn):
    """``fn`` captured in a CUDA graph (after two eager calls: compilation, autotuning) and returned as a replay
    callable: timing it shows the kernels without the host's launch overhead. None off CUDA, or when ``fn`` cannot be
    captured (the error is printed: e.g. a host synchronisation inside)."""
    if not torch.cuda.is_available():
        return None
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn()
            fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
    except Exception as exc:  # noqa: BLE001 - reported, and the row is left out
        print(f"CUDA graph capture failed: {type(exc).__name__}: {exc}")
        return None
    return graph.replay


def target(
    name: str,
    measured,
    bound: float,
    *,
    at_most: bool = False,
    unit: str = "",
    smoke: bool = False,
    note: str | None = None,
) -> dict:
    """One entry of a record's ``targets``: ``measured`` against ``bound`` (``>= bound``, or ``<= bound`` with
    ``at_most``). ``met`` is None when nothing was measured or on a smoke run (tiny shapes, interpreter timings:
    not judged). ``missed_by`` is how far the measurement is from the bound (same unit) and ``ratio`` measured /
    bound. ``why`` stays None: the reason for a miss is written by a person after looking at a GPU run."""
    entry = {
        "name": name,
        "target": f"{'<=' if at_most else '>='} {bound:g}{unit}",
        "bound": bound,
        "measured": measured,
        "met": None,
        "missed_by": None,
        "ratio": None,
        "why": None,
    }
    if note:
        entry["note"] = note
    if isinstance(measured, (int, float)) and measured == measured:  # a number, not NaN
        entry["ratio"] = measured / bound if bound else None
        if not smoke:
            entry["met"] = measured <= bound if at_most else measured >= bound
            entry["missed_by"] = 0.0 if entry["met"] else abs(measured - bound)
    return entry


def random_llava(smoke: bool, device, dtype, attn: str = "sdpa"):
    """HF ``LlavaForConditionalGeneration`` with random weights: LLaVA-1.5-7B shapes (CLIP ViT-L/14-336, Llama
    32 x 4096, 32/32 heads), or a tiny one with ``smoke``. Built without transformers' weight initialisation
    (``no_init_weights``: parameters are allocated on ``device`` but not filled) and then filled here, on the device,
    from a seeded generator: matrices N(0, 0.02), norm weights 1, biases 0. Buffers (rotary tables, position ids)
    are computed by the modules themselves."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration
    from transformers.initialization import no_init_weights

    if smoke:
        vision = CLIPVisionConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            image_size=56,
            patch_size=8,
            projection_dim=64,
        )
        text = LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=4,
            vocab_size=256,
            max_position_embeddings=1024,
        )
    else:
        vision = CLIPVisionConfig(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=336,
            patch_size=14,
            projection_dim=768,
        )
        text = LlamaConfig(
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            vocab_size=32064,
            max_position_embeddings=4096,
        )
    cfg = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=text.vocab_size - 1,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device), no_init_weights():
            model = LlavaForConditionalGeneration(cfg).eval()
    finally:
        torch.set_default_dtype(previous)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.02, generator=gen)
            elif name.endswith("bias"):
                param.zero_()
            else:
                param.fill_(1.0)
    model.set_attn_implementation(attn)
    return model


def bandwidth_ceilings(device, n_bytes: int = 1 << 30) -> dict:
    """Measured memory ceilings: a device-to-device copy (GB/s counting bytes read + written) and a read-only
    pass (``torch.sum`` over the buffer in fp32 accumulation; GB/s of bytes read)."""
    n = n_bytes // 2
    src = torch.randn(n, device=device, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    ms_copy = do_bench_ms(lambda: dst.copy_(src), device, reps=5)
    ms_read = do_bench_ms(lambda: src.sum(dtype=torch.float32), device, reps=5)
    return {
        "bytes": 2 * n,
        "copy_ms": ms_copy,
        "copy_gb_s": 2 * 2 * n / ms_copy / 1e6,
        "read_ms": ms_read,
        "read_gb_s": 2 * n / ms_read / 1e6,
    }


def git_commit() -> str | None:
    """The commit the run measures: ``$ATLAS_COMMIT`` (the GPU machine gets a copy without ``.git``), else git."""
    if os.environ.get("ATLAS_COMMIT"):
        return os.environ["ATLAS_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def gpu_clocks() -> dict | None:
    """SM and memory clocks, power and temperature from ``nvidia-smi`` at the time of the call (None without one)."""
    fields = "clocks.sm,clocks.mem,clocks.max.sm,power.draw,temperature.gpu,driver_version"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    values = [x.strip() for x in out.stdout.splitlines()[0].split(",")]
    return dict(zip(fields.split(","), values))


def sdpa_backends_enabled() -> dict:
    """Which SDPA backends torch has switched on (a forced call still records the one that ran)."""
    b = torch.backends.cuda
    return {
        "flash": b.flash_sdp_enabled(),
        "cudnn": b.cudnn_sdp_enabled(),
        "mem_efficient": b.mem_efficient_sdp_enabled(),
        "math": b.math_sdp_enabled(),
    }


def run_metadata(device) -> dict:
    """What a result needs to be reproduced: commit, UTC time, SDPA backends, GPU clocks, autotune choices."""
    from reference_impls.ops._triton import autotune_choices

    return {
        "commit": git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "sdpa_backends_enabled": sdpa_backends_enabled() if device.type == "cuda" else None,
        "gpu_clocks": gpu_clocks() if device.type == "cuda" else None,
        "autotune_choices": autotune_choices(),
    }


def write_result(topic: str, device, smoke: bool, payload: dict, path=None, modules=("triton",)) -> Path:
    """Write ``payload`` (with benchmark / smoke / device / versions / run in front) as JSON; default path
    ``benchmarks/results/<topic>_<device_tag>.json``."""
    path = Path(path) if path else RESULTS / f"{topic}_{device_tag(device, smoke)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": topic,
        "smoke": bool(smoke),
        "device": device_name(device),
        "versions": versions(device, modules),
        "run": run_metadata(device),
        **payload,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
    return path
