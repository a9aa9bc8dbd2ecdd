"""SpecVLM: verifier-guided pruning of the draft's video tokens for speculative decoding (arXiv 2508.16201;
stage details follow the official code).

1. The target (verifier) prefills in two stages: first everything up to the last video token, then the text
   after the video with attention statistics requested only for those text queries (``ScoringKVCache``, slot-space
   column sums from ``ops.scored_attention`` through the cache's scoring protocol). The resulting KV cache and
   logits are those of a normal prefill, so the verifier's decoding is unchanged (lossless).
2. Score of video token j = attention from the text queries to j, averaged over heads, text queries and all layers.
3. Budget ``n_keep = N - floor(N * drop_rate)`` (at least 1). Stage I keeps the top tokens by score: either
   ``round(threshold * N)`` of them, or (``percentage`` given) the smallest set whose scores reach that fraction of
   the total mass -- capped at the budget. Stage II fills the rest of the budget with spatially uniform picks
   (cell-centred grid over the remaining indices in raster order).
4. The draft prefills only the kept video tokens (its own visual features, gathered; contiguous positions), and
   chain or tree speculative decoding runs with the lossless verifier.

Defaults/deviations: ``drop_rate = 0.9`` as in the paper; the Stage-I default ``threshold = 0.05`` (half the default
budget) is our choice; positions of the draft's pruned sequence are contiguous (the official code's M-RoPE
position handling for Qwen2.5-VL is not reproduced); the default tree is ``tree.DEFAULT_CHOICES``, not EAGLE's
``mc_sim_7b_63``; batch size 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from reference_impls.decode.speculative.chain import speculative_generate
from reference_impls.decode.speculative.lvlm_adapter import SpeculativeTechnique
from reference_impls.decode.speculative.tree import speculative_generate_tree
from reference_impls.models.kv_cache import StaticKVCache
from reference_impls.ops import select_topk


class ScoringKVCache(StaticKVCache):
    """Static cache that, while ``scoring`` is on, asks every layer for the column sums of all valid chunk rows
    and accumulates ``mean over heads and rows`` per slot, summed over layers (``slot_scores``)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.scoring = False
        self.slot_scores = None
        self.scored_layers = 0

    def wants_scores(self, layer, n_new, chunk_len):
        if not self.scoring:
            return None
        return torch.arange(chunk_len, device=n_new.device)[None, :] < n_new[:, None]

    def observe_scores(self, layer, colsum, score_rows):
        per_slot = colsum.mean(1) / score_rows.sum(1, keepdim=True).clamp_min(1)  # [B, Lk]
        if self.slot_scores is None:
            self.slot_scores = per_slot.clone()
        else:
            n = max(self.slot_scores.shape[1], per_slot.shape[1])

            def pad(t):
                return torch.nn.functional.pad(t, (0, n - t.shape[1]))

            self.slot_scores = pad(self.slot_scores) + pad(per_slot)
        self.scored_layers += 1


@torch.no_grad()
def two_stage_prefill(lm, prompt_ids: torch.Tensor, pixel_values=None, image_features=None):
    """Prefill ``lm`` (an ``LVLMSpecLM``) in two stages; returns ``(last logits [V], video scores [N_vis] fp32)``.
    The video scores are in the order of the prompt's image placeholders."""
    model = lm.model
    vis_pos = (prompt_ids[0] == model.cfg.image_token_id).nonzero().flatten()
    if vis_pos.numel() == 0:
        raise ValueError("the prompt has no image/video placeholder tokens")
    split = int(vis_pos[-1]) + 1
    if split >= prompt_ids.shape[1]:
        raise ValueError("SpecVLM scoring needs at least one text token after the last video token")
    c = model.cfg
    lm.cache = ScoringKVCache(
        c.n_layers, 1, c.n_kv_heads, c.head_dim, lm.capacity, dtype=model.dtype, device=model.device
    )
    model.prefill(prompt_ids[:, :split], pixel_values, image_features=image_features, cache=lm.cache)
    lm.cache.scoring = True
    logits = model.forward_tokens(input_ids=prompt_ids[:, split:], cache=lm.cache)[0, -1]
    lm.cache.scoring = False
    lm.vis_slots = vis_pos
    scores = lm.cache.slot_scores[0, vis_pos] / lm.cache.scored_layers
    return logits, scores


def keep_budget(n_tokens: int, drop_rate: float) -> int:
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
    return max(1, n_tokens - int(n_tokens * drop_rate))


