"""Shared test helpers for tests/reference_impls (seeded random tensors, error metrics, ragged batches).

Other helpers may ADD functions here; do not change existing ones. Imports only torch and pytest at module level
(never reference_impls: the sm_90 compile subprocesses import this module).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def seeded_generator(seed: int, device="cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def randn(*shape, seed: int = 0, dtype=torch.float32, device="cpu", scale: float = 1.0) -> torch.Tensor:
    """Standard-normal tensor (drawn in fp32 on CPU, so values do not depend on the device), cast to ``dtype``."""
    x = torch.randn(*shape, generator=seeded_generator(seed), dtype=torch.float32) * scale
    return x.to(device=device, dtype=dtype)


def randint(low: int, high: int, shape, *, seed: int = 0, device="cpu") -> torch.Tensor:
    """int64 tensor uniform in ``[low, high)``."""
    return torch.randint(low, high, tuple(shape), generator=seeded_generator(seed)).to(device)


def rel_rms_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative RMS error ``||x - ref|| / max(||ref||, tiny)`` computed in fp64."""
    x, ref = x.double(), ref.double()
    denom = ref.pow(2).mean().sqrt().clamp(min=1e-30)
    return float((x - ref).pow(2).mean().sqrt() / denom)


def ragged_lengths(batch: int, max_len: int, *, seed: int = 0, min_len: int = 1, device="cpu") -> torch.Tensor:
    """int64 lengths ``[batch]`` in ``[min_len, max_len]``, distinct where possible, the first equal to ``max_len``
    (so the padded width is exactly ``max_len``)."""
    if batch == 0:
        return torch.zeros(0, dtype=torch.int64, device=device)
    lens = randint(min_len, max_len + 1, (batch,), seed=seed)
    lens[0] = max_len
    return lens.to(device)


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Bool ``[B, max_len]``: True on the first ``lengths[b]`` positions (right padding)."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def make_ragged(
    batch: int, max_len: int, channels: int, *, seed: int = 0, dtype=torch.float32, device="cpu", min_len: int = 1
):
    """Right-padded ragged batch: ``(x [B, max_len, C] with zero padding, lengths [B] int64)``."""
    lengths = ragged_lengths(batch, max_len, seed=seed, min_len=min_len)
    x = randn(batch, max_len, channels, seed=seed + 1) * padding_mask(lengths, max_len)[..., None]
    return x.to(device=device, dtype=dtype), lengths.to(device)


def make_qkv(
    batch: int,
    n_q_heads: int,
    n_kv_heads: int,
    q_len: int,
    kv_len: int,
    head_dim: int,
    *,
    seed: int = 0,
    dtype=torch.float32,
    device="cpu",
):
    """Random ``q [B, Hq, Lq, D]``, ``k, v [B, Hkv, Lk, D]`` (standard normal)."""
    q = randn(batch, n_q_heads, q_len, head_dim, seed=seed, dtype=dtype, device=device)
    k = randn(batch, n_kv_heads, kv_len, head_dim, seed=seed + 1, dtype=dtype, device=device)
    v = randn(batch, n_kv_heads, kv_len, head_dim, seed=seed + 2, dtype=dtype, device=device)
    return q, k, v


