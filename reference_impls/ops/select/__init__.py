"""Spec 2: ragged top-k selection, token gather and KV-cache compaction for pruning and eviction.

Used by FastV (2403.06764), PyramidDrop (2410.17247), SparseVLM (2410.04417), H2O (2306.14048),
SnapKV (2404.14469), PyramidKV (2406.02069), HybridKV/AdaKV-style per-head budgets.

Conventions: kept indices are int64, ascending, ``-1`` padded beyond each row's count; ragged rows are
right padded and described by ``lengths``.
Paths: ``select_topk`` -> ``naive`` (row loop) or ``torch`` (two stable sorts; ``impl="triton"`` maps to it:
there is no Triton top-k). ``gather_tokens`` / ``kv_compact`` -> ``naive`` (torch.gather) or ``triton``
(K and V in one launch; out of place one program per (row, block of kept rows); in place the same grid, with
per-block "sources read" flags ordering each block's writes after the earlier blocks' reads, see
``triton_kernel.py``).

Host synchronisation: ``validate`` (see ``reference_impls.ops._triton.check_values``) decides whether index,
length and budget values are checked; by default only on CPU tensors. Unchecked, the Triton paths read no value
on the host (``select_topk`` with an int ``k`` neither: the output width is ``k``; a tensor ``k`` costs one
read-back, the width being its largest entry).
"""

from __future__ import annotations

import torch

from reference_impls.ops._triton import check_values, resolve_impl
from reference_impls.ops.select._checks import check_index, check_select_topk_args
from reference_impls.ops.select.naive import naive_gather_tokens, naive_kv_compact, naive_select_topk
from reference_impls.ops.select.vectorized import select_topk_torch

__all__ = ["select_topk", "gather_tokens", "kv_compact"]


def select_topk(scores, k, *, lengths=None, protect_mask=None, impl="auto", validate=None):
    """Indices of the ``k`` best positions per row, ascending, ``-1`` padded to ``max k``.

    Args:
        scores: ``[B, L]`` or ``[B, H, L]`` floats (no NaN).
        k: int, or int tensor ``[B]`` / ``[B, H]`` (per-row / per-head budgets).
        lengths: optional int tensor ``[B]`` (or ``[B, H]``): valid positions per row (right padding).
        protect_mask: optional bool, shaped like ``scores`` (or ``[B, L]`` for 3-D scores): positions that
            are always kept; they count inside ``k``.
        impl: ``"auto" | "naive" | "torch" | "triton"`` (``"triton"`` = ``"torch"``).
        validate: check ``k``, ``lengths`` and ``protect_mask`` values (default: on CPU tensors only).

    Ties go to the lower index. Raises ValueError when ``k`` exceeds the available positions or the
    protected count, or on malformed arguments.
    """
    values = check_values(validate, scores, k, lengths)
    scores, k_t, len_t, protect, k_max = check_select_topk_args(scores, k, lengths, protect_mask, values=values)
    path = resolve_impl(impl, scores.device, optimized="torch")
    if path == "naive":
        return naive_select_topk(scores, k_t, len_t, protect, k_max)
    return select_topk_torch(scores, k_t, len_t, protect, k_max)


def gather_tokens(hidden, idx, position_ids=None, *, impl="auto", validate=None):
    """Gather kept tokens: ``hidden [B, L, C]``, ``idx [B, K]`` -> ``(hidden [B, K, C], position_ids [B, K])``.

    ``position_ids`` ``[B, L]`` default to ``arange(L)``. Rows where ``idx == -1`` are zero / position -1.
    """
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3:
        raise ValueError(f"hidden must be [B, L, C], got {getattr(hidden, 'shape', type(hidden))}")
    B, L, _ = hidden.shape
    check_index(idx, (B,), L, values=check_values(validate, idx))
    idx = idx.to(hidden.device)
    if position_ids is None:
        position_ids = torch.arange(L, device=hidden.device).expand(B, L)
    elif (
        not isinstance(position_ids, torch.Tensor)
        or tuple(position_ids.shape) != (B, L)
        or position_ids.dtype.is_floating_point
    ):
        raise ValueError(f"position_ids must be an integer tensor [B, L]=({B}, {L})")
    position_ids = position_ids.to(hidden.device)
    if resolve_impl(impl, hidden.device) == "naive":
        return naive_gather_tokens(hidden, idx, position_ids)
    from reference_impls.ops.select.triton_kernel import triton_gather_rows

    out = triton_gather_rows(hidden[:, None], idx[:, None])[:, 0]
    pos = torch.where(
        idx >= 0,
        torch.gather(position_ids, 1, idx.clamp(0, max(L - 1, 0))),
        torch.full_like(idx, -1, dtype=position_ids.dtype),
    )
    return out, pos


def kv_compact(k, v, idx, *, inplace=False, impl="auto", validate=None):
    """Keep rows ``idx [B, H, K]`` of ``k, v [B, H, L, D]``; returns ``(k', v', new_lengths [B, H])``.

    Out of place: ``k', v'`` are new ``[B, H, K, D]`` tensors (``-1`` rows zero). In place (a static cache):
    rows ``[0, K)`` of ``k`` and ``v`` are overwritten with the out-of-place result and ``k, v`` themselves are
    returned; rows ``>= K`` are untouched. In place needs each row's kept indices ascending with ``-1`` only
    as trailing padding (ValueError otherwise, when ``validate`` asks for value checks; unchecked, other orders give
    unspecified rows). ``new_lengths`` counts the non-padding indices. K and V go through one Triton launch.
    """
    for name, t in (("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"{name} must be [B, H, L, D], got {getattr(t, 'shape', type(t))}")
    if k.shape[:3] != v.shape[:3]:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must agree in B, H, L")
    B, H, L, _ = k.shape
    values = check_values(validate, idx)
    check_index(idx, (B, H), L, values=values)
    idx = idx.to(k.device)
    K = idx.shape[-1]
    if inplace:
        if K > L:
            raise ValueError(f"in-place compaction keeps at most L={L} rows, idx has K={K}")
        kept = idx >= 0
        if values and bool((kept[..., 1:] & ~kept[..., :-1]).any()):
            raise ValueError("in-place kv_compact needs -1 only as trailing padding in idx")
        if values and bool(((idx[..., 1:] <= idx[..., :-1]) & kept[..., 1:]).any()):
            raise ValueError("in-place kv_compact needs strictly ascending kept indices")
    path = resolve_impl(impl, k.device)
    if path == "naive":
        k_out, v_out, new_len = naive_kv_compact(k, v, idx)
        if not inplace:
            return k_out, v_out, new_len
        k[:, :, :K] = k_out
        v[:, :, :K] = v_out
        return k, v, new_len
    from reference_impls.ops.select.triton_kernel import triton_compact_rows_inplace, triton_gather_rows

    new_len = (idx >= 0).sum(-1)
    if inplace:
        triton_compact_rows_inplace((k, v), idx)
        return k, v, new_len
    k_out, v_out = triton_gather_rows((k, v), idx)
    return k_out, v_out, new_len
