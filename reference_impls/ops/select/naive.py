"""Readable specification of ragged top-k selection, token gather and KV compaction (row loops)."""

from __future__ import annotations

import torch


def naive_select_topk(scores, k, lengths, protect, k_max: int):
    """Per row: keep protected positions, fill up to ``k`` with the best-scoring valid positions
    (ties -> lower index), return indices ascending, ``-1`` padded to ``max k``.

    ``scores [*, L]``; ``k``, ``lengths`` int64 ``[*]``; ``protect`` bool ``[*, L]`` (validated); ``k_max`` the
    largest ``k``.
    """
    lead, L = scores.shape[:-1], scores.shape[-1]
    out = torch.full((*lead, k_max), -1, dtype=torch.int64, device=scores.device)
    flat_s, flat_k = scores.reshape(-1, L), k.reshape(-1)
    flat_len, flat_p, flat_out = lengths.reshape(-1), protect.reshape(-1, L), out.view(-1, k_max)
    for r in range(flat_s.shape[0]):
        n = int(flat_len[r])
        kept = [j for j in range(n) if bool(flat_p[r, j])]
        candidates = [j for j in range(n) if not bool(flat_p[r, j])]
        # best score first; among equal scores the lower index first
        candidates.sort(key=lambda j: (-float(flat_s[r, j]), j))
        kept += candidates[: int(flat_k[r]) - len(kept)]
        kept.sort()
        flat_out[r, : len(kept)] = torch.tensor(kept, dtype=torch.int64)
    return out


def naive_gather_tokens(hidden, idx, position_ids):
    """``hidden [B, L, C]``, ``idx [B, K]`` (-1 = padding) -> ``(hidden [B, K, C], position_ids [B, K])``."""
    B, K = idx.shape
    out = torch.zeros(B, K, hidden.shape[-1], dtype=hidden.dtype, device=hidden.device)
    pos = torch.full((B, K), -1, dtype=position_ids.dtype, device=hidden.device)
    for b in range(B):
        for t in range(K):
            j = int(idx[b, t])
            if j >= 0:
                out[b, t] = hidden[b, j]
                pos[b, t] = position_ids[b, j]
    return out, pos


def naive_kv_compact(k, v, idx):
    """Out-of-place compaction: ``k, v [B, H, L, D]``, ``idx [B, H, K]`` -> ``(k', v' [B, H, K, D],
    new_lengths [B, H])``; rows where ``idx == -1`` are zero."""
    B, H, K = idx.shape
    keep = (idx >= 0)[..., None]

    def take(x):
        rows = torch.gather(x, 2, idx.clamp(min=0)[..., None].expand(B, H, K, x.shape[-1]))
        return torch.where(keep, rows, torch.zeros((), dtype=x.dtype, device=x.device))

    return take(k), take(v), (idx >= 0).sum(-1)
