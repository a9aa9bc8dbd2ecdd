"""Adapters for Hugging Face ``LlavaForConditionalGeneration`` (CLIP vision tower + Llama-family LLM).

- ``FastVAdapter`` / ``PyramidDropAdapter``: LLM-side visual-token pruning (see ``_hooks``), re-exported here.
- ``VisionZipAdapter``: VisionZip (arXiv 2412.04467) on the CLIP features the projector reads.

``VisionZipAdapter(model, dominant=54, contextual=10)``: a pre-hook on the CLIP encoder layer whose output is the
feature layer (``vision_feature_layer``, -2 by default) recomputes that layer's CLS query row and keys (layer-norm,
q/k projections) and gets the CLS attention from ``reference_impls.ops.scored_attention`` with one score row, so
the ViT keeps SDPA / FlashAttention; a pre-hook on ``multi_modal_projector`` replaces its input [B, N, C] by the
VisionZip tokens [B, dominant + contextual, C]. Every image then needs ``tokens_per_image`` placeholder tokens in
``input_ids``: ``shrink_image_placeholders`` rewrites prompts built for the full token count.

Deviations: with the default ``vision_feature_select_strategy="default"`` LLaVA drops the CLS token before the
projector, so the dominant set is the top-``dominant`` patches (the CLS token is used only for scoring); with
``"full"`` the CLS token is kept and counted among the dominant tokens, as in the paper. A list of feature layers
is not supported. No fine-tuning of the projector (the paper's optional "VisionZip‡" variant).
"""
from __future__ import annotations

import torch
from torch import nn

from ..encode.visionzip import cls_attention_scores, visionzip
from ._hooks import (CompressionError, FastVAdapter, HookAdapter, PyramidDropAdapter, check_visionzip_counts,
                     config_value, find_submodule)

__all__ = ["FastVAdapter", "PyramidDropAdapter", "VisionZipAdapter", "find_vision_tower"]


def find_vision_tower(model: nn.Module) -> nn.Module:
    return find_submodule(model, "vision_tower")


