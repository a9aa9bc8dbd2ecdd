"""Decode attention (one query token per row) over compressed KV caches: per-KV-head ragged lengths with GQA
(padded ``[B, Hkv, L, D]`` or packed per-head segments of flat ``[N, D]`` buffers), int8 / fp8 K/V with
per-(token, head) scales, ring buffers with RoPE-on-read, and chunk-sparse retrieval (Quest-style chunk scoring,
arXiv 2406.10774, + block-sparse attention over the selected chunks).

``naive.py`` is the specification; ``triton_kernel.py`` the split-K kernel. Every entry point takes
``impl = "auto" | "naive" | "triton"`` (``"torch"`` = ``"triton"``): "auto" uses Triton on CUDA tensors, or on CPU
tensors when TRITON_INTERPRET=1 and triton imports; otherwise the naive path.

IO-aware decoding: the Triton kernel is split-K ("Flash-Decoding", Dao, Haziza, Massa and Sizov, 2023 -- a
technical blog post without an arXiv paper, so not in the catalogue): the keys of one (row, KV head) are split
across programs that each run FlashAttention's online softmax over their share, and a second kernel merges the
partial (max, sum, output) triples with a log-sum-exp rescaling -- the decode step then uses the whole GPU even at
batch size 1. The catalogue's FlashDecoding++ (arXiv 2311.01282) is a different method (a unified maximum instead of
the merge); it is not what this kernel implements.

Host synchronisation: nothing here reads a tensor value back to the host on the Triton path unless asked to
(``validate=True``), so a decode step built from these calls can be captured in a CUDA graph (after one eager call
has run the autotuner). ``validate=None`` (default) checks lengths / offsets / chunk ids only on CPU tensors, where it
is free; on CUDA the kernel clamps them to the buffers (see ``reference_impls.ops._triton.check_values``).

Deviations from FlashDecoding / Quest: the Quest bound is reduced over the GQA group (max), so a KV head selects
one chunk set for all its query heads (Quest selects per query head on MHA models); the chunk size equals the
kernel's key block (a power of two >= 16).
"""

from __future__ import annotations

import torch

from reference_impls.ops._triton import check_values, resolve_impl
from reference_impls.ops.decode_attention.naive import (
    dequantize_kv,
    naive_chunk_scores,
    naive_chunk_summaries,
    naive_decode_attention,
    rope_rotate,
    unpack_rows,
)

__all__ = [
    "decode_attention",
    "packed_decode_attention",
    "unpack_rows",
    "ring_decode_attention",
    "sparse_decode_attention",
    "chunk_summaries",
    "chunk_scores",
    "select_chunks",
    "rope_rotate",
    "dequantize_kv",
    "naive_decode_attention",
    "naive_chunk_scores",
    "naive_chunk_summaries",
    "use_triton",
]


_QUANT_DTYPES = (torch.int8, torch.float8_e4m3fn)


def use_triton(x: torch.Tensor, impl: str) -> bool:
    """Resolve ``impl`` ("auto" | "naive" | "triton" | "torch"; the last two both mean the kernel) for ``x``."""
    return resolve_impl(impl, x.device) == "triton"


def _as_3d(q):
    if q.dim() == 4:
        if q.shape[2] != 1:
            raise ValueError(
                f"decode attention takes one query per row: q must be [B, Hq, D] or [B, Hq, 1, D], got {tuple(q.shape)}"
            )
        return q[:, :, 0], True
    if q.dim() != 3:
        raise ValueError(f"q must be [B, Hq, D] or [B, Hq, 1, D], got {tuple(q.shape)}")
    return q, False


def _validate(q, k, v, kv_lengths, k_scale, v_scale, values: bool):
    if k.dim() != 4 or v.shape != k.shape:
        raise ValueError(f"k and v must both be [B, Hkv, L, D]; got {tuple(k.shape)} and {tuple(v.shape)}")
    B, Hq, D = q.shape
    if k.shape[0] != B or k.shape[3] != D:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree on batch or head dim")
    Hkv = k.shape[1]
    if Hq % Hkv != 0:
        raise ValueError(f"query heads ({Hq}) must be a multiple of KV heads ({Hkv})")
    if not q.dtype.is_floating_point:
        raise ValueError(f"q must be floating point, got {q.dtype}")
    if kv_lengths.dtype.is_floating_point or kv_lengths.shape not in ((B,), (B, Hkv)):
        raise ValueError(
            f"kv_lengths must be an integer tensor of shape [B] or [B, Hkv]; got "
            f"{kv_lengths.dtype} {tuple(kv_lengths.shape)}"
        )
    if values and (bool((kv_lengths < 0).any()) or bool((kv_lengths > k.shape[2]).any())):
        raise ValueError(f"kv_lengths must lie in [0, {k.shape[2]}]")
    quant = k.dtype in _QUANT_DTYPES
    if quant != (k_scale is not None) or (k_scale is None) != (v_scale is None):
        raise ValueError("int8/fp8 K/V need k_scale and v_scale ([B, Hkv, L]); float K/V take none")
    if quant and (k_scale.shape != k.shape[:3] or v_scale.shape != k.shape[:3]):
        raise ValueError(f"k_scale / v_scale must be [B, Hkv, L] = {tuple(k.shape[:3])}")
    if not quant and not k.dtype.is_floating_point:
        raise ValueError(f"K/V must be floating point, int8 or float8_e4m3fn, got {k.dtype}")


