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
        ids[b, s:s + cfg.n_visual_tokens] = cfg.image_token_id
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
