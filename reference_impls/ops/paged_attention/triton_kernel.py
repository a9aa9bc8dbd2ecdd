"""Triton paged decode attention: one program per (sequence, KV head) walks the sequence's block table and reads
each physical block in place (no gathered copy), all G query heads of the KV head packed as rows of one tile
(``G_PAD >= 16`` rows for ``tl.dot``), online softmax in base 2; dot operands in the cache dtype, fp32 accumulation.
No split-K: one program per (sequence, KV head)
is enough for the batched serving regime PagedAttention targets (the split-K kernel is ``ops.decode_attention``).
Plain pointer arithmetic (triton 3.6 / 3.9); runs on CPU tensors through the interpreter.
"""

from __future__ import annotations

import torch
import triton.language as tl

from reference_impls.ops._triton import kernel, next_power_of_2

__all__ = ["triton_paged_decode_attention"]

_LOG2E = 1.4426950408889634


@kernel()
def _paged_decode_kernel(
    Q,
    KP,
    VP,
    BT,
    LENS,
    O,
    LSE,
    stride_qb,
    stride_qh,
    stride_pb,
    stride_ph,
    stride_pl,
    stride_btb,
    stride_ob,
    stride_oh,
    HKV,
    G,
    D,
    scale_log2,
    G_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    b = pid // HKV
    hk = pid % HKV
    length = tl.load(LENS + b)
    rows = tl.arange(0, G_PAD)
    row_ok = rows < G
    dcol = tl.arange(0, BLOCK_D)
    d_ok = dcol < D
    q = tl.load(
        Q + b * stride_qb + (hk * G + rows)[:, None] * stride_qh + dcol[None, :],
        mask=row_ok[:, None] & d_ok[None, :],
        other=0.0,
    )
    m_i = tl.full([G_PAD], -1.0e30, tl.float32)
    l_i = tl.zeros([G_PAD], tl.float32)
    acc = tl.zeros([G_PAD, BLOCK_D], tl.float32)
    offs = tl.arange(0, BLOCK_SIZE)
    n_blocks = (length + BLOCK_SIZE - 1) // BLOCK_SIZE
    for blk in range(0, n_blocks):
        phys = tl.load(BT + b * stride_btb + blk).to(tl.int64)
        kmask = blk * BLOCK_SIZE + offs < length
        base = phys * stride_pb + hk * stride_ph + offs[:, None] * stride_pl + dcol[None, :]
        k = tl.load(KP + base, mask=kmask[:, None] & d_ok[None, :], other=0.0)
        s = tl.dot(q, tl.trans(k.to(q.dtype)), input_precision="ieee") * scale_log2
        s = tl.where(kmask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(VP + base, mask=kmask[:, None] & d_ok[None, :], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        m_i = m_new
    empty = l_i == 0.0
    out = tl.where(empty[:, None], 0.0, acc / tl.where(empty, 1.0, l_i)[:, None])
    tl.store(
        O + b * stride_ob + (hk * G + rows)[:, None] * stride_oh + dcol[None, :],
        out.to(O.dtype.element_ty),
        mask=row_ok[:, None] & d_ok[None, :],
    )
    lse = tl.where(empty, float("-inf"), (m_i + tl.log2(tl.where(empty, 1.0, l_i))) / 1.4426950408889634)
    tl.store(LSE + b * HKV * G + hk * G + rows, lse, mask=row_ok)


def triton_paged_decode_attention(q, k_pool, v_pool, block_tables, lengths, *, scale=None):
    """Same contract as ``naive_paged_decode_attention`` (inputs validated by the dispatcher)."""
    B, Hq, D = q.shape
    Hkv, block_size = k_pool.shape[1], k_pool.shape[2]
    G = Hq // Hkv
    scale = D**-0.5 if scale is None else scale
    q = q.contiguous()
    k_pool, v_pool = k_pool.contiguous(), v_pool.contiguous()
    block_tables = block_tables.to(torch.int32).contiguous()
    lengths = lengths.to(torch.int32).contiguous()
    o = torch.empty(B, Hq, D, dtype=q.dtype, device=q.device)
    lse = torch.empty(B, Hq, dtype=torch.float32, device=q.device)
    _paged_decode_kernel.launch(
        (B * Hkv,),
        q,
        k_pool,
        v_pool,
        block_tables,
        lengths,
        o,
        lse,
        q.stride(0),
        q.stride(1),
        k_pool.stride(0),
        k_pool.stride(1),
        k_pool.stride(2),
        block_tables.stride(0),
        o.stride(0),
        o.stride(1),
        Hkv,
        G,
        D,
        scale * _LOG2E,
        device=q.device,
        meta=dict(G_PAD=max(16, next_power_of_2(G)), BLOCK_SIZE=block_size, BLOCK_D=max(16, next_power_of_2(D))),
    )
    return o, lse
