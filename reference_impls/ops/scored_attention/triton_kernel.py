"""Triton path of :func:`scored_attention` (two passes, plain pointer arithmetic, triton 3.6 / 3.9).

Pass 1 (``_attn_fwd_kernel``): FlashAttention-2 style forward, one program per (query block, batch x
query head[, key split]); online softmax in base 2; key blocks visible to every row of the query block
skip the masks, only the causal diagonal / ragged tail blocks are masked; writes ``o`` and the natural-log
``lse``. With few queries (decode) on CUDA the keys are split across programs (split-K, as in
flash-decoding) and the partial results merged by a log-sum-exp combine kernel (``_combine_kernel``; the PyTorch
``combine_splits`` is its reference).
Pass 2 (``_colsum_kernel``): one program per (key block, batch x query head); loads its key block once,
loops over the *selected* query rows only (a compact per-batch row list), recomputes
``p = exp(s - lse)`` and sums over rows in registers; a single writer per key block, so no atomics and
a deterministic result. Cost ``O(|Qsel| * Lk * D)``; with causal masking, row blocks that end before the
key block are skipped (about half the work when every query is selected, as in H2O prefill).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from reference_impls.ops._triton import kernel, next_power_of_2, sm_count

LOG2E = 1.4426950408889634


def _attn_fwd_configs():
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
        for bm, bn, w, s in [
            (16, 64, 4, 2),
            (64, 32, 4, 2),
            (64, 64, 4, 3),
            (128, 32, 4, 2),
            (128, 64, 8, 3),
            (128, 128, 8, 2),
        ]
    ]


def _colsum_configs():
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=2)
        for bm, bn, w in [(16, 64, 4), (16, 128, 4), (32, 64, 4), (64, 64, 4), (64, 128, 8)]
    ]


@triton.jit
def _batch_head(pid_bh, Hq, G, KV_LEN, stride_lenb, Lk):
    """Program axis ``batch x query head`` -> (batch, query head, its KV head (GQA), that row's valid key count,
    clamped to ``[0, Lk]`` so unchecked lengths stay inside the buffers)."""
    b = (pid_bh // Hq).to(tl.int64)
    h = pid_bh % Hq
    hk = (h // G).to(tl.int64)
    h = h.to(tl.int64)
    kv_len = tl.minimum(tl.maximum(tl.load(KV_LEN + b * stride_lenb + hk), 0), Lk)
    return b, h, hk, kv_len


@triton.jit
def _attn_fwd_inner(
    acc,
    l_i,
    m_i,
    q,
    k_base,
    v_base,
    stride_kn,
    stride_kd,
    stride_vn,
    stride_vd,
    offs_d,
    d_valid,
    query_pos,
    kv_len,
    lo,
    hi,
    qk_scale_log2,
    MASKED: tl.constexpr,
    CAUSAL: tl.constexpr,
    EVEN_D: tl.constexpr,
    DOT_PREC: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Online-softmax update over key blocks ``[lo, hi)``; ``MASKED`` blocks apply the length/causal masks."""
    offs_n0 = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        n_valid = offs_n < kv_len
        kt_ptrs = k_base + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd  # [BLOCK_D, BLOCK_N]
        v_ptrs = v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
        if MASKED:
            kt = tl.load(kt_ptrs, mask=n_valid[None, :] & d_valid[:, None], other=0.0)
            v = tl.load(v_ptrs, mask=n_valid[:, None] & d_valid[None, :], other=0.0)
        elif EVEN_D:
            kt = tl.load(kt_ptrs)
            v = tl.load(v_ptrs)
        else:
            kt = tl.load(kt_ptrs, mask=d_valid[:, None], other=0.0)
            v = tl.load(v_ptrs, mask=d_valid[None, :], other=0.0)
        s = tl.dot(q, kt, input_precision=DOT_PREC) * qk_scale_log2
        if MASKED:
            keep = n_valid[None, :]
            if CAUSAL:
                keep = keep & (offs_n[None, :] <= query_pos[:, None])
            s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that have seen no key yet
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
        m_i = m_new
    return acc, l_i, m_i


