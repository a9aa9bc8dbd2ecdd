"""Batched PyTorch path of ragged top-k selection (``impl="torch"``): two stable sorts, no row loop."""

from __future__ import annotations

import torch


def select_topk_torch(scores, k, lengths, protect, k_max: int):
    """Same contract as :func:`.naive.naive_select_topk` (``k_max``: the output width, known on the host).

    Rank key: class (protected > valid > padding) first, then score descending, then index ascending —
    done as a stable descending sort by score followed by a stable sort by class.
    """
    L = scores.shape[-1]
    pos = torch.arange(L, device=scores.device)
    valid = pos < lengths[..., None]
    s = scores.float().masked_fill(~valid, float("-inf"))
    order = torch.sort(s, dim=-1, descending=True, stable=True).indices
    klass = protect.to(torch.int8) * 2 + valid.to(torch.int8)
    order = torch.gather(
        order, -1, torch.sort(torch.gather(klass, -1, order), dim=-1, descending=True, stable=True).indices
    )
    top = order[..., :k_max]
    top = top.masked_fill(torch.arange(k_max, device=scores.device) >= k[..., None], L)  # beyond this row's k
    top = torch.sort(top, dim=-1).values
    return top.masked_fill(top == L, -1)
