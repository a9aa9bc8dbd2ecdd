"""Shared helpers for the minimal-LVLM and prefill-technique tests (owned by the MODEL helper)."""

from __future__ import annotations

import functools

import torch

from reference_impls.models import LVLMConfig, MinimalLVLM


@functools.lru_cache(maxsize=None)
def tiny_model(n_layers: int = 4, seed: int = 0) -> MinimalLVLM:
    """Random tiny LVLM (GQA 4 q / 2 kv heads, 16 visual tokens per image)."""
    return MinimalLVLM(LVLMConfig.tiny(n_layers=n_layers, init_std=0.1), seed=seed)


def image_prompt(cfg, starts, lengths, width=None, seed=0):
    """Right-padded prompts with one image each, starting at ``starts[b]``; returns ``(ids, lengths, pixels)``."""
    width = width or max(lengths)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.image_token_id, (len(starts), width), generator=g)
    for b, s in enumerate(starts):
        assert s + cfg.n_visual_tokens < lengths[b], "image must end before the last prompt token"
        ids[b, s : s + cfg.n_visual_tokens] = cfg.image_token_id
    pix = torch.randn(len(starts), 3, cfg.vision.image_size, cfg.vision.image_size, generator=g)
    return ids, torch.tensor(lengths), pix


class FixedPrune:
    """Reference hook: before ``layer``, keep exactly the chunk indices ``keep [B, K]`` (no scoring)."""

    def __init__(self, layer: int, keep: torch.Tensor, position_mode: str = "keep"):
        self.layer, self.keep, self.position_mode = layer, keep, position_mode

    def before_layer(self, layer, state, ctx):
        from reference_impls.models.hooks import prune_state

        return prune_state(state, self.keep, self.position_mode) if layer == self.layer else state

    def score_rows(self, layer, state):
        return None

    def after_layer(self, layer, state, ctx, colsum):
        return state


def tiny_target_and_draft(draft_layers: int):
    """Speculative-decoding pair: a fresh random tiny LVLM (seed 0) and its first ``draft_layers`` layers as the
    self-draft (weights shared, ``decode.speculative.lvlm_adapter.truncated_draft``)."""
    from reference_impls.decode.speculative.lvlm_adapter import truncated_draft

    target = MinimalLVLM(LVLMConfig.tiny(), seed=0)
    return target, truncated_draft(target, draft_layers)


def single_image_prompt(cfg, n_prefix: int, n_suffix: int):
    """One prompt ``[1, n_prefix + n_visual_tokens + n_suffix]``: random text ids < 250 (seed 0) around one image's
    placeholder tokens, and that image's pixels (seed 1). Returns ``(ids, pixels)``."""
    nv = cfg.n_visual_tokens
    ids = torch.randint(0, 250, (1, n_prefix + nv + n_suffix), generator=torch.Generator().manual_seed(0))
    ids[0, n_prefix : n_prefix + nv] = cfg.image_token_id
    pix = torch.randn(1, 3, cfg.vision.image_size, cfg.vision.image_size, generator=torch.Generator().manual_seed(1))
    return ids, pix
