"""Triton gather / compaction of rows ``src[r0, r1, idx[r0, r1, t], :]`` (plain pointers, triton 3.6 / 3.9).

``gather_rows_triton``: out of place, grid (block of kept rows, r0 x r1); rows with ``idx == -1`` are zero.
``compact_rows_inplace_triton``: in place into the same tensor, grid (block of D, r0 x r1); each program
walks its row's kept indices in ascending blocks, loading a whole block before storing it (with a barrier
between), which is safe because kept indices are ascending (``dst = t <= idx[t] = src``): a block only
overwrites rows that no later block reads. Its parallelism is only rows x column blocks (B*H*D/32 programs),
so for few heads stack layers into one call (``[layers*B, H, L, D]``) or compare with the two-phase
alternative (out of place, then copy back) in ``benchmarks/bench_ops.py``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton import kernel, next_power_of_2


@kernel()
def _gather_rows_kernel(SRC, DST, IDX, R1, K, D,
                        stride_s0, stride_s1, stride_sl, stride_sd,
                        stride_d0, stride_d1, stride_dk, stride_dd,
                        stride_i0, stride_i1, stride_ik,
                        BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_k = tl.program_id(0)
    pid_r = tl.program_id(1)
    r0 = (pid_r // R1).to(tl.int64)
    r1 = (pid_r % R1).to(tl.int64)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    k_valid = offs_k < K
    idx = tl.load(IDX + r0 * stride_i0 + r1 * stride_i1 + offs_k * stride_ik, mask=k_valid, other=-1)
    keep = idx >= 0
    src = SRC + r0 * stride_s0 + r1 * stride_s1 + idx[:, None] * stride_sl
    dst = DST + r0 * stride_d0 + r1 * stride_d1 + offs_k[:, None].to(tl.int64) * stride_dk
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        d_valid = offs_d < D
        rows = tl.load(src + offs_d[None, :] * stride_sd, mask=keep[:, None] & d_valid[None, :], other=0.0)
        tl.store(dst + offs_d[None, :] * stride_dd, rows, mask=k_valid[:, None] & d_valid[None, :])


@kernel()
def _compact_rows_inplace_kernel(X, IDX, R1, K, D,
                                 stride_x0, stride_x1, stride_xl, stride_xd,
                                 stride_i0, stride_i1, stride_ik,
                                 BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_d = tl.program_id(0)
    pid_r = tl.program_id(1)
    r0 = (pid_r // R1).to(tl.int64)
    r1 = (pid_r % R1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_valid = offs_d < D
    base = X + r0 * stride_x0 + r1 * stride_x1 + offs_d[None, :] * stride_xd
    for k0 in range(0, K, BLOCK_K):  # ascending: later blocks only read rows >= their own destinations
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_valid = offs_k < K
        idx = tl.load(IDX + r0 * stride_i0 + r1 * stride_i1 + offs_k * stride_ik, mask=k_valid, other=-1)
        keep = idx >= 0
        rows = tl.load(base + idx[:, None] * stride_xl, mask=keep[:, None] & d_valid[None, :], other=0.0)
        tl.debug_barrier()  # every read of this block happens before any write of it
        tl.store(base + offs_k[:, None].to(tl.int64) * stride_xl, rows, mask=k_valid[:, None] & d_valid[None, :])
        tl.debug_barrier()


def _meta(K: int, D: int, device: torch.device) -> dict:
    block_d = min(128 if device.type == "cuda" else 256, max(16, next_power_of_2(D)))
    return {"BLOCK_K": min(64, max(16, next_power_of_2(K))), "BLOCK_D": block_d}


def gather_rows_triton(src: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``src [R0, R1, L, D]``, ``idx [R0, R1, K]`` int64 in ``[-1, L)`` -> new ``[R0, R1, K, D]``."""
    R0, R1, _, D = src.shape
    K = idx.shape[-1]
    dst = torch.empty(R0, R1, K, D, dtype=src.dtype, device=src.device)
    if dst.numel() == 0:
        return dst
    meta = _meta(K, D, src.device)
    grid = (triton.cdiv(K, meta["BLOCK_K"]), R0 * R1)
    _gather_rows_kernel.launch(grid, src, dst, idx, R1, K, D, *src.stride(), *dst.stride(), *idx.stride(),
                               device=src.device, meta=meta)
    return dst


def compact_rows_inplace_triton(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """In place: ``x[r0, r1, t] = x[r0, r1, idx[r0, r1, t]]`` for ``t < K`` (zero where ``idx == -1``).

    ``idx`` must be ascending per row with ``-1`` only as trailing padding (checked by the caller).
    """
    R0, R1, _, D = x.shape
    K = idx.shape[-1]
    if x.numel() == 0 or K == 0:
        return x
    meta = _meta(K, D, x.device)
    if x.device.type == "cuda":
        # parallelism comes only from rows x column blocks: narrow column blocks (64 B of bf16), tall row blocks
        meta = {"BLOCK_K": min(128, max(16, next_power_of_2(K))), "BLOCK_D": min(32, max(16, next_power_of_2(D)))}
    grid = (triton.cdiv(D, meta["BLOCK_D"]), R0 * R1)
    _compact_rows_inplace_kernel.launch(grid, x, idx, R1, K, D, *x.stride(), *idx.stride(), device=x.device,
                                        meta=meta)
    return x
