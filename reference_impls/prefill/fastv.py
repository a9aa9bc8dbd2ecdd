"""FastV (arXiv 2403.06764): after layer K-1, drop the R fraction of visual tokens that receive the
least attention from the last token; layers >= K (and their KV cache) see only the kept tokens.

Defaults K = 2, R = 0.5. Score = mean over heads of layer K-1's attention probabilities of the last
(instruction) token to each visual token. Keep ``round_half_up(N_vis * (1 - R))`` visual tokens per row
plus every non-visual token, in original order.

* ``fastv_keep_naive`` -- the spec on plain tensors: eager softmax of the full ``L x L`` matrix, per-row
  Python loop.
* ``fastv_keep`` -- optimised: one query row per sample through ``ops.scored_attention`` (no ``L x L``),
  ``ops.select_topk`` for the ragged selection.
* ``FastVHook`` -- the minimal-LVLM hook (the scores are the model's layer-(K-1) attention row).

Deviations from the paper/upstream code: batch size > 1 with ragged image spans (upstream indexes
``[0]``); ``position_mode="contiguous"`` is an extra option (upstream keeps the original position ids
with gaps, our default "keep"); the KV-cache variant is used (layers >= K cache only the kept tokens),
not the attention-mask simulation; keep counts round half up per row (upstream uses a fixed count).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ..models.hooks import (Hook, LayerContext, TokenState, check_layer, check_ratio, head_mean,
                            keep_text_and_top_visual, last_token_rows, prune_state, POSITION_MODES)
from ..models.minimal_lvlm import rows_colsum, slots_to_chunk

__all__ = ["n_keep_visual", "fastv_keep_naive", "fastv_keep", "FastVHook"]


def n_keep_visual(n_visual: Tensor, keep_fraction: float) -> Tensor:
    """``floor(n * keep_fraction + 0.5)`` per row (round half up), int64."""
    return torch.floor(n_visual.double() * keep_fraction + 0.5).long()


def _check_inputs(q: Tensor, k: Tensor, vis_mask: Tensor, lengths: Tensor, ratio: float) -> None:
    check_ratio("ratio", ratio)
    if q.dim() != 4 or k.dim() != 4 or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2] \
            or q.shape[3] != k.shape[3] or q.shape[1] % k.shape[1]:
        raise ValueError(f"q [B,Hq,L,D] / k [B,Hkv,L,D] mismatch: {tuple(q.shape)} / {tuple(k.shape)}")
    B, _, L, _ = q.shape
    if vis_mask.shape != (B, L) or vis_mask.dtype != torch.bool:
        raise ValueError(f"vis_mask must be bool [B, L]=({B}, {L})")
    if lengths.shape != (B,) or bool((lengths < 1).any()) or bool((lengths > L).any()):
        raise ValueError(f"lengths must be [B]={B} in [1, {L}]")


def fastv_keep_naive(q: Tensor, k: Tensor, vis_mask: Tensor, lengths: Tensor, ratio: float) -> Tensor:
    """Spec. ``q [B,Hq,L,D]``, ``k [B,Hkv,L,D]``: post-RoPE queries/keys of layer K-1 (right padded);
    returns kept indices ``[B, K]`` ascending, -1 padded."""
    _check_inputs(q, k, vis_mask, lengths, ratio)
    B, Hq, L, D = q.shape
    G = Hq // k.shape[1]
    rows = []
    for b in range(B):
        n = int(lengths[b])
        qb, kb = q[b, :, :n].double(), k[b, :, :n].double().repeat_interleave(G, dim=0)
        logits = qb @ kb.transpose(-1, -2) / math.sqrt(D)
        logits = logits.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        attn = logits.softmax(-1)                         # [Hq, n, n], the full matrix
        score = attn[:, n - 1].mean(0)                    # last token's row, head mean
        vis = [i for i in range(n) if bool(vis_mask[b, i])]
        n_keep = int(math.floor(len(vis) * (1 - ratio) + 0.5))
        ranked = sorted(vis, key=lambda i: (-float(score[i]), i))
        kept = sorted(set(range(n)) - set(vis) | set(ranked[:n_keep]))
        rows.append(kept)
    width = max(len(r) for r in rows)
    return torch.tensor([r + [-1] * (width - len(r)) for r in rows], dtype=torch.long)


def fastv_keep(q: Tensor, k: Tensor, vis_mask: Tensor, lengths: Tensor, ratio: float, *,
               v: Optional[Tensor] = None, impl: str = "auto") -> Tensor:
    """Optimised FastV selection on plain tensors (same contract as ``fastv_keep_naive``)."""
    _check_inputs(q, k, vis_mask, lengths, ratio)
    B, _, L, _ = q.shape
    rows = torch.zeros(B, L, dtype=torch.bool, device=q.device)
    rows[torch.arange(B, device=q.device), lengths - 1] = True
    full = torch.full((B,), L, dtype=torch.long, device=q.device)
    colsum = slots_to_chunk(rows_colsum(q, k, k if v is None else v, full, rows, impl), full, L)
    return fastv_select(head_mean(colsum), vis_mask, lengths, ratio, impl=impl)


def fastv_select(scores: Tensor, vis_mask: Tensor, lengths: Tensor, ratio: float, impl: str = "auto") -> Tensor:
    """Keep all non-visual tokens and the top ``(1 - ratio)`` visual tokens by ``scores [B, L]``."""
    valid = torch.arange(vis_mask.shape[1], device=vis_mask.device)[None, :] < lengths[:, None]
    n_vis = (vis_mask & valid).sum(dim=1)
    return keep_text_and_top_visual(scores, vis_mask, lengths, n_keep_visual(n_vis, 1.0 - ratio), impl)


class FastVHook(Hook):
    """Prune visual tokens after decoder layer ``K - 1`` (prefill only). ``K`` in ``[1, n_layers)``."""

    def __init__(self, K: int = 2, R: float = 0.5, position_mode: str = "keep", impl: str = "auto"):
        check_ratio("R", R)
        if not isinstance(K, int) or K < 1:
            raise ValueError(f"K must be an int >= 1, got {K!r}")
        if position_mode not in POSITION_MODES:
            raise ValueError(f"position_mode must be one of {POSITION_MODES}")
        self.K, self.R, self.position_mode, self.impl = K, float(R), position_mode, impl
        self.kept: Optional[Tensor] = None   # kept chunk indices of the last call (for inspection)

    def _active(self, layer: int, state: TokenState, ctx_n_layers: int) -> bool:
        check_layer("K", self.K, ctx_n_layers, low=1)
        return state.phase == "prefill" and layer == self.K - 1

    def score_rows(self, layer: int, state: TokenState):
        if state.phase == "prefill" and layer == self.K - 1:
            return last_token_rows(state)
        return None

    def after_layer(self, layer: int, state: TokenState, ctx: LayerContext, colsum):
        if not self._active(layer, state, len(ctx.model.layers)):
            return state
        keep = fastv_select(head_mean(colsum), state.vis_mask, state.lengths, self.R, impl=self.impl)
        self.kept = keep
        return prune_state(state, keep, self.position_mode)