def decode_attention(
    q, k, v, kv_lengths, *, scale=None, k_scale=None, v_scale=None, impl: str = "auto", validate: bool | None = None
):
    """Attention of one query per row over per-KV-head ragged (optionally int8/fp8-quantised) caches.

    q [B, Hq, D] or [B, Hq, 1, D]; k, v [B, Hkv, L, D]; kv_lengths [B] or [B, Hkv]. Returns ``(o, lse)``.
    ``validate``: check the lengths' values (default: on CPU tensors only; see the module docstring).
    """
    q3, was4 = _as_3d(q)
    _validate(q3, k, v, kv_lengths, k_scale, v_scale, check_values(validate, kv_lengths))
    kw = dict(scale=scale, k_scale=k_scale, v_scale=v_scale)
    if use_triton(q3, impl):
        from reference_impls.ops.decode_attention.triton_kernel import triton_decode_attention

        o, lse = triton_decode_attention(q3, k, v, kv_lengths, **kw)
    else:
        o, lse = naive_decode_attention(q3, k, v, kv_lengths, **kw)
    return (o[:, :, None] if was4 else o), lse


def packed_decode_attention(
    q,
    k,
    v,
    row0,
    kv_lengths,
    *,
    scale=None,
    k_scale=None,
    v_scale=None,
    impl: str = "auto",
    validate: bool | None = None,
):
    """Decode attention over a *packed* per-head cache (only kept rows are stored, no padding): ``k, v [N, D]``
    (int8/fp8 with ``k_scale, v_scale [N]``), head (b, h) owns rows ``row0[b, h] .. row0[b, h] +
    kv_lengths[b, h] - 1``. The Triton kernel reads each head's segment in place; the naive path unpacks (and
    reads the longest length on the host)."""
    q3, was4 = _as_3d(q)
    _validate_packed(q3, k, v, row0, kv_lengths, k_scale, v_scale, check_values(validate, row0, kv_lengths))
    quant = k.dtype in _QUANT_DTYPES
    if use_triton(q3, impl):
        from reference_impls.ops.decode_attention.triton_kernel import triton_decode_attention

        o, lse = triton_decode_attention(q3, k, v, kv_lengths, scale=scale, k_scale=k_scale, v_scale=v_scale, row0=row0)
    else:
        kp, vp = unpack_rows(k, row0, kv_lengths), unpack_rows(v, row0, kv_lengths)
        ks = vs = None
        if quant:
            ks, vs = unpack_rows(k_scale, row0, kv_lengths, fill=1), unpack_rows(v_scale, row0, kv_lengths, fill=1)
        o, lse = naive_decode_attention(q3, kp, vp, kv_lengths, scale=scale, k_scale=ks, v_scale=vs)
    return (o[:, :, None] if was4 else o), lse


def _validate_packed(q3, k, v, row0, kv_lengths, k_scale, v_scale, values: bool):
    if k.dim() != 2 or v.shape != k.shape or k.shape[1] != q3.shape[2]:
        raise ValueError(f"packed k, v must be [N, D] with D = {q3.shape[2]}; got {tuple(k.shape)}, {tuple(v.shape)}")
    B = q3.shape[0]
    if (
        row0.dim() != 2
        or row0.shape[0] != B
        or kv_lengths.shape != row0.shape
        or row0.dtype.is_floating_point
        or kv_lengths.dtype.is_floating_point
    ):
        raise ValueError("row0 and kv_lengths must be integer tensors [B, Hkv]")
    if q3.shape[1] % row0.shape[1] != 0:
        raise ValueError(f"query heads ({q3.shape[1]}) must be a multiple of KV heads ({row0.shape[1]})")
    if values and (
        bool((row0 < 0).any()) or bool((kv_lengths < 0).any()) or bool((row0 + kv_lengths > k.shape[0]).any())
    ):
        raise ValueError(f"segments row0 .. row0 + kv_lengths must lie inside the {k.shape[0]} stored rows")
    quant = k.dtype in _QUANT_DTYPES
    if quant != (k_scale is not None) or (k_scale is None) != (v_scale is None):
        raise ValueError("int8/fp8 K/V need k_scale and v_scale ([N]); float K/V take none")


