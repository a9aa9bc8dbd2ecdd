"""Naive PyTorch specification of decode attention over compressed / quantized / ring-buffer / chunk-sparse KV caches.

Everything here is fp32 and materialises the scores; it is the readable reference for ``triton_kernel.py``.

Layouts (GQA, ``Hq = G * Hkv``):
  q            [B, Hq, D]           one decode query per row (the wrappers also accept [B, Hq, 1, D])
  k, v         [B, Hkv, L, D]       per-KV-head caches; row (b, h) is valid on its first ``kv_lengths[b, h]`` slots
  kv_lengths   [B, Hkv] (or [B])    ragged per-KV-head lengths (per-head budgets store only what is kept)
  k_scale, v_scale [B, Hkv, L]      per-(token, head) dequantisation scales for int8 / fp8 caches (value = x * scale)
  key_positions [B, Hkv, L]         RoPE-on-read: keys are stored *before* RoPE and rotated at these positions
  chunk_idx    [B, Hkv, S]          block-sparse: selected chunk ids (-1 padded); key j is visible iff j // chunk_size
                                    is selected (and j < kv_lengths)
Returns ``(o [B, Hq, D] in q.dtype, lse [B, Hq] fp32)``; a row with no visible key gets o = 0, lse = -inf.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "rope_rotate",
    "dequantize_kv",
    "naive_decode_attention",
    "naive_chunk_summaries",
    "naive_chunk_scores",
    "unpack_rows",
]


def rope_rotate(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotary embedding in the rotate-half (Llama / HF) convention, computed in fp32.

    x [..., L, D], positions broadcastable to x.shape[:-1] (integer or float; negative positions undo a rotation),
    inv_freq [D // 2]. Returns fp32.
    """
    ang = positions.to(torch.float32)[..., None] * inv_freq.to(torch.float32)  # [..., L, D/2]
    cos, sin = torch.cos(ang), torch.sin(ang)
    x = x.to(torch.float32)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def dequantize_kv(x: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """``x.float() * scale[..., None]`` (identity cast when ``scale`` is None)."""
    x = x.to(torch.float32)
    return x if scale is None else x * scale.to(torch.float32)[..., None]


def _lengths_2d(kv_lengths: torch.Tensor, B: int, Hkv: int) -> torch.Tensor:
    if kv_lengths.dim() == 1:
        kv_lengths = kv_lengths[:, None].expand(B, Hkv)
    return kv_lengths.to(torch.long)


def naive_decode_attention(
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
):
    """Reference: softmax(q . k_j * scale) over the visible keys j of the query's KV head, times v."""
    B, Hq, D = q.shape
    Hkv, L = k.shape[1], k.shape[2]
    G = Hq // Hkv
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    lengths = _lengths_2d(kv_lengths, B, Hkv)
    kf = dequantize_kv(k, k_scale)
    vf = dequantize_kv(v, v_scale)
    if key_positions is not None:
        kf = rope_rotate(kf, key_positions, rope_inv_freq)
    visible = torch.arange(L, device=q.device)[None, None, :] < lengths[..., None]  # [B, Hkv, L]
    if chunk_idx is not None:
        n_chunks = -(-L // chunk_size)
        sel = torch.zeros(B, Hkv, n_chunks + 1, dtype=torch.bool, device=q.device)
        ids = torch.where(chunk_idx >= 0, chunk_idx.long(), torch.full_like(chunk_idx.long(), n_chunks))
        sel.scatter_(2, ids, True)
        chunk_of_key = torch.arange(L, device=q.device) // chunk_size
        visible = visible & sel[:, :, chunk_of_key]
    kf = kf.repeat_interleave(G, dim=1)  # [B, Hq, L, D]
    vf = vf.repeat_interleave(G, dim=1)
    visible = visible.repeat_interleave(G, dim=1)  # [B, Hq, L]
    s = torch.einsum("bhd,bhld->bhl", q.to(torch.float32), kf) * scale
    s = s.masked_fill(~visible, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse[..., None]).nan_to_num(0.0)  # rows without visible keys -> all zero
    o = torch.einsum("bhl,bhld->bhd", p, vf)
    return o.to(q.dtype), lse


def naive_chunk_summaries(k: torch.Tensor, kv_lengths: torch.Tensor, chunk_size: int):
    """Quest-style per-chunk summaries: elementwise min and max of the (valid) keys of each chunk.

    Returns ``(kmin, kmax [B, Hkv, C, D] fp32, n_chunks [B, Hkv] long)`` with C = ceil(L / chunk_size);
    chunks past ``n_chunks`` are filled with 0 (never read: scores there are -inf).
    """
    B, Hkv, L, D = k.shape
    lengths = _lengths_2d(kv_lengths, B, Hkv)
    C = -(-L // chunk_size)
    pad = C * chunk_size - L
    kf = torch.nn.functional.pad(k.to(torch.float32), (0, 0, 0, pad)).view(B, Hkv, C, chunk_size, D)
    valid = torch.arange(C * chunk_size, device=k.device)[None, None, :] < lengths[..., None]
    valid = valid.view(B, Hkv, C, chunk_size, 1)
    kmin = kf.masked_fill(~valid, float("inf")).amin(dim=3)
    kmax = kf.masked_fill(~valid, float("-inf")).amax(dim=3)
    n_chunks = (lengths + chunk_size - 1) // chunk_size
    live = torch.arange(C, device=k.device)[None, None, :] < n_chunks[..., None]
    kmin = torch.where(live[..., None], kmin, torch.zeros_like(kmin))
    kmax = torch.where(live[..., None], kmax, torch.zeros_like(kmax))
    return kmin, kmax, n_chunks


def naive_chunk_scores(
    q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, n_chunks: torch.Tensor, *, reduce: str = "max"
) -> torch.Tensor:
    """Quest upper bound of q . k over each chunk: ``sum_d max(q_d * kmin_d, q_d * kmax_d)`` (>= max_j q . k_j).

    q [B, Hq, D]; summaries [B, Hkv, C, D]. The bound is per query head, then reduced over the GQA group
    (``reduce="max"``: still an upper bound of every head's max; ``"mean"``). Returns [B, Hkv, C] fp32, -inf for
    chunks at or beyond ``n_chunks``.
    """
    B, Hq, D = q.shape
    Hkv, C = kmin.shape[1], kmin.shape[2]
    G = Hq // Hkv
    qf = q.to(torch.float32).view(B, Hkv, G, 1, D)
    ub = torch.maximum(qf * kmin[:, :, None].float(), qf * kmax[:, :, None].float()).sum(-1)  # [B, Hkv, G, C]
    ub = ub.amax(dim=2) if reduce == "max" else ub.mean(dim=2)
    live = torch.arange(C, device=q.device)[None, None, :] < n_chunks.to(torch.long)[..., None]
    return ub.masked_fill(~live, float("-inf"))


def unpack_rows(
    flat: torch.Tensor, row0: torch.Tensor, lengths: torch.Tensor, width: int | None = None, fill=0
) -> torch.Tensor:
    """Packed -> padded: ``flat [N, ...]`` where head (b, h) owns rows ``row0[b, h] ..`` (``lengths[b, h]`` of
    them) -> ``[B, H, width, ...]`` (``width`` defaults to the longest head), ``fill`` beyond each length."""
    B, H = row0.shape
    width = int(lengths.max().item()) if width is None else width
    ar = torch.arange(width, device=flat.device)
    valid = ar[None, None, :] < lengths[..., None]
    idx = torch.where(valid, row0[..., None] + ar, torch.zeros_like(ar)).reshape(-1)
    out = (
        flat.index_select(0, idx)
        if flat.dtype != torch.float8_e4m3fn
        else flat.view(torch.uint8).index_select(0, idx).view(torch.float8_e4m3fn)
    )
    out = out.reshape(B, H, width, *flat.shape[1:])
    mask = valid.reshape(B, H, width, *([1] * (flat.dim() - 1)))
    if out.dtype == torch.float8_e4m3fn:
        return torch.where(mask, out.float(), torch.zeros((), device=flat.device)).to(out.dtype)
    return torch.where(mask, out, torch.full((), fill, dtype=out.dtype, device=flat.device))
