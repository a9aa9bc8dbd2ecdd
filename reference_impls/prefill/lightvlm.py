"""LightVLM pyramid token merging (arXiv 2509.00419), the encoding (prefill) half of LightVLM.

**Source status.** Only the abstract and landing pages of the paper could be read here (the arXiv HTML body
was not reachable); no official code was found. The abstract states: training-free; tokens are reduced "in
a hierarchical manner" at different LLM layers, "finally only keeping a few dominant tokens"; KV-cache
compression handles decoding (``reference_impls/decode/kv/lightvlm_kv.py``). The rule below is our proposed,
faithful-in-spirit specification -- **not verified against the paper text**:

At each boundary ``l`` of ``layer_list`` (default 25/50/75 % depth, as PyramidDrop), before layer ``l``:
1. rank the visual tokens by the last token's attention under layer ``l``'s projections (single-row
   recomputation through ``ops.scored_attention``, head mean) and keep the top ``int(N_vis_orig * ratio)``
   as *dominant* tokens (default ratios 0.5, 0.25, 0.1);
2. merge every other visual token into its most similar dominant token: cosine similarity of the keys of
   layer ``l`` averaged over KV heads (``ops.cosine_max_argmax``), size-weighted average of hidden states
   (``h_d <- (s_d h_d + sum s_i h_i) / (s_d + sum s_i)``, sizes add up);
3. the merged token keeps the dominant token's position id and slot (visual tokens only merge into visual
   tokens, so causal order and the text positions are untouched).

Deviations/choices to flag: the layer/ratio defaults and the key-cosine metric are our choices; sizes are
tracked for weighting but not used as proportional attention (``+log s`` on logits) inside the LLM; when a
ratio would keep no dominant token in a row that still has visual tokens, one is kept so that merging has a
target.

* ``naive_lightvlm_merge`` -- spec on plain tensors (per-row loops, explicit cosine).
* ``lightvlm_merge`` -- optimised (``ops.cosine_max_argmax`` + ``index_add``).
* ``LightVLM`` -- the technique (``with LightVLM()(model): ...``); ``merge=False`` reduces to PyramidDrop-style
  pruning with ``position_mode="keep"``. The decoding half is ``decode.kv.lightvlm_kv.LightVLMKV``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar, Optional, Sequence

import torch
from torch import Tensor

from reference_impls.models.hooks import (
    LayerContext,
    TokenState,
    head_mean,
    keep_text_and_top_visual,
    last_token_rows,
    prune_state,
)
from reference_impls.ops import cosine_max_argmax
from reference_impls.prefill.pyramiddrop import PyramidSchedule

__all__ = ["naive_lightvlm_merge", "lightvlm_merge", "LightVLM"]


def _check(hidden, metric, sizes, keep, vis_mask, lengths):
    B, L, _ = hidden.shape
    if metric.shape[:2] != (B, L) or sizes.shape != (B, L) or vis_mask.shape != (B, L) or lengths.shape != (B,):
        raise ValueError("hidden [B,L,C], metric [B,L,D], sizes/vis_mask [B,L] and lengths [B] must agree")
    if keep.dim() != 2 or keep.shape[0] != B:
        raise ValueError("keep must be [B, K] kept indices")


def naive_lightvlm_merge(
    hidden: Tensor, metric: Tensor, sizes: Tensor, keep: Tensor, vis_mask: Tensor, lengths: Tensor
):
    """Spec: merge each dropped visual token into its most cosine-similar kept visual token.

    ``keep [B, K]``: kept indices (ascending, -1 padded; text + dominant visual tokens). Returns
    ``(hidden', sizes')`` of full length ``L`` in which the dominant rows hold the merged values."""
    _check(hidden, metric, sizes, keep, vis_mask, lengths)
    out_h, out_s = hidden.clone(), sizes.clone()
    for b in range(hidden.shape[0]):
        kept = set(int(i) for i in keep[b] if i >= 0)
        vis = [i for i in range(int(lengths[b])) if bool(vis_mask[b, i])]
        dominant = [i for i in vis if i in kept]
        dropped = [i for i in vis if i not in kept]
        if not dropped:
            continue
        if not dominant:
            raise ValueError("tokens to merge but no dominant visual token to merge into")
        acc = {d: (hidden[b, d].double() * sizes[b, d].double(), float(sizes[b, d])) for d in dominant}
        for i in dropped:
            best, best_cos = None, None
            for d in dominant:  # ties -> the first (lowest index) dominant token
                a, c = metric[b, i].double(), metric[b, d].double()
                cos = float(a @ c / (a.norm().clamp(min=1e-8) * c.norm().clamp(min=1e-8)))
                if best_cos is None or cos > best_cos:
                    best, best_cos = d, cos
            h, s = acc[best]
            acc[best] = (h + hidden[b, i].double() * float(sizes[b, i]), s + float(sizes[b, i]))
        for d, (h, s) in acc.items():
            if s != float(sizes[b, d]):
                out_h[b, d] = (h / s).to(hidden.dtype)
                out_s[b, d] = s
    return out_h, out_s


def lightvlm_merge(
    hidden: Tensor, metric: Tensor, sizes: Tensor, keep: Tensor, vis_mask: Tensor, lengths: Tensor, impl: str = "auto"
):
    """Optimised ``naive_lightvlm_merge`` (same contract)."""
    _check(hidden, metric, sizes, keep, vis_mask, lengths)
    B, L, C = hidden.shape
    valid = torch.arange(L, device=hidden.device)[None, :] < lengths[:, None]
    kept = torch.zeros(B, L, dtype=torch.bool, device=hidden.device).scatter_(1, keep.clamp(min=0), keep >= 0)
    dominant = vis_mask & valid & kept
    dropped = vis_mask & valid & ~kept
    if not bool(dropped.any()):
        return hidden, sizes
    if bool((dropped.any(1) & ~dominant.any(1)).any()):
        raise ValueError("tokens to merge but no dominant visual token to merge into")
    _, target = cosine_max_argmax(metric.float(), metric.float(), b_mask=dominant, impl=impl)  # [B, L]
    w = (sizes * dropped).double()
    flat_t = (target.clamp(min=0) + torch.arange(B, device=hidden.device)[:, None] * L).flatten()
    num = (hidden.double() * sizes.double()[..., None]).flatten(0, 1)
    num = num.index_add(0, flat_t, (hidden.double() * w[..., None]).flatten(0, 1))
    den = sizes.double().flatten().index_add(0, flat_t, w.flatten())
    received = (
        torch.zeros(B * L, dtype=torch.bool, device=hidden.device)
        .index_fill_(0, flat_t[dropped.flatten()], True)
        .view(B, L)
    )
    merged = (num / den.clamp(min=1e-12)[:, None]).view(B, L, C).to(hidden.dtype)
    out_h = torch.where(received[..., None], merged, hidden)
    out_s = torch.where(received, den.view(B, L).to(sizes.dtype), sizes)
    return out_h, out_s


@dataclass
class LightVLM(PyramidSchedule):
    """LightVLM's pyramid token merging before each layer of ``layer_list`` (prefill only)."""

    name: ClassVar[str] = "lightvlm"
    layer_list: Optional[Sequence[int]] = None
    ratio_list: Sequence[float] = (0.5, 0.25, 0.1)
    merge: bool = True
    impl: str = "auto"
    _n_vis_orig: Optional[Tensor] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        self._check_schedule()

    def before_layer(self, layer: int, state: TokenState, ctx: LayerContext) -> TokenState:
        n_keep = self.stage_keep_count(layer, state, ctx)
        if n_keep is None:
            return state
        if self.merge:  # a visual token can only merge if at least one dominant token is kept
            n_keep = torch.where((state.n_visual() > 0) & (n_keep == 0), 1, n_keep)
        colsum = ctx.recompute_scores(state, last_token_rows(state))
        keep = keep_text_and_top_visual(head_mean(colsum), state.vis_mask, state.lengths, n_keep, self.impl)
        if self.merge:
            metric = ctx.keys(state).mean(dim=1)  # [B, T, D] keys averaged over heads
            hidden, sizes = lightvlm_merge(
                state.hidden, metric, state.sizes, keep, state.vis_mask, state.lengths, impl=self.impl
            )
            state = replace(state, hidden=hidden, sizes=sizes)
        return prune_state(state, keep, "keep")
