"""Triton kernel for PEVLM context-block rows (arXiv 2506.19651): FlashAttention-style online softmax over the
sink keys ``[0, S)`` and then over the row's own block ``[block_start(row), row]`` only -- never touching other
blocks' keys, so the work is O(rows * (S + block)). Sink and query rows stay on SDPA (``pevlm.py``).
Plain pointer arithmetic (triton 3.6 and 3.9); contiguous ``[B, H, L, D]`` inputs; fp32 accumulation. Autotuned on
CUDA over the row / key tile sizes, warps and stages (key: the bucketed row count, sink length and head dim).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from reference_impls.ops._triton import kernel, next_power_of_2


def pevlm_configs():
    """Autotuning space (BLOCK_M x BLOCK_N, warps, stages)."""
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=st)
        for bm, bn, w, st in [
            (32, 32, 4, 2),
            (64, 32, 4, 3),
            (64, 64, 4, 3),
            (128, 32, 4, 3),
            (128, 64, 8, 3),
            (128, 128, 8, 2),
        ]
    ]


@kernel(configs_fn=pevlm_configs, key=["ROWS_BUCKET", "S_BUCKET", "BLOCK_D", "DOT_FP32"])
def _pevlm_context_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    o_ptr,
    row_lo_ptr,
    L,
    S,
    Q0,
    Hq,
    G,
    D,
    scale,
    ROWS_BUCKET,
    S_BUCKET,
    DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // Hq
    h = pid_bh % Hq
    hk = h // G
    Hkv = Hq // G
    rows = S + pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < Q0
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    q_base = q_ptr + (pid_bh * L) * D
    k_base = k_ptr + ((b * Hkv + hk) * L) * D
    v_base = v_ptr + ((b * Hkv + hk) * L) * D
    q = tl.load(q_base + rows[:, None] * D + offs_d[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    if DOT_FP32:
        q = q.to(tl.float32)
    row_lo = tl.load(row_lo_ptr + rows, mask=row_ok, other=2147483647)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    offs_n = tl.arange(0, BLOCK_N)
    # phase 1: the shared sink [0, S); phase 2: own block [min row_lo, last row]
    lo2 = tl.min(row_lo, axis=0)
    hi2 = tl.minimum(S + (pid_m + 1) * BLOCK_M, Q0)
    for phase in tl.static_range(2):
        if phase == 0:
            start = 0
            stop = S
        else:
            start = lo2
            stop = hi2
        for j0 in range(start, stop, BLOCK_N):
            cols = j0 + offs_n
            col_ok = cols < stop
            kt = tl.load(k_base + cols[None, :] * D + offs_d[:, None], mask=col_ok[None, :] & d_ok[:, None], other=0.0)
            vt = tl.load(v_base + cols[:, None] * D + offs_d[None, :], mask=col_ok[:, None] & d_ok[None, :], other=0.0)
            if DOT_FP32:
                kt = kt.to(tl.float32)
                vt = vt.to(tl.float32)
            s = tl.dot(q, kt) * scale
            if phase == 0:
                allowed = col_ok[None, :] & row_ok[:, None]
            else:
                allowed = col_ok[None, :] & (cols[None, :] >= row_lo[:, None]) & (cols[None, :] <= rows[:, None])
            s = tl.where(allowed, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp(m_i - m_safe)
            p = tl.exp(s - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            if DOT_FP32:
                acc = acc * alpha[:, None] + tl.dot(p, vt)
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt)
            m_i = m_new
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(
        o_ptr + (pid_bh * L) * D + rows[:, None] * D + offs_d[None, :],
        out.to(o_ptr.dtype.element_ty),
        mask=row_ok[:, None] & d_ok[None, :],
    )


def triton_pevlm_context_rows(
    q,
    k,
    v,
    out,
    row_lo: torch.Tensor,
    sink_len: int,
    query_start: int,
    scale: float,
    block_m: int | None = None,
    block_n: int | None = None,
):
    """Write ``out[:, :, S:Q0]`` (context-block rows). ``row_lo [L]`` int32: first key of each row's own block.
    Autotuned on CUDA unless ``block_m`` / ``block_n`` are given; the interpreter uses them (default 32 x 32)."""
    B, Hq, L, D = q.shape
    G = Hq // k.shape[1]
    n_rows = query_start - sink_len
    if n_rows <= 0:
        return out
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    dot_fp32 = q.dtype == torch.float32 or q.device.type == "cpu"
    autotune = q.device.type == "cuda" and block_m is None and block_n is None
    meta = dict(DOT_FP32=dot_fp32, BLOCK_D=max(16, next_power_of_2(D)))
    if autotune:

        def grid(META):
            return (triton.cdiv(n_rows, META["BLOCK_M"]), B * Hq)
    else:
        meta.update(BLOCK_M=block_m or 32, BLOCK_N=block_n or 32)
        grid = (triton.cdiv(n_rows, meta["BLOCK_M"]), B * Hq)
    _pevlm_context_kernel.launch(
        grid,
        q,
        k,
        v,
        out,
        row_lo.to(torch.int32).contiguous(),
        L,
        sink_len,
        query_start,
        Hq,
        G,
        D,
        float(scale),
        min(next_power_of_2(n_rows), 1 << 16),
        next_power_of_2(max(sink_len, 1)),
        device=q.device,
        meta=meta,
        autotune=autotune,
    )
    return out
