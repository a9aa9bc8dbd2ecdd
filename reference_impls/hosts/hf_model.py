"""Where a Hugging Face model keeps its parts: submodules, config values, the cache argument of ``forward``, and two
index helpers for ragged sequences. Shared by the decoder host (``hosts.hf``) and the vision adapters
(``hosts.hf_vision``)."""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from reference_impls.technique import UnsupportedModel

__all__ = [
    "cache_argument",
    "config_value",
    "find_language_model",
    "find_submodule",
    "gather_seq",
    "left_pad_indices",
    "visual_token_ids",
]


def find_submodule(model: nn.Module, attr: str) -> nn.Module:
    """``model.model.<attr>`` or ``model.<attr>``."""
    for holder in (getattr(model, "model", None), model):
        sub = getattr(holder, attr, None) if holder is not None else None
        if sub is not None:
            return sub
    raise UnsupportedModel(f"{type(model).__name__} has no {attr}")


def find_language_model(model: nn.Module) -> nn.Module:
    """The decoder stack (the module holding ``.layers``) of a LLaVA / Qwen2-VL / Llama style model."""
    inner = getattr(model, "model", None)
    candidates = [getattr(inner, "language_model", None), inner] if inner is not None else []
    lm = getattr(model, "language_model", None)
    if lm is not None:
        candidates += [getattr(lm, "model", None), lm]
    for cand in candidates:
        if cand is not None and isinstance(getattr(cand, "layers", None), nn.ModuleList):
            return cand
    raise UnsupportedModel(f"cannot find the decoder layers of {type(model).__name__}")


def config_value(model: nn.Module, *names, default=None):
    for name in names:
        value = getattr(model.config, name, None)
        if value is not None:
            return value
    return default


def visual_token_ids(model: nn.Module) -> list[int]:
    """Placeholder ids whose positions hold visual embeddings (image, and video for Qwen2-VL); empty for text LMs."""
    ids = [config_value(model, "image_token_id", "image_token_index"), config_value(model, "video_token_id")]
    return [int(i) for i in ids if i is not None]


def gather_seq(x: Tensor, idx: Tensor) -> Tensor:
    """Gather along the sequence dim with ``idx [B, K]`` (-1 -> row 0): x ``[B|1, L, D]`` or ``[S, B|1, L, D]``."""
    safe = idx.clamp(min=0)
    if x.dim() == 3:
        x = x.expand(idx.shape[0], -1, -1)
        return x.gather(1, safe[..., None].expand(-1, -1, x.shape[-1]))
    x = x.expand(-1, idx.shape[0], -1, -1)
    return x.gather(2, safe[None, ..., None].expand(x.shape[0], -1, -1, x.shape[-1]))


def left_pad_indices(idx: Tensor, counts: Tensor) -> Tensor:
    """Right-padded indices ``[B, K]`` (first ``counts[b]`` valid) -> left-padded ``[B, max counts]``, -1 padding."""
    width = int(counts.max()) if counts.numel() else 0
    slot = torch.arange(width, device=idx.device)[None, :] - (width - counts)[:, None]
    out = idx.gather(1, slot.clamp(min=0))
    return torch.where(slot >= 0, out, torch.full_like(out, -1))


def cache_argument(model: nn.Module) -> str:
    """The name under which this transformers version's ``forward`` takes the KV cache."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"
