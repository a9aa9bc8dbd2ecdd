"""LiteVLM token selection (arXiv 2506.07416) as a composable pipeline stage.

**Source status.** Read: the abstract and a third-party summary (themoonlight.io review) of the paper; the
section describing the token-selection module itself was not reachable, and no code is public. What is known:
LiteVLM (NVIDIA, DRIVE Thor) chains camera-view selection -> *a token selection module that shortens the LLM
input* -> speculative decoding (-> FP8 PTQ). The exact scoring rule of the paper's module is therefore **not
reproduced**; this stage *reuses* the repository's scoring cores:

* ``"fastv"``       -- FastV (2403.06764) inside the LLM: keep ``keep_ratio`` of the visual tokens after layer K-1.
* ``"pyramiddrop"`` -- PyramidDrop (2410.17247) with ``pdrop_ratios``.
* ``"visionzip"``   -- VisionZip (2412.04467) before the LLM (``reference_impls.encode.visionzip``): the ViT's
  feature layer is scored by the CLS attention row (``ops.scored_attention``), ``round(keep_ratio * N)`` tokens
  are kept as dominant + contextual tokens (split like VisionZip's 54:10) and projected; the prompt must then
  hold ``visual_tokens_per_image(cfg)`` placeholders per image.
* ``"none"``        -- the stage is disabled and reproduces the unmodified model exactly.

The stage is a small dataclass: ``image_features(model, pixels)`` (encoder side), ``hooks(n_layers)`` (LLM side)
and ``prefill(...)`` (both), so a pipeline (``reference_impls/pipelines/litevlm.py``) can chain it with view
selection and speculative decoding. Deviations: the scorer choice above (ours, not the paper's); VisionZip is
offered only for ViTs with a CLS token (``cfg.vision.use_cls``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

from torch import Tensor

from reference_impls.models.hooks import Hook
from reference_impls.prefill.fastv import FastV
from reference_impls.prefill.pyramiddrop import PyramidDrop

__all__ = ["TokenSelection", "METHODS", "visionzip_split"]

METHODS = ("none", "fastv", "pyramiddrop", "visionzip")


def visionzip_split(n_keep: int, has_cls: bool = True) -> Tuple[int, int]:
    """Split a token budget into VisionZip's (dominant, contextual), 54:10 as in its 64-token setting;
    dominant includes the CLS token and is at least 1 (+1 with CLS)."""
    if n_keep < 1:
        raise ValueError("the VisionZip budget must be >= 1")
    contextual = int(math.floor(n_keep * 10 / 64))
    dominant = n_keep - contextual
    if has_cls and dominant < 2 and n_keep >= 2:
        dominant, contextual = 2, n_keep - 2
    return dominant, contextual


@dataclass
class TokenSelection:
    method: str = "none"
    keep_ratio: float = 1.0  # fraction of visual tokens kept (fastv / visionzip)
    fastv_layer: int = 2  # FastV's K
    pdrop_ratios: Tuple[float, ...] = (0.5, 0.25, 0.125)
    impl: str = "auto"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not (0.0 < float(self.keep_ratio) <= 1.0):
            raise ValueError(f"keep_ratio must be in (0, 1], got {self.keep_ratio}")

    # ------------------------------------------------------------------ encoder side
    def visual_tokens_per_image(self, cfg) -> int:
        """Placeholders needed per image in the prompt."""
        if self.method != "visionzip":
            return cfg.n_visual_tokens
        n_enc = cfg.vision.n_encoder_tokens
        return max(1, int(math.floor(self.keep_ratio * n_enc + 0.5)))

    def image_features(self, model, pixel_values: Tensor) -> Tensor:
        """Visual tokens ``[N_img, visual_tokens_per_image, hidden]`` handed to the LLM."""
        if self.method != "visionzip":
            return model.encode_images(pixel_values)
        from reference_impls.encode.visionzip import cls_attention_scores, visionzip

        vc = model.cfg.vision
        if not vc.use_cls or model.cfg.projector != "mlp2x_gelu":
            raise ValueError("the VisionZip stage needs a ViT with a CLS token and the MLP projector")
        n_run = vc.n_layers_run
        x = model.vision(pixel_values, n_blocks=n_run - 1)  # input of the feature-layer block
        block = model.vision.blocks[n_run - 1]
        q, k, _ = block.attn.project_qkv(block.norm1(x))
        feats = block(x)  # the feature layer (CLS first)
        scores = cls_attention_scores(q[:, :, :1], k, impl=self.impl)  # [N, L]
        d, c = visionzip_split(self.visual_tokens_per_image(model.cfg), has_cls=True)
        out = visionzip(feats, scores, k.mean(dim=1), d, c, has_cls=True, impl=self.impl)
        return model.project(out.tokens)

    # ------------------------------------------------------------------ LLM side
    def hooks(self) -> List[Hook]:
        if self.method == "fastv" and self.keep_ratio < 1.0:
            return [FastV(k=self.fastv_layer, ratio=1.0 - self.keep_ratio, impl=self.impl)]
        if self.method == "pyramiddrop":
            return [PyramidDrop(ratio_list=self.pdrop_ratios, impl=self.impl)]
        return []

    def prefill(
        self,
        model,
        input_ids: Tensor,
        pixel_values: Optional[Tensor] = None,
        *,
        lengths: Optional[Tensor] = None,
        cache=None,
        extra_hooks=(),
    ):
        """Run the stage: encoder-side selection, then the LLM prefill with the stage's hooks."""
        feats = None if pixel_values is None else self.image_features(model, pixel_values)
        return model.prefill(
            input_ids, image_features=feats, lengths=lengths, cache=cache, hooks=[*self.hooks(), *extra_hooks]
        )
