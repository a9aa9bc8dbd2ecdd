"""FastV (arXiv 2403.06764): after layer K-1, drop the R fraction of visual tokens that receive the
least attention from the last token; layers >= K (and their KV cache) see only the kept tokens.

Defaults K = 2, R = 0.5. Score = mean over heads of layer K-1's attention probabilities of the last
(instruction) token to each visual token. Keep ``round(N_vis * (1 - R))`` visual tokens per row (Python /
``torch.round`` rounding, half to even, as the official code's ``round``) plus every non-visual token, in order.

    with FastV(k=2, ratio=0.5)(model):          # any host of the registry: MinimalLVLM, HF LLaVA / Qwen2-VL ...
        model.generate(...)

* ``naive_fastv_keep`` -- the readable specification on plain tensors: eager softmax of the full ``L x L``
  matrix, per-row Python loop.
* ``FastV`` -- the technique: ``FastV(...).keep_indices(q, k, vis_mask, lengths)`` is the optimised selection on
  plain tensors (one query row per sample through ``ops.scored_attention``, ``ops.select_topk`` for the ragged
  selection; tested against the spec); as a token technique the host gives it layer K-1's own attention row.

Deviations from the paper / the official code (``pkunlp-icler/FastV``): the score is the last query row, head
mean, as the official code computes it, while the paper's text ranks tokens by the average attention they receive
from all other tokens; batch size > 1 with ragged image spans (upstream indexes ``[0]``); ``position_mode=
"contiguous"`` is an extra option (upstream keeps the original position ids with gaps, our default ``"keep"``);
the KV-cache variant is used (layers >= K cache only the kept tokens), not the attention-mask simulation; ties go to
the lower index (upstream ``topk`` order is unspecified).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Optional

import torch
from torch import Tensor

from reference_impls.models.hooks import (
    POSITION_MODES,
    LayerContext,
    TokenState,
    check_ratio,
    head_mean,
    keep_text_and_top_visual,
    last_token_rows,
    prune_state,
)
from reference_impls.technique import TokenTechnique, UnsupportedModel

__all__ = ["n_keep_visual", "naive_fastv_keep", "FastV"]


def n_keep_visual(n_visual: Tensor, keep_fraction: float) -> Tensor:
    """``round(n * keep_fraction)`` per row, half to even (Python's ``round``, as the official code), int64."""
    return torch.round(n_visual.double() * keep_fraction).long()


def _check_inputs(q: Tensor, k: Tensor, vis_mask: Tensor, lengths: Tensor, ratio: float) -> None:
    check_ratio("ratio", ratio)
    if (
        q.dim() != 4
        or k.dim() != 4
        or q.shape[0] != k.shape[0]
        or q.shape[2] != k.shape[2]
        or q.shape[3] != k.shape[3]
        or q.shape[1] % k.shape[1]
    ):
        raise ValueError(f"q [B,Hq,L,D] / k [B,Hkv,L,D] mismatch: {tuple(q.shape)} / {tuple(k.shape)}")
    B, _, L, _ = q.shape
    if vis_mask.shape != (B, L) or vis_mask.dtype != torch.bool:
        raise ValueError(f"vis_mask must be bool [B, L]=({B}, {L})")
    if lengths.shape != (B,) or bool((lengths < 1).any()) or bool((lengths > L).any()):
        raise ValueError(f"lengths must be [B]={B} in [1, {L}]")


def naive_fastv_keep(q: Tensor, k: Tensor, vis_mask: Tensor, lengths: Tensor, ratio: float) -> Tensor:
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
        attn = logits.softmax(-1)  # [Hq, n, n], the full matrix
        score = attn[:, n - 1].mean(0)  # last token's row, head mean
        vis = [i for i in range(n) if bool(vis_mask[b, i])]
        n_keep = round(len(vis) * (1 - ratio))  # Python round: half to even
        ranked = sorted(vis, key=lambda i: (-float(score[i]), i))
        kept = sorted(set(range(n)) - set(vis) | set(ranked[:n_keep]))
        rows.append(kept)
    width = max(len(r) for r in rows)
    return torch.tensor([r + [-1] * (width - len(r)) for r in rows], dtype=torch.long)


@dataclass
class FastV(TokenTechnique):
    """FastV: prune visual tokens after decoder layer ``k - 1`` (prefill only), ``k`` in ``[1, n_layers)``."""

    name: ClassVar[str] = "fastv"
    k: int = 2
    ratio: float = 0.5
    position_mode: str = "keep"
    impl: str = "auto"
    kept: Optional[Tensor] = field(default=None, init=False, repr=False, compare=False)  # last prefill's kept set

    def __post_init__(self):
        check_ratio("ratio", self.ratio)
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise ValueError(f"k must be an int >= 1, got {self.k!r}")
        if self.position_mode not in POSITION_MODES:
            raise ValueError(f"position_mode must be one of {POSITION_MODES}, got {self.position_mode!r}")
        self.ratio = float(self.ratio)

    def check_host(self, host) -> None:
        if self.k >= host.n_layers:
            raise UnsupportedModel(f"fastv: k={self.k} must be < the model's {host.n_layers} decoder layers")
        if self.position_mode == "contiguous" and getattr(host, "mrope", False):
            raise UnsupportedModel(
                "fastv: position_mode='contiguous' needs 1-D RoPE; M-RoPE positions (Qwen2-VL) cannot be renumbered"
            )

    # ---------------------------------------------------------------- the rule on plain tensors
    def select(self, scores: Tensor, vis_mask: Tensor, lengths: Tensor) -> Tensor:
        """Kept indices ``[B, K]``: all non-visual tokens and the top ``(1 - ratio)`` visual ones by ``scores``."""
        valid = torch.arange(vis_mask.shape[1], device=vis_mask.device)[None, :] < lengths[:, None]
        n_vis = (vis_mask & valid).sum(dim=1)
        return keep_text_and_top_visual(scores, vis_mask, lengths, n_keep_visual(n_vis, 1.0 - self.ratio), self.impl)

    def keep_indices(self, q: Tensor, k: Tensor, vis_mask: Tensor, lengths: Tensor) -> Tensor:
        """The optimised selection on plain tensors (same contract as ``naive_fastv_keep``)."""
        from reference_impls.models.minimal_lvlm import rows_colsum, slots_to_chunk

        _check_inputs(q, k, vis_mask, lengths, self.ratio)
        B, _, L, _ = q.shape
        rows = torch.zeros(B, L, dtype=torch.bool, device=q.device)
        rows[torch.arange(B, device=q.device), lengths - 1] = True
        full = torch.full((B,), L, dtype=torch.long, device=q.device)
        colsum = slots_to_chunk(rows_colsum(q, k, k, full, rows, self.impl), full, L)
        return self.select(head_mean(colsum), vis_mask, lengths)

    # ---------------------------------------------------------------- the hook methods the hosts call
    def score_rows(self, layer: int, state: TokenState):
        if state.phase == "prefill" and layer == self.k - 1:
            return last_token_rows(state)
        return None

    def after_layer(self, layer: int, state: TokenState, ctx: LayerContext, colsum):
        if state.phase != "prefill" or layer != self.k - 1:
            return state
        if self.k >= ctx.n_layers:
            raise ValueError(f"k={self.k} out of range [1, {ctx.n_layers})")
        keep = self.select(head_mean(colsum), state.vis_mask, state.lengths)
        self.kept = keep
        return prune_state(state, keep, self.position_mode)
