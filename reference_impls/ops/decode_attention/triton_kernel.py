"""Triton split-K ("FlashDecoding") decode attention over per-KV-head ragged caches, plus Quest chunk scoring.

One kernel, specialised by constexpr flags, serves every cache layout of ``naive.py``:
  QUANT  - int8 / fp8 K and V with per-(token, head) scales. The scale is factored out of the dot products:
           s = (q . k_int) * k_scale_j and o += (p * v_scale_j) @ v_int, so the int8/fp8 values (exact in fp16/bf16)
           are only converted in registers and never written back dequantised.
  ROPE   - RoPE-on-read: keys stored pre-RoPE are rotated in registers at per-slot positions (ring buffers). The
           angle is first reduced to [-pi, pi] (Cody-Waite, 2 pi split into an exactly representable 6.28125 and
           the rest); on CUDA the reduced angle goes to the hardware's approximate sin/cos (``FAST_TRIG``,
           absolute error about 1e-6 on [-pi, pi]), in the interpreter to the accurate ones.
  SPARSE - block-sparse: each split walks a list of selected chunk ids (chunk size == BLOCK_N).
  PACKED - flat per-head segments: head (b, h) owns rows ``ROW0[b, h] ..`` of ``[N, D]`` buffers.
Grid: (B * Hkv, n_splits). A program owns one KV head and all its G query heads (packed as rows of a
[G_PAD, D] tile, G_PAD >= 16 for tl.dot), so every K/V byte is read once per decode step (GQA-friendly).
The split count is a host-side number that depends only on shapes (about two waves of the device's SMs, see
:func:`choose_num_splits`); each program derives its own key range from its head's length on the device, so no
length is ever read back to the host (CUDA-graph capturable) and ragged heads are split evenly. Lengths and
segment offsets are clamped to the buffers in the kernel (unchecked bad input stays in bounds).
Partial (max, sum, unnormalised output) per split are merged by a second kernel (one program per query head,
walking the splits in bounded tiles). The dense kernel is autotuned on CUDA (key block, warps, stages); the
sparse kernel's key block is the chunk size. Plain pointer arithmetic only (no block pointers) so it runs on
Triton 3.6 and 3.9; loads are upcast to fp32 right after tl.load except the dot operands, which use the cache
dtype (fp32 under the interpreter).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import libdevice

from reference_impls.ops._triton import kernel, next_power_of_2, sm_count

__all__ = ["triton_decode_attention", "triton_chunk_scores", "choose_num_splits", "decode_configs"]

_LOG2E = 1.4426950408889634
MIN_KEYS_PER_SPLIT = 128  # fewer keys per split and the partial write + merge outweigh the reads they spread
WAVES = 2  # target programs = WAVES x SM count


def decode_configs():
    """Autotuning space of the dense kernel (key block x warps x pipeline stages)."""
    return [
        triton.Config({"BLOCK_N": bn}, num_warps=w, num_stages=s)
        for bn, w, s in [(32, 4, 2), (64, 4, 2), (64, 8, 3), (128, 4, 3)]
    ]


@triton.jit
def _rope_cos_sin(ang, FAST_TRIG: tl.constexpr):
    """cos and sin of ``ang`` (fp32 radians) after reduction to [-pi, pi]: n = round(ang / 2 pi), then
    ang - n * 6.28125 (exact: 6.28125 has 8 significant bits) - n * (2 pi - 6.28125)."""
    turns = tl.floor(ang * 0.15915494309189535 + 0.5)
    ang = ang - turns * 6.28125
    ang = ang - turns * 0.0019353071795864769
    if FAST_TRIG:
        return libdevice.fast_cosf(ang), libdevice.fast_sinf(ang)
    return tl.cos(ang), tl.sin(ang)


@kernel(configs_fn=decode_configs, key=["L_BUCKET", "BH_BUCKET", "G_PAD", "BLOCK_D", "QUANT", "ROPE", "PACKED"])
def _decode_split_kernel(
    Q,
    K,
    V,
    KS,
    VS,
    LENS,
    KPOS,
    INV_FREQ,
    CIDX,
    ROW0,
    OP,
    MP,
    LP,
    stride_qb,
    stride_qh,
    stride_kb,
    stride_kh,
    stride_kl,
    stride_vb,
    stride_vh,
    stride_vl,
    stride_sb,
    stride_sh,
    stride_pb,
    stride_ph,
    stride_cb,
    stride_ch,
    HKV,
    G,
    D,
    L_CAP,
    n_sel,
    chunks_per_split,
    scale_log2,
    L_BUCKET,
    BH_BUCKET,
    G_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HALF_D: tl.constexpr,
    QUANT: tl.constexpr,
    ROPE: tl.constexpr,
    SPARSE: tl.constexpr,
    PACKED: tl.constexpr,
    FAST_TRIG: tl.constexpr,
):
    pid_bh = tl.program_id(0)
    split = tl.program_id(1)
    n_splits = tl.num_programs(1)
    b = pid_bh // HKV
    hk = pid_bh % HKV
    length = tl.load(LENS + pid_bh).to(tl.int64)

    rows = tl.arange(0, G_PAD)
    row_ok = rows < G
    q_rows = Q + b * stride_qb + (hk * G + rows) * stride_qh
    dcol = tl.arange(0, BLOCK_D)
    d_ok = dcol < D
    hcol = tl.arange(0, HALF_D)
    h_ok = hcol < D // 2
    if PACKED:  # packed store: head (b, hk) owns rows ROW0[b, hk] .. + length of flat [N, D] buffers
        row0 = tl.minimum(tl.maximum(tl.load(ROW0 + pid_bh).to(tl.int64), 0), L_CAP)
        length = tl.minimum(tl.maximum(length, 0), L_CAP - row0)
    else:
        row0 = 0
        length = tl.minimum(tl.maximum(length, 0), L_CAP)
    k_base = K + b * stride_kb + hk * stride_kh + row0 * stride_kl
    v_base = V + b * stride_vb + hk * stride_vh + row0 * stride_vl

    if ROPE:
        q_lo = tl.load(q_rows[:, None] + hcol[None, :], mask=row_ok[:, None] & h_ok[None, :], other=0.0)
        q_hi = tl.load(q_rows[:, None] + D // 2 + hcol[None, :], mask=row_ok[:, None] & h_ok[None, :], other=0.0)
        inv_freq = tl.load(INV_FREQ + hcol, mask=h_ok, other=0.0).to(tl.float32)
    else:
        q = tl.load(q_rows[:, None] + dcol[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)

    m_i = tl.full([G_PAD], -1.0e30, tl.float32)  # finite "-inf": fully masked tiles stay NaN-free
    l_i = tl.zeros([G_PAD], tl.float32)
    acc = tl.zeros([G_PAD, BLOCK_D], tl.float32)

    if SPARSE:
        n_iter = chunks_per_split
    else:  # this head's keys split evenly over the n_splits programs of its row, in whole key blocks
        blocks_per_split = tl.cdiv(tl.cdiv(length, BLOCK_N), n_splits)
        lo = split * blocks_per_split * BLOCK_N
        hi = tl.minimum(lo + blocks_per_split * BLOCK_N, length)
        n_iter = tl.cdiv(tl.maximum(hi - lo, 0), BLOCK_N)

    for it in range(0, n_iter):
        if SPARSE:
            slot = split * chunks_per_split + it
            cid = tl.load(CIDX + b * stride_cb + hk * stride_ch + slot, mask=slot < n_sel, other=-1).to(tl.int64)
            offs = cid * BLOCK_N + tl.arange(0, BLOCK_N)
            kmask = (offs < length) & (offs >= 0)  # cid == -1 gives negative offsets
            offs = tl.where(kmask, offs, 0)
        else:
            offs = lo + it * BLOCK_N + tl.arange(0, BLOCK_N)
            kmask = offs < hi

        # ---- scores s = q . k * scale (in log2 units) ----
        if ROPE:
            k_lo = tl.load(
                k_base + offs[:, None] * stride_kl + hcol[None, :], mask=kmask[:, None] & h_ok[None, :], other=0.0
            ).to(tl.float32)
            k_hi = tl.load(
                k_base + offs[:, None] * stride_kl + D // 2 + hcol[None, :],
                mask=kmask[:, None] & h_ok[None, :],
                other=0.0,
            ).to(tl.float32)
            pos = tl.load(KPOS + b * stride_pb + hk * stride_ph + row0 + offs, mask=kmask, other=0).to(tl.float32)
            cos, sin = _rope_cos_sin(pos[:, None] * inv_freq[None, :], FAST_TRIG)
            r_lo = (k_lo * cos - k_hi * sin).to(q_lo.dtype)
            r_hi = (k_hi * cos + k_lo * sin).to(q_lo.dtype)
            s = tl.dot(q_lo, tl.trans(r_lo), input_precision="ieee")
            s += tl.dot(q_hi, tl.trans(r_hi), input_precision="ieee")
        else:
            k = tl.load(
                k_base + offs[:, None] * stride_kl + dcol[None, :], mask=kmask[:, None] & d_ok[None, :], other=0.0
            )
            s = tl.dot(q, tl.trans(k.to(q.dtype)), input_precision="ieee")
        if QUANT:
            ks = tl.load(KS + b * stride_sb + hk * stride_sh + row0 + offs, mask=kmask, other=0.0).to(tl.float32)
            s = s * ks[None, :]
        s = s * scale_log2
        s = tl.where(kmask[None, :], s, float("-inf"))

        # ---- online softmax update ----
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + offs[:, None] * stride_vl + dcol[None, :], mask=kmask[:, None] & d_ok[None, :], other=0.0)
        if QUANT:
            vs = tl.load(VS + b * stride_sb + hk * stride_sh + row0 + offs, mask=kmask, other=0.0).to(tl.float32)
            p = p * vs[None, :]
        if ROPE:
            pv = tl.dot(p.to(q_lo.dtype), v.to(q_lo.dtype), input_precision="ieee")
        else:
            pv = tl.dot(p.to(q.dtype), v.to(q.dtype), input_precision="ieee")
        acc = acc * alpha[:, None] + pv
        m_i = m_new

    out_rows = (pid_bh * G + rows) * n_splits + split  # OP [B*Hq, n_splits, D], MP/LP [B*Hq, n_splits]
    tl.store(OP + out_rows[:, None] * D + dcol[None, :], acc, mask=row_ok[:, None] & d_ok[None, :])
    tl.store(MP + out_rows, m_i, mask=row_ok)
    tl.store(LP + out_rows, l_i, mask=row_ok)


@kernel()
def _combine_kernel(OP, MP, LP, O, LSE, n_splits, D, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    """One program per (b, query head): merge the split-K partials (m in log2 units), ``BLOCK_S`` splits at a time
    with a running max (the tile stays [BLOCK_S, BLOCK_D] however many splits there are)."""
    row = tl.program_id(0)
    dd = tl.arange(0, BLOCK_D)
    d_ok = dd < D
    m_run = -1.0e30
    l_run = 0.0
    acc = tl.zeros([BLOCK_D], tl.float32)
    for s0 in range(0, n_splits, BLOCK_S):
        sp = s0 + tl.arange(0, BLOCK_S)
        s_ok = sp < n_splits
        m = tl.load(MP + row * n_splits + sp, mask=s_ok, other=-1.0e30)
        lsum = tl.load(LP + row * n_splits + sp, mask=s_ok, other=0.0)
        m_new = tl.maximum(m_run, tl.max(m, axis=0))
        alpha = tl.exp2(m_run - m_new)
        w = tl.where(s_ok, tl.exp2(m - m_new), 0.0)
        o = tl.load(
            OP + (row * n_splits + sp)[:, None] * D + dd[None, :], mask=s_ok[:, None] & d_ok[None, :], other=0.0
        )
        l_run = l_run * alpha + tl.sum(w * lsum, axis=0)
        acc = acc * alpha + tl.sum(o * w[:, None], axis=0)
        m_run = m_new
    empty = l_run == 0.0
    out = tl.where(empty, 0.0, acc / tl.where(empty, 1.0, l_run))
    tl.store(O + row * D + dd, out.to(O.dtype.element_ty), mask=d_ok)
    lse = tl.where(empty, float("-inf"), (m_run + tl.log2(tl.where(empty, 1.0, l_run))) / 1.4426950408889634)
    tl.store(LSE + row, lse)


COMBINE_TILE = 32  # splits merged per step of the combine kernel


def _combine_splits(o_part, m_part, l_part, B, Hq, D, out_dtype):
    """Merge split-K partials (m in log2 units). Rows with no visible key: o = 0, lse = -inf."""
    n_splits = m_part.shape[1]
    o = torch.empty(B * Hq, D, device=o_part.device, dtype=out_dtype)
    lse = torch.empty(B * Hq, device=o_part.device, dtype=torch.float32)
    _combine_kernel.launch(
        (B * Hq,),
        o_part,
        m_part,
        l_part,
        o,
        lse,
        n_splits,
        D,
        device=o_part.device,
        meta=dict(BLOCK_S=min(COMBINE_TILE, next_power_of_2(n_splits)), BLOCK_D=next_power_of_2(D)),
    )
    return o.view(B, Hq, D), lse.view(B, Hq)


def _combine_splits_torch(o_part, m_part, l_part, B, Hq, D, out_dtype):
    """PyTorch version of the merge (the reference for ``_combine_kernel``)."""
    m = m_part.max(dim=1, keepdim=True).values
    w = torch.exp2(m_part - m)
    l_tot = (w * l_part).sum(dim=1)
    o = (w[..., None] * o_part).sum(dim=1) / l_tot.clamp_min(1e-30)[:, None]
    lse = (m.squeeze(1) + torch.log2(l_tot)) / _LOG2E
    empty = l_tot == 0
    o = torch.where(empty[:, None], torch.zeros_like(o), o)
    lse = torch.where(empty, torch.full_like(lse, float("-inf")), lse)
    return o.view(B, Hq, D).to(out_dtype), lse.view(B, Hq)


def choose_num_splits(n_rows: int, max_len: int, device: torch.device) -> int:
    """Splits per (b, KV head) row: enough programs for about ``WAVES`` waves of the device's SMs, but no split
    with fewer than ``MIN_KEYS_PER_SPLIT`` keys of the longest possible head (``max_len``, a host-side bound)."""
    want = -(-WAVES * sm_count(device) // max(n_rows, 1))
    return max(1, min(want, -(-max_len // MIN_KEYS_PER_SPLIT)))


def triton_decode_attention(
    q,
    k,
    v,
    kv_lengths,
    *,
    scale=None,
    k_scale=None,
    v_scale=None,
    key_positions=None,
    rope_inv_freq=None,
    chunk_idx=None,
    chunk_size=None,
    row0=None,
    n_splits=None,
    block_n=None,
    num_warps=4,
):
    """Same contract as ``naive_decode_attention`` (inputs validated by the dispatcher). ``row0 [B, Hkv]``
    selects the packed layout: k, v are flat ``[N, D]`` (scales / positions ``[N]``) and head (b, h) owns rows
    ``row0[b, h] .. row0[b, h] + kv_lengths[b, h] - 1``. ``n_splits`` / ``block_n`` force the split count / key
    block (a forced block turns autotuning off). Reads no tensor value on the host."""
    packed = row0 is not None
    if packed:
        B, Hkv = row0.shape
        L_cap = k.shape[0]  # every segment lies inside the N stored rows
        k, v = k[None, None], v[None, None]  # [1, 1, N, D]: b/h strides are ignored (0)
        if k_scale is not None:
            k_scale, v_scale = k_scale[None, None], v_scale[None, None]
        if key_positions is not None:
            key_positions = key_positions[None, None]
    else:
        Hkv, L_cap = k.shape[1], k.shape[2]
    B, Hq, D = q.shape
    G = Hq // Hkv
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    quant = k_scale is not None
    rope = key_positions is not None
    sparse = chunk_idx is not None
    if k.stride(-1) != 1 or v.stride(-1) != 1:
        k, v = k.contiguous(), v.contiguous()
    q = q.contiguous()
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"q must be fp16/bf16/fp32, got {q.dtype}")
    lens = kv_lengths if kv_lengths.dim() == 2 else kv_lengths[:, None].expand(B, Hkv)
    lens = lens.to(torch.int32).contiguous()
    dev = q.device
    autotune = False
    if sparse:
        block_n = chunk_size
        n_sel = chunk_idx.shape[-1]
        if n_splits is None:  # about two waves, at least one chunk per split
            n_splits = max(1, min(n_sel, -(-WAVES * sm_count(dev) // max(B * Hkv, 1))))
        chunks_per_split = max(1, -(-n_sel // n_splits))
        n_splits = max(1, -(-n_sel // chunks_per_split))
        cidx = chunk_idx.to(torch.int32).contiguous()
    else:
        n_sel, chunks_per_split, cidx = 0, 0, lens
        if n_splits is None:
            n_splits = choose_num_splits(B * Hkv, L_cap, dev)
        autotune = block_n is None and dev.type == "cuda"
        block_n = block_n or (64 if dev.type == "cuda" else 16)
    n_splits = int(n_splits)
    r0 = row0.to(torch.int64).contiguous() if packed else lens

    def unit_last(t):
        return t if t.stride(-1) == 1 else t.contiguous()

    ks = unit_last(k_scale) if quant else lens
    vs = unit_last(v_scale) if quant else lens
    if quant and (ks.stride() != vs.stride()):
        ks, vs = ks.contiguous(), vs.contiguous()
    kpos = unit_last(key_positions) if rope else lens
    parts = torch.empty(B * Hq * n_splits * (D + 2), device=dev, dtype=torch.float32)
    o_part = parts[: B * Hq * n_splits * D].view(B * Hq, n_splits, D)
    m_part = parts[B * Hq * n_splits * D : B * Hq * n_splits * (D + 1)].view(B * Hq, n_splits)
    l_part = parts[B * Hq * n_splits * (D + 1) :].view(B * Hq, n_splits)
    inv = rope_inv_freq.to(torch.float32).contiguous() if rope else parts
    meta = dict(
        G_PAD=max(16, next_power_of_2(G)),
        BLOCK_D=next_power_of_2(D),
        HALF_D=next_power_of_2(max(D // 2, 1)),
        QUANT=quant,
        ROPE=rope,
        SPARSE=sparse,
        PACKED=packed,
        FAST_TRIG=dev.type == "cuda",
    )
    if not autotune:
        meta["BLOCK_N"] = block_n
    _decode_split_kernel.launch(
        (B * Hkv, n_splits),
        q,
        k,
        v,
        ks,
        vs,
        lens,
        kpos,
        inv,
        cidx,
        r0,
        o_part,
        m_part,
        l_part,
        q.stride(0),
        q.stride(1),
        0 if packed else k.stride(0),
        0 if packed else k.stride(1),
        k.stride(2),
        0 if packed else v.stride(0),
        0 if packed else v.stride(1),
        v.stride(2),
        ks.stride(0) if quant and not packed else 0,
        ks.stride(1) if quant and not packed else 0,
        kpos.stride(0) if rope and not packed else 0,
        kpos.stride(1) if rope and not packed else 0,
        cidx.stride(0) if sparse else 0,
        cidx.stride(1) if sparse else 0,
        Hkv,
        G,
        D,
        L_cap,
        n_sel,
        chunks_per_split,
        scale * _LOG2E,
        min(next_power_of_2(L_cap), 1 << 17),
        min(next_power_of_2(B * Hkv), 256),
        device=dev,
        meta=meta,
        autotune=autotune,
        **({} if autotune else {"num_warps": num_warps}),
    )
    return _combine_splits(o_part, m_part, l_part, B, Hq, D, q.dtype)


@kernel()
def _chunk_score_kernel(
    Q,
    KMIN,
    KMAX,
    NCH,
    OUT,
    stride_qb,
    stride_qh,
    stride_sb,
    stride_sh,
    stride_sc,
    HKV,
    G,
    D,
    C,
    MEAN: tl.constexpr,
    G_PAD: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_bh = tl.program_id(0)
    cb = tl.program_id(1)
    b = pid_bh // HKV
    hk = pid_bh % HKV
    n_ch = tl.load(NCH + pid_bh)
    rows = tl.arange(0, G_PAD)
    cols = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    dd = tl.arange(0, BLOCK_D)
    q = tl.load(
        Q + b * stride_qb + (hk * G + rows)[:, None] * stride_qh + dd[None, :],
        mask=(rows[:, None] < G) & (dd[None, :] < D),
        other=0.0,
    ).to(tl.float32)  # [G_PAD, BLOCK_D]
    cmask = (cols < n_ch)[:, None] & (dd[None, :] < D)
    base = pid_bh // HKV * stride_sb + hk * stride_sh
    kmin = tl.load(KMIN + base + cols[:, None] * stride_sc + dd[None, :], mask=cmask, other=0.0).to(tl.float32)
    kmax = tl.load(KMAX + base + cols[:, None] * stride_sc + dd[None, :], mask=cmask, other=0.0).to(tl.float32)
    q3 = q[:, None, :]
    ub = tl.sum(tl.maximum(q3 * kmin[None, :, :], q3 * kmax[None, :, :]), axis=2)  # [G_PAD, BLOCK_C]
    if MEAN:
        ub = tl.sum(tl.where(rows[:, None] < G, ub, 0.0), axis=0) / G
    else:
        ub = tl.max(tl.where(rows[:, None] < G, ub, float("-inf")), axis=0)
    ub = tl.where(cols < n_ch, ub, float("-inf"))
    tl.store(OUT + pid_bh * C + cols, ub, mask=cols < C)


def triton_chunk_scores(q, kmin, kmax, n_chunks, *, reduce="max"):
    """Same contract as ``naive_chunk_scores``; one program per (b, kv head, block of chunks)."""
    B, Hq, D = q.shape
    Hkv, C = kmin.shape[1], kmin.shape[2]
    G = Hq // Hkv
    q = q.contiguous()
    kmin = kmin.contiguous()
    kmax = kmax.contiguous()
    nch = n_chunks.to(torch.int32).contiguous()
    out = torch.empty(B, Hkv, C, device=q.device, dtype=torch.float32)
    BLOCK_C = 16
    _chunk_score_kernel.launch(
        (B * Hkv, -(-C // BLOCK_C)),
        q,
        kmin,
        kmax,
        nch,
        out,
        q.stride(0),
        q.stride(1),
        kmin.stride(0),
        kmin.stride(1),
        kmin.stride(2),
        Hkv,
        G,
        D,
        C,
        device=q.device,
        meta=dict(MEAN=(reduce == "mean"), G_PAD=next_power_of_2(G), BLOCK_C=BLOCK_C, BLOCK_D=next_power_of_2(D)),
    )
    return out
