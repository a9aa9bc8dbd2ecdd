"""Adapters for Hugging Face ``Qwen2VLForConditionalGeneration`` and ``Qwen2_5_VLForConditionalGeneration``.

``FastVAdapter`` / ``PyramidDropAdapter`` work unchanged on these models (see ``_hooks``): the decoder layers take
M-RoPE tables as ``position_embeddings`` (``[B, L, D]`` in recent transformers, ``[3, B, L, D]`` in older ones, both
gathered along the sequence), image and video placeholder tokens both count as visual, and the pruned tokens keep
their 3-D M-RoPE positions (decoding continues from the model's own ``rope_deltas``).

VisionZip on Qwen2-VL (no CLS token; the paper does not cover it): the encoder-side cores are
``reference_impls.encode.visionzip.mean_received_attention`` + ``group_mean`` + ``visionzip(..., has_cls=False)``
(declared deviation: attention received, applied after the 2x2 patch merger). An adapter is NOT provided: the
number of image placeholders and the M-RoPE position ids are derived from ``image_grid_thw`` inside the model, so a
shorter visual sequence needs a rewritten prompt plus explicit 3-D position ids, which depends on the transformers
version (``mm_token_type_ids`` / ``get_rope_index`` signatures changed in 5.x).
"""
from __future__ import annotations

from torch import nn

from ._hooks import FastVAdapter, PyramidDropAdapter

__all__ = ["FastVAdapter", "PyramidDropAdapter", "is_qwen2_vl"]


def is_qwen2_vl(model: nn.Module) -> bool:
    """True for Qwen2-VL / Qwen2.5-VL conditional-generation models (by public class name)."""
    return type(model).__name__ in ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration")