@kernel(configs_fn=_attn_fwd_configs, key=["LQ_BUCKET", "LK_BUCKET", "BLOCK_D", "CAUSAL", "DOT_PREC"])
def _attn_fwd_kernel(
    Q,
    K,
    V,
    O,
    LSE,
    KV_LEN,
    stride_qb,
    stride_qh,
    stride_qm,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_kd,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_vd,
    stride_os,
    stride_ob,
    stride_oh,
    stride_om,
    stride_od,
    stride_lses,
    stride_lseb,
    stride_lseh,
    stride_lenb,
    Hq,
    G,
    Lq,
    Lk,
    D,
    qk_scale_log2,
    SPLIT_LEN,
    LQ_BUCKET,
    LK_BUCKET,
    CAUSAL: tl.constexpr,
    BLOCK_D: tl.constexpr,
    EVEN_D: tl.constexpr,
    DOT_PREC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    split = tl.program_id(2)  # key range [split * SPLIT_LEN, (split + 1) * SPLIT_LEN) (split-K for few queries)
    b, h, hk, kv_len = _batch_head(pid_bh, Hq, G, KV_LEN, stride_lenb, Lk)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_valid = offs_m < Lq
    d_valid = offs_d < D
    q = tl.load(
        Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
        mask=m_valid[:, None] & d_valid[None, :],
        other=0.0,
    )
    query_pos = kv_len - Lq + offs_m  # bottom-right causal alignment

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    # keys [0, full_end) are visible to every row of this block: no masking there
    if CAUSAL:
        first_pos = kv_len - Lq + pid_m * BLOCK_M
        hi = tl.maximum(tl.minimum(kv_len, first_pos + BLOCK_M), 0)
        full_end = tl.maximum(tl.minimum(kv_len, first_pos + 1), 0) // BLOCK_N * BLOCK_N
    else:
        hi = kv_len
        full_end = kv_len // BLOCK_N * BLOCK_N
    lo = split * SPLIT_LEN  # SPLIT_LEN is a multiple of BLOCK_N, so blocks stay aligned
    hi = tl.minimum(hi, lo + SPLIT_LEN)
    mid = tl.maximum(tl.minimum(full_end, hi), lo)
    k_base = K + b * stride_kb + hk * stride_kh
    v_base = V + b * stride_vb + hk * stride_vh
    acc, l_i, m_i = _attn_fwd_inner(
        acc,
        l_i,
        m_i,
        q,
        k_base,
        v_base,
        stride_kn,
        stride_kd,
        stride_vn,
        stride_vd,
        offs_d,
        d_valid,
        query_pos,
        kv_len,
        lo,
        mid,
        qk_scale_log2,
        False,
        CAUSAL,
        EVEN_D,
        DOT_PREC,
        BLOCK_N,
    )
    acc, l_i, m_i = _attn_fwd_inner(
        acc,
        l_i,
        m_i,
        q,
        k_base,
        v_base,
        stride_kn,
        stride_kd,
        stride_vn,
        stride_vd,
        offs_d,
        d_valid,
        query_pos,
        kv_len,
        mid,
        hi,
        qk_scale_log2,
        True,
        CAUSAL,
        EVEN_D,
        DOT_PREC,
        BLOCK_N,
    )

    seen = l_i > 0.0
    l_safe = tl.where(seen, l_i, 1.0)
    o = acc / l_safe[:, None]
    tl.store(
        O
        + split * stride_os
        + b * stride_ob
        + h * stride_oh
        + offs_m[:, None] * stride_om
        + offs_d[None, :] * stride_od,
        o.to(O.dtype.element_ty),
        mask=m_valid[:, None] & d_valid[None, :],
    )
    lse = tl.where(seen, (m_i + tl.log2(l_safe)) / 1.4426950408889634, float("-inf"))
    tl.store(LSE + split * stride_lses + b * stride_lseb + h * stride_lseh + offs_m, lse, mask=m_valid)


@kernel(configs_fn=_colsum_configs, key=["LQ_BUCKET", "LK_BUCKET", "BLOCK_D", "CAUSAL", "DOT_PREC"])
def _colsum_kernel(
    Q,
    K,
    LSE,
    COLSUM,
    KV_LEN,
    SEL_IDX,
    SEL_CNT,
    stride_qb,
    stride_qh,
    stride_qm,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_kd,
    stride_lseb,
    stride_lseh,
    stride_cb,
    stride_ch,
    stride_lenb,
    stride_selb,
    Hq,
    G,
    Lq,
    Lk,
    D,
    qk_scale_log2,
    LQ_BUCKET,
    LK_BUCKET,
    CAUSAL: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_PREC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b, h, hk, kv_len = _batch_head(pid_bh, Hq, G, KV_LEN, stride_lenb, Lk)

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_s0 = tl.arange(0, BLOCK_M)
    n_valid = offs_n < kv_len
    d_valid = offs_d < D
    kt = tl.load(
        K + b * stride_kb + hk * stride_kh + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd,
        mask=n_valid[None, :] & d_valid[:, None],
        other=0.0,
    )  # [BLOCK_D, BLOCK_N], loaded once
    n_sel = tl.load(SEL_CNT + b)
    n_sel = tl.where(pid_n * BLOCK_N < kv_len, n_sel, 0)  # key block entirely in the padding: nothing to do
    acc = tl.zeros([BLOCK_N], tl.float32)
    for start in range(0, n_sel, BLOCK_M):
        offs_s = start + offs_s0
        s_valid = offs_s < n_sel
        rows = tl.load(SEL_IDX + b * stride_selb + offs_s, mask=s_valid, other=0)
        active = start < n_sel
        if CAUSAL:  # rows ascending: a block whose last row precedes this key block sees none of it
            last_row = tl.max(tl.where(s_valid, rows, -1), 0)
            active = kv_len - Lq + last_row >= pid_n * BLOCK_N
        if active:
            q = tl.load(
                Q + b * stride_qb + h * stride_qh + rows[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=s_valid[:, None] & d_valid[None, :],
                other=0.0,
            )
            lse = tl.load(LSE + b * stride_lseb + h * stride_lseh + rows, mask=s_valid, other=float("-inf"))
            row_ok = s_valid & (lse > float("-inf"))
            lse2 = tl.where(row_ok, lse * 1.4426950408889634, 0.0)
            s = tl.dot(q, kt, input_precision=DOT_PREC) * qk_scale_log2
            keep = row_ok[:, None] & n_valid[None, :]
            if CAUSAL:
                keep = keep & (offs_n[None, :] <= (kv_len - Lq + rows)[:, None])
            p = tl.where(keep, tl.exp2(s - lse2[:, None]), 0.0)
            acc += tl.sum(p, 0)
    tl.store(COLSUM + b * stride_cb + h * stride_ch + offs_n, acc, mask=offs_n < Lk)


def _dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs: exact fp32 products (no TF32), so colsum meets rtol 1e-3 against an fp32 reference
    return "ieee" if dtype == torch.float32 else "tf32"


def default_meta(Lq: int, device: torch.device, pass_: int) -> dict:
    """Block sizes used without autotuning (always in the interpreter)."""
    if pass_ == 1:
        return {"BLOCK_M": 16 if Lq <= 16 else 64, "BLOCK_N": 64 if device.type == "cpu" else 32}
    return {"BLOCK_M": 16 if Lq <= 16 else 32, "BLOCK_N": 64}


SPLIT_ALIGN = 128  # split lengths are multiples of every BLOCK_N in the configs


def choose_num_splits(B: int, Hq: int, Lq: int, Lk: int, device: torch.device) -> int:
    """Split-K factor for pass 1: only when few (query block, head) programs would leave the GPU idle
    (decode, short chunks against a long cache); each split keeps at least 512 keys. 1 on CPU."""
    if device.type != "cuda":
        return 1
    programs = B * Hq * triton.cdiv(Lq, 64)
    want = triton.cdiv(2 * sm_count(device), programs)
    return max(1, min(want, Lk // 512, 64))


@kernel()
def _combine_kernel(
    OP,
    LSEP,
    O,
    LSE,
    n_splits,
    R,
    Hq,
    Lq,
    D,
    stride_ob,
    stride_oh,
    stride_om,
    stride_od,
    stride_lb,
    stride_lh,
    BLOCK_S: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """One program per query row r of ``[B, Hq, Lq]``: ``lse = logsumexp_s lse_s``, ``o = sum_s exp(lse_s - lse) o_s``
    over the split partials ``OP [n_splits, R, D]`` (normalised per split), ``LSEP [n_splits, R]`` (-inf: empty
    split), ``BLOCK_S`` splits at a time with a running max. Rows no split saw: o = 0, lse = -inf."""
    r = tl.program_id(0)
    b = r // (Hq * Lq)
    h = (r // Lq) % Hq
    m_row = r % Lq
    dd = tl.arange(0, BLOCK_D)
    d_ok = dd < D
    m_run = float("-inf")
    w_sum = 0.0
    acc = tl.zeros([BLOCK_D], tl.float32)
    for s0 in range(0, n_splits, BLOCK_S):
        sp = s0 + tl.arange(0, BLOCK_S)
        s_ok = sp < n_splits
        lse_s = tl.load(LSEP + sp.to(tl.int64) * R + r, mask=s_ok, other=float("-inf"))
        m_new = tl.maximum(m_run, tl.max(lse_s, axis=0))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_run - m_safe)
        w = tl.exp(lse_s - m_safe)  # 0 for empty splits
        o_s = tl.load(
            OP + (sp.to(tl.int64) * R + r)[:, None] * D + dd[None, :], mask=s_ok[:, None] & d_ok[None, :], other=0.0
        )
        w_sum = w_sum * alpha + tl.sum(w, axis=0)
        acc = acc * alpha + tl.sum(o_s * w[:, None], axis=0)
        m_run = m_new
    seen = w_sum > 0.0
    out = tl.where(seen, acc / tl.where(seen, w_sum, 1.0), 0.0)
    tl.store(
        O + b * stride_ob + h * stride_oh + m_row * stride_om + dd * stride_od, out.to(O.dtype.element_ty), mask=d_ok
    )
    lse = tl.where(seen, m_run + tl.log(tl.where(seen, w_sum, 1.0)), float("-inf"))
    tl.store(LSE + b * stride_lb + h * stride_lh + m_row, lse)


def combine_splits(o_part, lse_part, out_dtype):
    """Merge per-split partial results: ``lse = logsumexp_s lse_s``, ``o = sum_s exp(lse_s - lse) o_s``."""
    lse = torch.logsumexp(lse_part, dim=0)  # -inf where no split saw a key
    weight = torch.exp(lse_part - lse.masked_fill(torch.isinf(lse), 0.0))  # 0 for empty splits
    o = (weight[..., None] * o_part).sum(dim=0)
    return o.to(out_dtype), lse


def triton_scored_attention(
    q,
    k,
    v,
    *,
    causal,
    scale,
    kv_lengths,
    score_q_mask,
    autotune=True,
    meta_fwd=None,
    meta_colsum=None,
    num_splits=None,
    score_q_range=None,
):
    """Validated arguments in, ``(o, lse, colsum)`` out (see the public :func:`scored_attention`).
    ``score_q_range (start, stop)``, when the selection is one (``score_q_mask`` must then be its mask), builds the
    row list without a sort.

    ``meta_fwd`` / ``meta_colsum`` force block sizes (``{"BLOCK_M", "BLOCK_N"}`` + optional ``num_warps``,
    ``num_stages``) and disable autotuning for that pass. ``num_splits`` forces the pass-1 split-K factor
    (default :func:`choose_num_splits`); with more than one split, partial ``o`` (fp32) and ``lse`` per key
    range are merged by :func:`combine_splits`.
    """
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        # the Triton interpreter computes bf16 arithmetic wrongly: run it in fp32 and round o back
        o, lse, colsum = triton_scored_attention(
            q.float(),
            k.float(),
            v.float(),
            causal=causal,
            scale=scale,
            kv_lengths=kv_lengths,
            score_q_mask=score_q_mask,
            autotune=autotune,
            meta_fwd=meta_fwd,
            meta_colsum=meta_colsum,
            num_splits=num_splits,
            score_q_range=score_q_range,
        )
        return o.to(q.dtype), lse, colsum
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    dev = q.device
    o = torch.empty_like(q)
    lse = torch.empty(B, Hq, Lq, dtype=torch.float32, device=dev)
    colsum = None if score_q_mask is None else torch.zeros(B, Hq, Lk, dtype=torch.float32, device=dev)
    if Lq == 0 or B * Hq == 0:
        return o, lse, colsum
    if Lk == 0:
        o.zero_()
        lse.fill_(float("-inf"))
        return o, lse, colsum
    if kv_lengths is None:
        kv_len = torch.full((B, Hkv), Lk, dtype=torch.int32, device=dev)
    else:
        kv_len = kv_lengths.to(torch.int32).contiguous()
    block_d = max(16, next_power_of_2(D))
    prec = _dot_precision(q.dtype)
    qk_scale_log2 = float(scale) * LOG2E
    buckets = (next_power_of_2(Lq), next_power_of_2(Lk))

    def launch(kern, grid_fn, args, forced, pass_):
        if forced is not None:
            return kern.launch(grid_fn(forced), *args, device=dev, meta=dict(forced), autotune=False)
        if autotune and dev.type == "cuda":
            return kern.launch(grid_fn, *args, device=dev, meta={}, autotune=True)
        meta = default_meta(Lq, dev, pass_)
        return kern.launch(grid_fn(meta), *args, device=dev, meta=meta, autotune=False)

    splits = choose_num_splits(B, Hq, Lq, Lk, dev) if num_splits is None else int(num_splits)
    split_len = triton.cdiv(triton.cdiv(Lk, max(1, splits)), SPLIT_ALIGN) * SPLIT_ALIGN
    splits = triton.cdiv(Lk, split_len)
    if splits == 1:
        o_out, lse_out, split_strides = o, lse, (0, 0)
    else:
        o_out = torch.empty(splits, B, Hq, Lq, D, dtype=torch.float32, device=dev)
        lse_out = torch.empty(splits, B, Hq, Lq, dtype=torch.float32, device=dev)
        split_strides = (o_out.stride(0), lse_out.stride(0))
    o_strides = o_out.stride()[-4:]
    lse_strides = lse_out.stride()[-3:-1]
    launch(
        _attn_fwd_kernel,
        lambda META: (triton.cdiv(Lq, META["BLOCK_M"]), B * Hq, splits),
        (
            q,
            k,
            v,
            o_out,
            lse_out,
            kv_len,
            *q.stride(),
            *k.stride(),
            *v.stride(),
            split_strides[0],
            *o_strides,
            split_strides[1],
            *lse_strides,
            kv_len.stride(0),
            Hq,
            Hq // Hkv,
            Lq,
            Lk,
            D,
            qk_scale_log2,
            split_len,
            *buckets,
            causal,
            block_d,
            block_d == D,
            prec,
        ),
        meta_fwd,
        1,
    )
    if splits > 1:
        R = B * Hq * Lq
        _combine_kernel.launch(
            (R,),
            o_out,
            lse_out,
            o,
            lse,
            splits,
            R,
            Hq,
            Lq,
            D,
            *o.stride(),
            lse.stride(0),
            lse.stride(1),
            device=dev,
            meta=dict(BLOCK_S=min(16, next_power_of_2(splits)), BLOCK_D=block_d),
        )
    if colsum is None:
        return o, lse, colsum
    # compact per-batch list of selected rows (ascending), padded; counts per batch
    if score_q_range is not None:  # a range needs no sort
        sel_idx = torch.arange(score_q_range[0], score_q_range[1], device=dev, dtype=torch.int32)
        sel_idx = sel_idx.expand(B, -1).contiguous()
        sel_cnt = torch.full((B,), score_q_range[1] - score_q_range[0], device=dev, dtype=torch.int32)
    else:
        sel = score_q_mask.to(dev)
        sel_idx = torch.argsort((~sel).to(torch.int8), dim=1, stable=True).to(torch.int32).contiguous()
        sel_cnt = sel.sum(dim=1, dtype=torch.int32).contiguous()
    launch(
        _colsum_kernel,
        lambda META: (triton.cdiv(Lk, META["BLOCK_N"]), B * Hq),
        (
            q,
            k,
            lse,
            colsum,
            kv_len,
            sel_idx,
            sel_cnt,
            *q.stride(),
            *k.stride(),
            lse.stride(0),
            lse.stride(1),
            colsum.stride(0),
            colsum.stride(1),
            kv_len.stride(0),
            sel_idx.stride(0),
            Hq,
            Hq // Hkv,
            Lq,
            Lk,
            D,
            qk_scale_log2,
            *buckets,
            causal,
            block_d,
            prec,
        ),
        meta_colsum,
        2,
    )
    return o, lse, colsum


__all__ = ["triton_scored_attention", "default_meta", "choose_num_splits", "combine_splits"]