def uniform_pick(candidates: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` spatially uniform elements of the sorted ``candidates``: cell centres ``floor((i + 1/2) n / count)``,
    so every gap is at most ``ceil(n / count)`` (the official code's endpoint-pinned ``linspace`` leaves interior
    gaps of ``(n-1)/(count-1)``; this centred variant is a small deviation)."""
    if count > candidates.numel():
        raise ValueError(f"cannot pick {count} of {candidates.numel()} candidates")
    n = candidates.numel()
    pos = ((torch.arange(count, device=candidates.device, dtype=torch.float64) + 0.5) * n / count).floor().long()
    return candidates[pos]


def specvlm_select(
    scores: torch.Tensor,
    drop_rate: float = 0.9,
    *,
    threshold: Optional[float] = 0.05,
    percentage: Optional[float] = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Kept video-token indices (ascending) from verifier scores ``[N]``: Stage I (top by attention) + Stage II
    (uniform fill up to the budget)."""
    if scores.dim() != 1 or scores.numel() == 0:
        raise ValueError(f"scores must be a non-empty [N] vector, got {tuple(scores.shape)}")
    N = scores.numel()
    budget = keep_budget(N, drop_rate)
    if percentage is not None:
        if not 0.0 < percentage <= 1.0:
            raise ValueError(f"percentage must be in (0, 1], got {percentage}")
        order = scores.float().argsort(descending=True, stable=True)
        cum = scores.float()[order].cumsum(0) / scores.float().sum().clamp_min(1e-30)
        n1 = int((cum < percentage).sum()) + 1
    else:
        if threshold is None or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        n1 = int(round(threshold * N))
    n1 = min(n1, budget)
    stage1 = select_topk(scores.float()[None], n1, impl=impl)[0] if n1 else scores.new_zeros(0, dtype=torch.long)
    remaining = torch.ones(N, dtype=torch.bool, device=scores.device)
    remaining[stage1] = False
    stage2 = uniform_pick(remaining.nonzero().flatten(), budget - n1)
    return torch.cat([stage1, stage2]).sort().values


def pruned_draft_inputs(
    draft_model, prompt_ids: torch.Tensor, kept: torch.Tensor, pixel_values=None, image_features=None
) -> dict:
    """Draft prefill kwargs: the prompt without the pruned placeholders and the draft's own visual tokens at
    the kept indices (``prompt_ids`` inside, for ``prefill_pair``)."""
    if image_features is None:
        image_features = draft_model.encode_images(pixel_values)
    feats = image_features.reshape(-1, image_features.shape[-1])
    vis_pos = (prompt_ids[0] == draft_model.cfg.image_token_id).nonzero().flatten()
    if feats.shape[0] != vis_pos.numel():
        raise ValueError(f"{feats.shape[0]} visual tokens for {vis_pos.numel()} placeholders")
    keep_mask = torch.ones(prompt_ids.shape[1], dtype=torch.bool, device=prompt_ids.device)
    drop = torch.ones(vis_pos.numel(), dtype=torch.bool, device=prompt_ids.device)
    drop[kept] = False
    keep_mask[vis_pos[drop]] = False
    return dict(prompt_ids=prompt_ids[:, keep_mask], image_features=feats[kept])


def specvlm_generate(
    target,
    draft,
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    pixel_values=None,
    drop_rate: float = 0.9,
    threshold: Optional[float] = 0.05,
    percentage: Optional[float] = None,
    tree: bool = True,
    choices=None,
    k: int = 4,
    greedy: bool = True,
    temperature: float = 1.0,
    generator=None,
    impl: str = "auto",
):
    """End to end: two-stage verifier prefill -> prune the draft's video tokens -> tree (or chain) SD.
    ``target``/``draft`` are ``LVLMSpecLM``s. Returns ``(tokens, SpecStats, kept_indices)``."""
    logits, scores = two_stage_prefill(target, prompt_ids, pixel_values)
    kept = specvlm_select(scores, drop_rate, threshold=threshold, percentage=percentage, impl=impl)
    dkw = pruned_draft_inputs(draft.model, prompt_ids, kept, pixel_values)
    common = dict(
        greedy=greedy,
        temperature=temperature,
        generator=generator,
        impl=impl,
        draft_prefill_kwargs=dkw,
        target_prefill_logits=logits,
    )
    if tree:
        out, stats = speculative_generate_tree(
            target, draft, prompt_ids, max_new_tokens, **({"choices": choices} if choices else {}), **common
        )
    else:
        out, stats = speculative_generate(target, draft, prompt_ids, max_new_tokens, k=k, **common)
    return out, stats, kept


@dataclass
class SpecVLM(SpeculativeTechnique):
    """SpecVLM on the minimal LVLM: verifier-guided pruning of the draft's visual tokens, then tree (or chain) SD."""

    name: ClassVar[str] = "specvlm"
    draft: object = None
    draft_layers: int = 1
    drop_rate: float = 0.9
    threshold: Optional[float] = 0.05
    percentage: Optional[float] = None
    tree: bool = True
    k: int = 4
    impl: str = "auto"

    def run(self, target, draft, prompt_ids, max_new_tokens, prefill_kwargs):
        if "pixel_values" not in prefill_kwargs:
            raise ValueError("specvlm: pass pixel_values (the draft encodes its own visual tokens)")
        tokens, stats, kept = specvlm_generate(
            target,
            draft,
            prompt_ids,
            max_new_tokens,
            pixel_values=prefill_kwargs["pixel_values"],
            drop_rate=self.drop_rate,
            threshold=self.threshold,
            percentage=self.percentage,
            tree=self.tree,
            k=self.k,
            impl=self.impl,
        )
        stats.draft_visual_tokens = int(kept.numel())  # what the pruned draft saw (the target sees them all)
        return tokens, stats
