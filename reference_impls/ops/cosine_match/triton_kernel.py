"""Triton row-wise cosine max/argmax that never materialises the ``Na x Nb`` similarity matrix.

Grid (block of ``a`` rows, batch). Each program computes its rows' norms once, then walks ``b`` in
blocks: dot products accumulate over channel blocks (``tl.dot``, fp32 accumulation), are divided by the
``b`` norms computed on the fly, and fold into a running (max, lowest argmax) held in registers. The
positive ``1/|a_i|`` factor does not change the argmax and is applied once at the end.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from reference_impls.ops._triton import kernel, next_power_of_2
from reference_impls.ops.cosine_match.naive import NORM_EPS


def _configs():
    return [
        triton.Config({"BLOCK_A": ba, "BLOCK_B": bb, "BLOCK_C": bc}, num_warps=w, num_stages=s)
        for ba, bb, bc, w, s in [
            (32, 64, 32, 4, 2),
            (64, 64, 32, 4, 3),
            (64, 128, 32, 8, 3),
            (128, 64, 32, 8, 3),
            (64, 64, 64, 4, 2),
        ]
    ]


@kernel(configs_fn=_configs, key=["NA_BUCKET", "NB_BUCKET", "C", "HAS_MASK", "DOT_PREC"])
def _cosine_max_argmax_kernel(
    A,
    B,
    B_MASK,
    OUT_MAX,
    OUT_ARG,
    Na,
    Nb,
    C,
    eps,
    stride_ab,
    stride_an,
    stride_ac,
    stride_bb,
    stride_bn,
    stride_bc,
    stride_mb,
    stride_mn,
    stride_ob,
    stride_on,
    NA_BUCKET,
    NB_BUCKET,
    HAS_MASK: tl.constexpr,
    DOT_PREC: tl.constexpr,
    BLOCK_A: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid_a = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    offs_a = pid_a * BLOCK_A + tl.arange(0, BLOCK_A)
    a_valid = offs_a < Na
    offs_c0 = tl.arange(0, BLOCK_C)
    a_base = A + batch * stride_ab + offs_a[:, None] * stride_an
    b_base = B + batch * stride_bb

    a_sq = tl.full([BLOCK_A], 0.0, tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + offs_c0
        a = tl.load(a_base + offs_c[None, :] * stride_ac, mask=a_valid[:, None] & (offs_c[None, :] < C), other=0.0).to(
            tl.float32
        )
        a_sq += tl.sum(a * a, 1)

    best = tl.full([BLOCK_A], float("-inf"), tl.float32)
    best_idx = tl.full([BLOCK_A], -1, tl.int32)
    for n0 in range(0, Nb, BLOCK_B):
        offs_n = n0 + tl.arange(0, BLOCK_B)
        n_valid = offs_n < Nb
        if HAS_MASK:
            n_valid = n_valid & (tl.load(B_MASK + batch * stride_mb + offs_n * stride_mn, mask=n_valid, other=0) != 0)
        dots = tl.full([BLOCK_A, BLOCK_B], 0.0, tl.float32)
        b_sq = tl.full([BLOCK_B], 0.0, tl.float32)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + offs_c0
            c_valid = offs_c < C
            a = tl.load(a_base + offs_c[None, :] * stride_ac, mask=a_valid[:, None] & c_valid[None, :], other=0.0)
            bt = tl.load(
                b_base + offs_n[None, :] * stride_bn + offs_c[:, None] * stride_bc,
                mask=(offs_n[None, :] < Nb) & c_valid[:, None],
                other=0.0,
            )  # [BLOCK_C, BLOCK_B]
            dots += tl.dot(a, bt, input_precision=DOT_PREC)
            btf = bt.to(tl.float32)
            b_sq += tl.sum(btf * btf, 0)
        cos = dots / tl.maximum(tl.sqrt(b_sq), eps)[None, :]
        cos = tl.where(n_valid[None, :], cos, float("-inf"))
        blk_max = tl.max(cos, 1)
        blk_arg = tl.min(tl.where(cos == blk_max[:, None], offs_n[None, :], 2147483647), 1)
        better = blk_max > best  # strict: an equal value in a later block keeps the lower index
        best_idx = tl.where(better, blk_arg, best_idx)
        best = tl.where(better, blk_max, best)

    best = best / tl.maximum(tl.sqrt(a_sq), eps)
    tl.store(OUT_MAX + batch * stride_ob + offs_a * stride_on, best, mask=a_valid)
    tl.store(OUT_ARG + batch * stride_ob + offs_a * stride_on, best_idx.to(tl.int64), mask=a_valid)


def triton_cosine_max_argmax(a, b, b_mask=None, *, autotune=True, meta=None):
    """Validated ``a [B, Na, C]``, ``b [B, Nb, C]``, ``b_mask [B, Nb]`` -> ``(max fp32, argmax int64)``."""
    if a.device.type == "cpu" and a.dtype == torch.bfloat16:  # the interpreter's bf16 arithmetic is wrong
        a, b = a.float(), b.float()
    Bsz, Na, C = a.shape
    Nb = b.shape[1]
    out_max = torch.empty(Bsz, Na, dtype=torch.float32, device=a.device)
    out_arg = torch.empty(Bsz, Na, dtype=torch.int64, device=a.device)
    has_mask = b_mask is not None
    mask = b_mask.to(torch.int8) if has_mask else out_max  # dummy pointer when unused
    mstride = mask.stride() if has_mask else (0, 0)
    prec = "ieee" if a.dtype == torch.float32 else "tf32"
    args = (
        a,
        b,
        mask,
        out_max,
        out_arg,
        Na,
        Nb,
        C,
        NORM_EPS,
        *a.stride(),
        *b.stride(),
        *mstride,
        *out_max.stride(),
        next_power_of_2(Na),
        next_power_of_2(Nb),
        has_mask,
        prec,
    )
    if meta is None and autotune and a.device.type == "cuda":
        grid = lambda META: (triton.cdiv(Na, META["BLOCK_A"]), Bsz)  # noqa: E731
        _cosine_max_argmax_kernel.launch(grid, *args, device=a.device, meta={}, autotune=True)
    else:
        if meta is None:
            meta = {
                "BLOCK_A": min(64, max(16, next_power_of_2(Na))),
                "BLOCK_B": 64,
                "BLOCK_C": min(64, max(16, next_power_of_2(C))),
            }
        _cosine_max_argmax_kernel.launch(
            (triton.cdiv(Na, meta["BLOCK_A"]), Bsz), *args, device=a.device, meta=dict(meta)
        )
    return out_max, out_arg
