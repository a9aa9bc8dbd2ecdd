"""Spec 1: attention that also returns per-key accumulated softmax probability (``colsum``).

The enabler of score-based pruning/eviction (FastV 2403.06764, H2O 2306.14048, SnapKV 2404.14469,
PyramidDrop 2410.17247, SparseVLM 2410.04417, ...) with flash-style attention: scores are obtained
without materialising the ``Lq x Lk`` attention matrix.

``colsum[b, h, j] = sum_{i in Qsel} softmax_i(q_i . k_j * scale + mask)_j`` (fp32).

Paths: ``naive`` (eager fp32, the spec), ``triton`` (pass 1: FlashAttention-2 style forward writing
``o`` and ``lse``; pass 2: a score kernel over (key block, query head) tiles that loops only over
the selected query rows, recomputes ``p = exp(s - lse)`` and sums columns in registers — one writer
per key block, deterministic, no atomics). ``attn_mask`` always runs the naive path. The Triton path reads no
tensor value on the host unless ``validate`` asks for the ``kv_lengths`` range check (default: on CPU tensors
only, see ``reference_impls.ops._triton.check_values``); the kernels clamp lengths to ``[0, Lk]``.
No ``score_k_range`` argument: slice ``colsum`` instead.

IO-aware attention: pass 1 is FlashAttention-2's forward (Dao, arXiv 2307.08691; FlashAttention, Dao et al.,
arXiv 2205.14135): the output is computed tile by tile with an online softmax (running max and sum, base 2), the
``Lq x Lk`` matrix never leaves on-chip memory, the loop runs over key blocks inside one program per query block
(FlashAttention-2's work partitioning: parallel over batch, heads and query blocks), the accumulator is rescaled
once at the end, and ``lse`` is stored for the backward / score pass. Deviations from FlashAttention-2: forward
only (no backward pass); scores are exposed through the separate column-sum pass; plain pointer arithmetic instead
of the CUDA kernel's warp-level tiling. The naive path is the specification it is tested against
(``tests/reference_impls/test_ops_scored_attention.py``).
"""

from __future__ import annotations

import torch

from reference_impls.ops._triton import check_values, resolve_impl
from reference_impls.ops.scored_attention._checks import check_scored_attention_args
from reference_impls.ops.scored_attention.naive import allowed_keys, naive_scored_attention

__all__ = ["scored_attention", "colsum_to_kv_heads", "naive_scored_attention", "allowed_keys"]


def scored_attention(
    q,
    k,
    v,
    *,
    causal=True,
    scale=None,
    kv_lengths=None,
    score_q_mask=None,
    score_q_range=None,
    attn_mask=None,
    impl="auto",
    validate=None,
):
    """Attention ``o``, its log-sum-exp ``lse`` and the column sums of the selected rows' probabilities.

    Args:
        q: ``[B, Hq, Lq, D]``; k, v: ``[B, Hkv, Lk, D]`` with ``Hq = G * Hkv`` (GQA: query head ``h`` reads
            key/value head ``h // G``). fp16, bf16 or fp32, all the same dtype.
        causal: bottom-right aligned: query ``i`` sits at key index ``kv_len - Lq + i``.
        scale: logit scale, default ``1/sqrt(D)``.
        kv_lengths: ``[B]`` or ``[B, Hkv]`` valid keys per row (right padding); default ``Lk``.
        score_q_mask: ``[B, Lq]`` bool, or score_q_range ``(start, stop)``: the query rows whose softmax
            probabilities are summed into ``colsum``. Neither -> ``colsum`` is None.
        attn_mask: optional dense bool ``[B, 1|Hq, Lq, Lk]`` (True = may attend); forces the naive path.
        impl: ``"auto" | "naive" | "triton"``.
        validate: check the ``kv_lengths`` values (default: on CPU tensors only).

    Returns:
        ``(o [B,Hq,Lq,D] in q.dtype, lse [B,Hq,Lq] fp32, colsum [B,Hq,Lk] fp32 or None)``. Query rows that
        see no key give ``o = 0``, ``lse = -inf`` and contribute nothing to ``colsum``.
    """
    scale, kv_len, sel = check_scored_attention_args(
        q,
        k,
        v,
        scale=scale,
        kv_lengths=kv_lengths,
        score_q_mask=score_q_mask,
        score_q_range=score_q_range,
        attn_mask=attn_mask,
        values=check_values(validate, kv_lengths),
    )
    path = resolve_impl(impl, q.device)
    if path == "naive" or attn_mask is not None:
        return naive_scored_attention(
            q, k, v, causal=causal, scale=scale, kv_lengths=kv_len, score_q_mask=sel, attn_mask=attn_mask
        )
    from reference_impls.ops.scored_attention.triton_kernel import triton_scored_attention

    return triton_scored_attention(
        q,
        k,
        v,
        causal=causal,
        scale=scale,
        kv_lengths=kv_len,
        score_q_mask=sel,
        score_q_range=None if score_q_range is None else tuple(int(x) for x in score_q_range),
    )


def colsum_to_kv_heads(colsum: torch.Tensor, n_kv_heads: int, reduce: str = "mean") -> torch.Tensor:
    """Reduce per-query-head column sums ``[B, Hq, Lk]`` to the ``Hkv`` key/value heads (GQA groups).

    Query heads ``g * G .. g * G + G - 1`` belong to kv head ``g``. ``reduce`` is ``"mean"`` or ``"max"``.
    """
    if not isinstance(colsum, torch.Tensor) or colsum.dim() != 3:
        raise ValueError(f"colsum must be a 3-D tensor [B, Hq, Lk], got {getattr(colsum, 'shape', type(colsum))}")
    B, Hq, Lk = colsum.shape
    if int(n_kv_heads) <= 0 or Hq % int(n_kv_heads) != 0:
        raise ValueError(f"Hq={Hq} must be a positive multiple of n_kv_heads={n_kv_heads}")
    grouped = colsum.reshape(B, int(n_kv_heads), Hq // int(n_kv_heads), Lk)
    if reduce == "mean":
        return grouped.mean(dim=2)
    if reduce == "max":
        return grouped.amax(dim=2)
    raise ValueError(f"reduce must be 'mean' or 'max', got {reduce!r}")