def eager_attention_probs(q, k, *, scale=None, causal=True, kv_lengths=None) -> torch.Tensor:
    """Independent eager reference: fp64 ``softmax(q k^T * scale + mask)`` ``[B, Hq, Lq, Lk]`` (GQA by
    repeating kv heads; causal bottom-right per row length; rows with no visible key are all zero)."""
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    scale = D**-0.5 if scale is None else scale
    s = q.double() @ k.double().repeat_interleave(Hq // Hkv, dim=1).transpose(-1, -2) * scale
    if kv_lengths is None:
        kv_lengths = torch.full((B,), Lk, dtype=torch.int64)
    kv_lengths = kv_lengths.to(torch.int64).cpu()
    if kv_lengths.dim() == 1:
        kv_lengths = kv_lengths[:, None].expand(B, Hkv)
    mask = torch.zeros(B, Hq, Lq, Lk, dtype=torch.bool)
    for b in range(B):
        for h in range(Hq):
            n = int(kv_lengths[b, h // (Hq // Hkv)])
            for i in range(Lq):
                hi = min(n, n - Lq + i + 1) if causal else n
                if hi > 0:
                    mask[b, h, i, :hi] = True
    mask = mask.to(q.device)
    s = s.masked_fill(~mask, float("-inf"))
    p = torch.softmax(s, dim=-1)
    return torch.nan_to_num(p, nan=0.0)


def chi2_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson chi-square goodness-of-fit p-value of ``counts [V]`` against ``probs [V]`` (no scipy needed:
    the survival function is the regularized upper incomplete gamma)."""
    n = counts.sum()
    expected = probs.double() * n
    stat = ((counts.double() - expected) ** 2 / expected).sum()
    dof = counts.numel() - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), stat / 2))


@contextlib.contextmanager
def torch_threads(n: int):
    """Temporarily set torch's intra-op thread count (tiny-model tests run ~30x faster with 1 thread on a
    shared, oversubscribed CPU)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def compile_triton_for_sm90(
    fn, pointer_types: dict, constexprs: dict, float_args=(), shared_limit=227 * 1024, options: dict | None = None
):
    """Ahead-of-time compile a Triton kernel body (plain function, e.g. ``DualKernel.fn``) for sm_90 without a GPU
    (triton's CUDA backend + bundled ptxas). Scalars default to i32, ``float_args`` to fp32; ``options`` e.g.
    ``{"num_warps": 8, "num_stages": 3}`` (an autotune config). Must run in a process where TRITON_INTERPRET was not
    set before triton's import. Returns the shared-memory bytes."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler import compile as triton_compile
    from triton.runtime.jit import JITFunction

    jit_fn = JITFunction(fn)
    signature = {
        name: "constexpr" if name in constexprs else pointer_types.get(name, "fp32" if name in float_args else "i32")
        for name in jit_fn.arg_names
    }
    compiled = triton_compile(
        ASTSource(fn=jit_fn, signature=signature, constexprs=constexprs),
        target=GPUTarget("cuda", 90, 32),
        options=options,
    )
    if compiled.metadata.shared > shared_limit:
        raise AssertionError(f"{fn.__name__}: {compiled.metadata.shared} shared bytes > {shared_limit}")
    return compiled.metadata.shared


#: Exit status of a compile subprocess that cannot compile here (no triton compiler API / CUDA backend): the
#: test then skips.
COMPILE_SKIP_EXIT = 77


def require_triton_compiler() -> None:
    """In a compile subprocess: exit with COMPILE_SKIP_EXIT when triton's compiler API is not importable."""
    try:
        import triton  # noqa: F401
        from triton.backends.compiler import GPUTarget  # noqa: F401
    except Exception as exc:  # no triton / another compiler layout
        print(f"triton compiler API not available: {exc}")
        sys.exit(COMPILE_SKIP_EXIT)


def compile_for_sm90_or_exit(
    name: str, fn, pointer_types: dict, constexprs: dict, float_args=(), options: dict | None = None
) -> int:
    """``compile_triton_for_sm90`` in a compile subprocess: prints ``<name> compiled, shared bytes N``, or exits
    with COMPILE_SKIP_EXIT when this install has no CUDA backend / ptxas."""
    try:
        shared = compile_triton_for_sm90(fn, pointer_types, constexprs, float_args=float_args, options=options)
    except (ImportError, FileNotFoundError) as exc:
        print(f"cannot compile for CUDA here: {exc}")
        sys.exit(COMPILE_SKIP_EXIT)
    print(name, "compiled, shared bytes", shared)
    return shared


def run_compile_script(script, expected_kernels: int) -> None:
    """Run ``script`` (a test file whose ``__main__`` compiles kernels with ``compile_for_sm90_or_exit``) in a fresh
    process without TRITON_INTERPRET (set before triton's import it makes triton's library functions interpreter
    objects, and nothing compiles); skip when it exits COMPILE_SKIP_EXIT, else assert every kernel compiled."""
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, str(Path(script).resolve())], env=env, cwd=root, capture_output=True, text=True, timeout=600
    )
    if out.returncode == COMPILE_SKIP_EXIT:
        pytest.skip(out.stdout.strip())
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("compiled, shared bytes") == expected_kernels, out.stdout


#: The tensor methods that hand a value to the host (on a CUDA tensor: a device synchronisation).
HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__")


@contextlib.contextmanager
def forbid_host_reads():
    """Inside: reading a tensor's value on the host (``HOST_READS``: ``.item()``, ``.tolist()``, ``bool(t)``,
    ``int(t)``, ``if t:``, ...) or building a tensor from Python data (``torch.tensor`` / ``torch.as_tensor``: a
    host-to-device copy on CUDA) raises AssertionError, except when the caller is triton itself (its interpreter
    stands in for the GPU on CPU tensors). On CPU tensors this proves structurally what a CUDA run could only show
    by timing: the code under test never waits for the device."""
    import triton

    triton_dir = str(Path(triton.__file__).resolve().parent)
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}
    factories = {name: getattr(torch, name) for name in ("tensor", "as_tensor")}

    def caller_is_triton() -> bool:
        frame = sys._getframe(2)
        return str(Path(frame.f_code.co_filename).resolve()).startswith(triton_dir)

    def guard(name, original):
        def method(self, *args, **kwargs):
            if not caller_is_triton():
                raise AssertionError(
                    f"host read: Tensor.{name} called from {sys._getframe(1).f_code.co_filename}:"
                    f"{sys._getframe(1).f_lineno}"
                )
            return original(self, *args, **kwargs)

        return method

    def guard_factory(name, original):
        def factory(data, *args, **kwargs):
            if not isinstance(data, torch.Tensor) and not caller_is_triton():
                raise AssertionError(
                    f"host data copied to a tensor: torch.{name} called from "
                    f"{sys._getframe(1).f_code.co_filename}:{sys._getframe(1).f_lineno}"
                )
            return original(data, *args, **kwargs)

        return factory

    try:
        for name, original in originals.items():
            setattr(torch.Tensor, name, guard(name, original))
        for name, original in factories.items():
            setattr(torch, name, guard_factory(name, original))
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
        for name, original in factories.items():
            setattr(torch, name, original)


def autotune_configs_under_test(configs: list) -> list:
    """The autotune configs a GPU test compiles and checks: all of them with ``ATLAS_FULL_AUTOTUNE_SWEEP=1``, else
    a representative pair, the first and the last of the list (the spaces here go from the smallest tile to the
    largest, so the pair covers both ends of register / shared-memory use). Each compile costs seconds on a GPU."""
    if os.environ.get("ATLAS_FULL_AUTOTUNE_SWEEP", "0") not in ("", "0"):
        return list(configs)
    return list(configs) if len(configs) <= 2 else [configs[0], configs[-1]]