class VisionZipAdapter(HookAdapter):
    """VisionZip on a LLaVA model; ``tokens_per_image = dominant + contextual``."""

    def __init__(self, model: nn.Module, dominant: int = 54, contextual: int = 10, *,
                 require_compression: bool = True, impl: str = "auto"):
        super().__init__(model)
        check_visionzip_counts(dominant, contextual)
        tower = find_vision_tower(model)
        vision_model = getattr(tower, "vision_model", tower)
        self.layers = vision_model.encoder.layers
        feature_layer = config_value(model, "vision_feature_layer", default=-2)
        if not isinstance(feature_layer, int):
            raise ValueError(f"a list of vision_feature_layer ({feature_layer}) is not supported")
        num_layers = len(self.layers)
        index = num_layers + feature_layer if feature_layer < 0 else feature_layer - 1
        if not 0 <= index < num_layers:
            raise ValueError(f"vision_feature_layer={feature_layer} does not name an encoder layer output")
        self.score_layer = self.layers[index]
        self.strategy = config_value(model, "vision_feature_select_strategy", default="default")
        vcfg = vision_model.config
        self.num_patches = (vcfg.image_size // vcfg.patch_size) ** 2
        self.keeps_cls = self.strategy == "full"
        available = self.num_patches + int(self.keeps_cls)
        if self.keeps_cls and dominant < 1:
            raise ValueError("with the 'full' feature strategy the CLS token is dominant: dominant must be >= 1")
        if dominant + contextual > available or dominant + contextual == 0:
            raise ValueError(f"dominant + contextual must be between 1 and {available} (the visual tokens of one "
                             f"image in this model), got {dominant + contextual}")
        self.dominant, self.contextual = dominant, contextual
        self.tokens_per_image = dominant + contextual
        self.full_tokens_per_image = available
        self.require_compression = require_compression
        self.impl = impl
        self.projector = find_submodule(model, "multi_modal_projector")
        self.image_token_id = int(config_value(model, "image_token_id", "image_token_index"))
        self.num_compressed_calls = 0
        self.last_result = None
        self._scores = None

    def _install(self):
        self._scores = None
        self._pre(self.score_layer, self._score_hook)
        self._pre(self.projector, self._projector_hook)

    def _score_hook(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        attn = module.self_attn
        normed = module.layer_norm1(hidden)
        batch, length, _ = normed.shape
        heads = attn.num_heads
        head_dim = normed.shape[-1] // heads
        q = attn.q_proj(normed[:, :1]).view(batch, 1, heads, head_dim).transpose(1, 2)
        k = attn.k_proj(normed).view(batch, length, heads, head_dim).transpose(1, 2)
        scale = getattr(attn, "scale", head_dim**-0.5)
        self._scores = (cls_attention_scores(q, k, scale=scale, impl=self.impl), k.mean(1))
        return None

    def _projector_hook(self, module, args, kwargs):
        features = args[0] if args else kwargs["image_features"]
        if self._scores is None:
            raise CompressionError("VisionZipAdapter: the vision encoder's score layer did not run before the projector")
        scores, metric = self._scores
        self._scores = None
        if features.shape[1] == self.num_patches + 1:  # "full": CLS kept
            result = visionzip(features, scores, metric, self.dominant, self.contextual, has_cls=True, impl=self.impl)
        elif features.shape[1] == self.num_patches:  # "default": CLS cropped, score with it, keep patches
            result = visionzip(features, scores[:, 1:], metric[:, 1:], self.dominant, self.contextual,
                               has_cls=False, impl=self.impl)
        else:
            raise CompressionError(f"projector input has {features.shape[1]} tokens; expected {self.num_patches} "
                                   f"or {self.num_patches + 1}")
        tokens = result.tokens
        if tokens.shape[1] < features.shape[1]:
            self.num_compressed_calls += 1
        elif self.require_compression and self.tokens_per_image < self.full_tokens_per_image:
            raise CompressionError("VisionZipAdapter: the projector input did not get shorter")
        self.last_result = result
        if args:
            return (tokens, *args[1:]), kwargs
        return args, {**kwargs, "image_features": tokens}

    def _check_on_exit(self):
        if self.require_compression and self.tokens_per_image < self.full_tokens_per_image \
                and self.num_compressed_calls == 0:
            raise CompressionError("VisionZipAdapter was active but no image went through the projector")

    def shrink_image_placeholders(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                                  pad_token_id: int = 0):
        """Rewrite prompts with ``full_tokens_per_image`` placeholders per image to ``tokens_per_image`` each;
        rows are left-padded again. Returns (input_ids, attention_mask)."""
        rows, masks = [], []
        full, short = self.full_tokens_per_image, self.tokens_per_image
        for b in range(input_ids.shape[0]):
            ids = input_ids[b]
            valid = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else attention_mask[b].bool()
            ids = ids[valid].tolist()
            out, run = [], 0
            for token in ids + [None]:
                if token == self.image_token_id:
                    run += 1
                    continue
                if run:
                    if run % full:
                        raise ValueError(f"found a run of {run} image tokens, not a multiple of {full}")
                    out += [self.image_token_id] * (short * (run // full))
                    run = 0
                if token is not None:
                    out.append(token)
            rows.append(out)
        width = max(len(r) for r in rows)
        new_ids = torch.full((len(rows), width), pad_token_id, dtype=input_ids.dtype, device=input_ids.device)
        new_mask = torch.zeros(len(rows), width, dtype=torch.long, device=input_ids.device)
        for b, r in enumerate(rows):
            new_ids[b, width - len(r):] = torch.tensor(r, dtype=input_ids.dtype)
            new_mask[b, width - len(r):] = 1
        return new_ids, new_mask
