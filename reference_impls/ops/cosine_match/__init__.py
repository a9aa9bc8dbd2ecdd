"""Fused row-wise cosine max/argmax: for each ``a_i`` the most similar ``b_j`` by cosine similarity.

Shared by ToMe bipartite soft matching (arXiv 2210.09461, step 3: best B partner of each A token) and
VisionZip contextual-token assignment (arXiv 2412.04467). Paths: ``naive`` (normalise, matmul, max —
the spec) and ``triton`` (tiles over ``b``, keeps the running max/argmax in registers, never
materialises ``Na x Nb``; fp32 inputs use IEEE fp32 dot products, fp16/bf16 inputs use tensor-core
dots with fp32 accumulation, so near-ties (gaps below ~1e-3 for half inputs) may resolve differently
from the naive path).
"""

from __future__ import annotations

import torch

from reference_impls.ops._triton import resolve_impl
from reference_impls.ops.cosine_match.naive import NORM_EPS, naive_cosine_max_argmax

__all__ = ["cosine_max_argmax", "naive_cosine_max_argmax", "NORM_EPS"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def cosine_max_argmax(a, b, *, b_mask=None, impl="auto"):
    """``(max [B, Na] fp32, argmax [B, Na] int64)`` of ``cos(a_i, b_j)`` over ``j``.

    Args:
        a: ``[B, Na, C]``; b: ``[B, Nb, C]`` (same float dtype and device).
        b_mask: optional bool ``[B, Nb]``; False entries are never chosen.
        impl: ``"auto" | "naive" | "triton"``.
    Ties go to the lowest index. Norms are clamped at ``NORM_EPS`` (zero vectors have cosine 0). A row
    with no candidate returns ``(-inf, -1)``.
    """
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            raise ValueError(f"{name} must be [B, N, C], got {getattr(t, 'shape', type(t))}")
        if t.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"{name} must be float16, bfloat16 or float32, got {t.dtype}")
    if a.dtype != b.dtype or a.device != b.device:
        raise ValueError("a and b must share dtype and device")
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError(f"a {tuple(a.shape)} and b {tuple(b.shape)} must agree in batch and channel dims")
    if b_mask is not None:
        if (
            not isinstance(b_mask, torch.Tensor)
            or b_mask.dtype != torch.bool
            or tuple(b_mask.shape) != (b.shape[0], b.shape[1])
        ):
            raise ValueError(f"b_mask must be a bool tensor [B, Nb]=({b.shape[0]}, {b.shape[1]})")
        b_mask = b_mask.to(a.device)
    if resolve_impl(impl, a.device) == "naive" or a.shape[1] == 0 or b.shape[1] == 0:
        return naive_cosine_max_argmax(a, b, b_mask)
    from reference_impls.ops.cosine_match.triton_kernel import triton_cosine_max_argmax

    return triton_cosine_max_argmax(a, b, b_mask)
