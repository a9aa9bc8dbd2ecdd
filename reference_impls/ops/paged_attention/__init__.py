"""Paged decode attention over a block table (PagedAttention, Kwon et al., arXiv 2309.06180; the kernel of vLLM).

``naive.py`` is the specification (gather each sequence's blocks, then softmax attention); ``triton_kernel.py``
reads the physical blocks in place. ``paged_decode_attention(..., impl="auto" | "naive" | "triton")``: "auto" uses
Triton on CUDA tensors, or on CPU tensors when TRITON_INTERPRET=1 and triton imports; otherwise the naive path.
The Triton path needs a power-of-two ``block_size >= 16`` ("auto" falls back to naive otherwise).
The cache that owns the blocks is ``reference_impls.decode.kv.paged``.
"""

from __future__ import annotations

import torch

from reference_impls.ops._triton import resolve_impl
from reference_impls.ops.paged_attention.naive import gather_blocks, naive_paged_decode_attention

__all__ = ["paged_decode_attention", "naive_paged_decode_attention", "gather_blocks"]


def _validate(q, k_pool, v_pool, block_tables, lengths):
    if q.dim() != 3 or k_pool.dim() != 4 or v_pool.shape != k_pool.shape:
        raise ValueError(
            f"q must be [B, Hq, D] and the pools [num_blocks, Hkv, block_size, D]; got {tuple(q.shape)}, "
            f"{tuple(k_pool.shape)}, {tuple(v_pool.shape)}"
        )
    B, Hq, D = q.shape
    if k_pool.shape[3] != D or Hq % k_pool.shape[1]:
        raise ValueError(f"head dim / GQA mismatch between q {tuple(q.shape)} and the pool {tuple(k_pool.shape)}")
    if block_tables.dim() != 2 or block_tables.shape[0] != B or block_tables.dtype.is_floating_point:
        raise ValueError(f"block_tables must be an integer tensor [B={B}, max_blocks]")
    if lengths.shape != (B,) or lengths.dtype.is_floating_point:
        raise ValueError(f"lengths must be an integer tensor [B={B}]")
    needed = -(-lengths // k_pool.shape[2])
    if bool((lengths < 0).any()) or bool((needed > block_tables.shape[1]).any()):
        raise ValueError("a sequence is longer than its block table")
    ar = torch.arange(block_tables.shape[1], device=block_tables.device)[None, :]
    used = torch.where(ar < needed[:, None], block_tables, torch.zeros_like(block_tables))
    if bool((used < 0).any()) or bool((used >= k_pool.shape[0]).any()):
        raise ValueError(f"block ids must lie in [0, {k_pool.shape[0]})")


def paged_decode_attention(q, k_pool, v_pool, block_tables, lengths, *, scale=None, impl: str = "auto"):
    """Decode attention of ``q [B, Hq, D]`` over paged K/V. Returns ``(o [B, Hq, D], lse [B, Hq])``."""
    _validate(q, k_pool, v_pool, block_tables, lengths)
    block_size = k_pool.shape[2]
    kernel_ok = block_size >= 16 and block_size & (block_size - 1) == 0
    path = resolve_impl(impl, q.device)
    if path == "triton" and not kernel_ok:
        if impl in ("triton", "torch"):
            raise ValueError(f"the Triton paged kernel needs a power-of-two block_size >= 16, got {block_size}")
        path = "naive"
    if path == "triton":
        from reference_impls.ops.paged_attention.triton_kernel import triton_paged_decode_attention

        return triton_paged_decode_attention(q, k_pool, v_pool, block_tables, lengths, scale=scale)
    return naive_paged_decode_attention(q, k_pool, v_pool, block_tables, lengths, scale=scale)
