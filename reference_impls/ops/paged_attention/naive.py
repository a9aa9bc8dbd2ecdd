"""Naive PyTorch specification of paged decode attention (PagedAttention, Kwon et al., arXiv 2309.06180).

Layouts (GQA, ``Hq = G * Hkv``):
  q             [B, Hq, D]                          one decode query per sequence
  k_pool, v_pool [num_blocks, Hkv, block_size, D]   the physical KV blocks of one layer
  block_tables  [B, max_blocks] int                 logical block i of sequence b lives in physical block
                                                    ``block_tables[b, i]`` (entries beyond the sequence: any value)
  lengths       [B] int                             tokens of each sequence; token j sits in logical block
                                                    ``j // block_size`` at offset ``j % block_size``
The specification gathers each sequence's blocks into a contiguous ``[Hkv, length, D]`` cache and runs softmax
attention in fp32. Returns ``(o [B, Hq, D], lse [B, Hq])`` (lse = -inf and o = 0 for an empty sequence).
"""

from __future__ import annotations

import torch

__all__ = ["gather_blocks", "naive_paged_decode_attention"]


def gather_blocks(pool: torch.Tensor, block_table: torch.Tensor, length: int) -> torch.Tensor:
    """One sequence's tokens ``[Hkv, length, D]`` from a pool ``[num_blocks, Hkv, block_size, D]``."""
    block_size = pool.shape[2]
    n_blocks = -(-length // block_size)
    blocks = pool[block_table[:n_blocks].long()]  # [n, Hkv, block_size, D]
    return blocks.permute(1, 0, 2, 3).reshape(pool.shape[1], n_blocks * block_size, pool.shape[3])[:, :length]


def naive_paged_decode_attention(q, k_pool, v_pool, block_tables, lengths, *, scale=None):
    B, Hq, D = q.shape
    Hkv = k_pool.shape[1]
    G = Hq // Hkv
    scale = D**-0.5 if scale is None else scale
    o = torch.zeros(B, Hq, D, dtype=torch.float32, device=q.device)
    lse = torch.full((B, Hq), float("-inf"), dtype=torch.float32, device=q.device)
    for b in range(B):
        n = int(lengths[b])
        if n == 0:
            continue
        k = gather_blocks(k_pool, block_tables[b], n).float().repeat_interleave(G, 0)  # [Hq, n, D]
        v = gather_blocks(v_pool, block_tables[b], n).float().repeat_interleave(G, 0)
        s = torch.einsum("hd,hnd->hn", q[b].float(), k) * scale
        lse[b] = torch.logsumexp(s, dim=-1)
        o[b] = torch.einsum("hn,hnd->hd", torch.softmax(s, dim=-1), v)
    return o.to(q.dtype), lse