def ring_decode_attention(
    q,
    k,
    v,
    kv_lengths,
    key_positions,
    rope_inv_freq,
    *,
    scale=None,
    k_scale=None,
    v_scale=None,
    impl: str = "auto",
    validate: bool | None = None,
):
    """Decode attention with RoPE-on-read: keys are stored *pre-RoPE* in (ring-buffer) slots and rotated at
    ``key_positions [B, Hkv, L]`` when read (StreamingLLM "rolled" positions). q is already rotated. Slot order
    does not matter (softmax is permutation invariant), so a ring buffer needs no reordering."""
    q3, was4 = _as_3d(q)
    _validate(q3, k, v, kv_lengths, k_scale, v_scale, check_values(validate, kv_lengths))
    if key_positions.shape != k.shape[:3] or key_positions.dtype.is_floating_point:
        raise ValueError(f"key_positions must be an integer tensor [B, Hkv, L] = {tuple(k.shape[:3])}")
    if rope_inv_freq.shape != (k.shape[3] // 2,):
        raise ValueError(f"rope_inv_freq must be [D // 2] = [{k.shape[3] // 2}]")
    kw = dict(scale=scale, k_scale=k_scale, v_scale=v_scale, key_positions=key_positions, rope_inv_freq=rope_inv_freq)
    if use_triton(q3, impl):
        from reference_impls.ops.decode_attention.triton_kernel import triton_decode_attention

        o, lse = triton_decode_attention(q3, k, v, kv_lengths, **kw)
    else:
        o, lse = naive_decode_attention(q3, k, v, kv_lengths, **kw)
    return (o[:, :, None] if was4 else o), lse


def _triton_chunk_ok(chunk_size: int) -> bool:
    return chunk_size >= 16 and (chunk_size & (chunk_size - 1)) == 0


def sparse_decode_attention(
    q,
    k,
    v,
    kv_lengths,
    chunk_idx,
    chunk_size: int,
    *,
    scale=None,
    k_scale=None,
    v_scale=None,
    row0=None,
    impl: str = "auto",
    validate: bool | None = None,
):
    """Block-sparse decode attention: only keys in the chunks listed in ``chunk_idx [B, Hkv, S]`` (-1 padded)
    are visible. The Triton path needs a power-of-two chunk_size >= 16 ("auto" falls back to naive otherwise).
    ``row0 [B, Hkv]``: packed store (``k, v [N, D]``, scales ``[N]``), as in :func:`packed_decode_attention`."""
    q3, was4 = _as_3d(q)
    values = check_values(validate, kv_lengths, chunk_idx)
    if row0 is not None:
        _validate_packed(q3, k, v, row0, kv_lengths, k_scale, v_scale, values)
        if not use_triton(q3, impl) or not _triton_chunk_ok(chunk_size):
            kp, vp = unpack_rows(k, row0, kv_lengths), unpack_rows(v, row0, kv_lengths)
            ks = vs = None
            if k_scale is not None:
                ks = unpack_rows(k_scale, row0, kv_lengths, fill=1)
                vs = unpack_rows(v_scale, row0, kv_lengths, fill=1)
            return sparse_decode_attention(
                q, kp, vp, kv_lengths, chunk_idx, chunk_size, scale=scale, k_scale=ks, v_scale=vs, impl="naive"
            )
        from reference_impls.ops.decode_attention.triton_kernel import triton_decode_attention

        o, lse = triton_decode_attention(
            q3,
            k,
            v,
            kv_lengths,
            scale=scale,
            k_scale=k_scale,
            v_scale=v_scale,
            chunk_idx=chunk_idx,
            chunk_size=chunk_size,
            row0=row0,
        )
        return (o[:, :, None] if was4 else o), lse
    _validate(q3, k, v, kv_lengths, k_scale, v_scale, values)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    B, Hkv = k.shape[0], k.shape[1]
    if chunk_idx.dim() != 3 or chunk_idx.shape[:2] != (B, Hkv) or chunk_idx.dtype.is_floating_point:
        raise ValueError(f"chunk_idx must be an integer tensor [B, Hkv, S]; got {tuple(chunk_idx.shape)}")
    n_chunks = -(-k.shape[2] // chunk_size)
    if values and (bool((chunk_idx >= n_chunks).any()) or bool((chunk_idx < -1).any())):
        raise ValueError(f"chunk ids must lie in [-1, {n_chunks - 1}]")
    kw = dict(scale=scale, k_scale=k_scale, v_scale=v_scale, chunk_idx=chunk_idx, chunk_size=chunk_size)
    tri = use_triton(q3, impl)
    if tri and not _triton_chunk_ok(chunk_size):
        if impl == "triton":
            raise ValueError(f"the Triton block-sparse kernel needs a power-of-two chunk_size >= 16, got {chunk_size}")
        tri = False
    if tri:
        from reference_impls.ops.decode_attention.triton_kernel import triton_decode_attention

        o, lse = triton_decode_attention(q3, k, v, kv_lengths, **kw)
    else:
        o, lse = naive_decode_attention(q3, k, v, kv_lengths, **kw)
    return (o[:, :, None] if was4 else o), lse


def chunk_summaries(k, kv_lengths, chunk_size: int):
    """Per-chunk elementwise (min, max) of the keys (Quest). Returns ``(kmin, kmax, n_chunks)``."""
    if k.dim() != 4:
        raise ValueError(f"k must be [B, Hkv, L, D], got {tuple(k.shape)}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return naive_chunk_summaries(k, kv_lengths, chunk_size)


def chunk_scores(q, kmin, kmax, n_chunks, *, reduce: str = "max", impl: str = "auto"):
    """Quest upper bound of q . k per chunk, reduced over the GQA group -> [B, Hkv, C] fp32 (-inf when absent)."""
    q3, _ = _as_3d(q)
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    if kmin.shape != kmax.shape or kmin.dim() != 4 or kmin.shape[0] != q3.shape[0] or kmin.shape[3] != q3.shape[2]:
        raise ValueError(f"kmin/kmax must be [B, Hkv, C, D] matching q; got {tuple(kmin.shape)}")
    if q3.shape[1] % kmin.shape[1] != 0:
        raise ValueError("query heads must be a multiple of KV heads")
    if use_triton(q3, impl):
        from reference_impls.ops.decode_attention.triton_kernel import triton_chunk_scores

        return triton_chunk_scores(q3, kmin, kmax, n_chunks, reduce=reduce)
    return naive_chunk_scores(q3, kmin, kmax, n_chunks, reduce=reduce)


def select_chunks(
    scores: torch.Tensor,
    n_select: torch.Tensor | int,
    *,
    n_chunks: torch.Tensor,
    n_first: int = 0,
    n_last: torch.Tensor | int = 0,
    width: int | None = None,
) -> torch.Tensor:
    """Top-``n_select`` chunks per (b, kv head) by score, always including the first ``n_first`` and last
    ``n_last`` (int or [B, Hkv]) live chunks (sinks / recent tokens); counted inside ``n_select``. Returns ids
    [B, Hkv, S] sorted ascending, -1 padded. Ties -> lower chunk id.

    ``S`` is ``width`` when given (rows with more selected chunks are cut, so give at least the largest count),
    else ``min(n_select, C)`` for an int ``n_select`` (no host synchronisation), else the largest count over the
    rows (a tensor ``n_select``: read back to the host, one synchronisation on CUDA)."""
    B, Hkv, C = scores.shape
    idx = torch.arange(C, device=scores.device)
    nch = n_chunks.to(torch.long)
    live = idx[None, None, :] < nch[..., None]
    n_last = n_last.to(torch.long) if isinstance(n_last, torch.Tensor) else int(n_last)
    forced = live & ((idx[None, None, :] < n_first) | (idx[None, None, :] >= (nch - n_last)[..., None]))
    n_select_int = n_select if isinstance(n_select, int) else None
    if isinstance(n_select, int):
        n_select = torch.full((B, Hkv), n_select, dtype=torch.long, device=scores.device)
    count = torch.minimum(n_select.to(torch.long), nch)
    # rank: forced first, then by score, ties to lower id (stable sort on descending key)
    key = torch.where(forced, torch.full_like(scores, float("inf")), scores.float())
    key = torch.where(live, key, torch.full_like(key, float("-inf")))
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices
    rank_ok = torch.arange(C, device=scores.device)[None, None, :] < count[..., None]
    chosen = torch.where(rank_ok, order, torch.full_like(order, C))
    chosen = torch.sort(chosen, dim=-1).values
    if width is not None:
        S = min(int(width), C)
    elif n_select_int is not None:
        S = min(n_select_int, C)
    else:
        S = int(count.max().item()) if count.numel() else 0
    chosen = chosen[..., :S]
    return torch.where(chosen >= C, torch.full_like(chosen, -1), chosen)
