"""Readable specification of the row-wise cosine max/argmax (materialises the Na x Nb matrix)."""

from __future__ import annotations

import torch

#: Norms are clamped to this value, so a zero vector has cosine 0 with everything.
NORM_EPS = 1e-8


def naive_cosine_max_argmax(a, b, b_mask=None):
    """``max_j cos(a_i, b_j)`` and the lowest ``j`` attaining it; masked-out ``b_j`` never win.

    ``a [B, Na, C]``, ``b [B, Nb, C]``, ``b_mask [B, Nb]`` bool (True = candidate). Rows with no candidate
    give ``(-inf, -1)``.
    """
    af, bf = a.float(), b.float()
    an = af / af.norm(dim=-1, keepdim=True).clamp(min=NORM_EPS)
    bn = bf / bf.norm(dim=-1, keepdim=True).clamp(min=NORM_EPS)
    sim = torch.matmul(an, bn.transpose(-1, -2))  # [B, Na, Nb]
    if b_mask is not None:
        sim = sim.masked_fill(~b_mask[:, None, :], float("-inf"))
    best = sim.amax(dim=-1) if sim.shape[-1] else sim.new_full(sim.shape[:-1], float("-inf"))
    j = torch.arange(sim.shape[-1], device=a.device)
    first = (
        torch.where(sim == best[..., None], j, sim.shape[-1]).amin(dim=-1)
        if sim.shape[-1]
        else torch.zeros(best.shape, dtype=torch.int64, device=a.device)
    )
    arg = torch.where(torch.isneginf(best), torch.full_like(first, -1), first)
    return best, arg
