"""DuoAttention (arXiv 2410.10819, "DuoAttention: Efficient Long-Context LLM Inference with Retrieval and Streaming
Heads"): a few "retrieval" heads keep the whole context; the other, "streaming" heads keep only attention sinks and
recent tokens, a constant-size cache.

Which heads stream is given, not learned here: either ``streaming_heads`` (bool ``[n_layers, Hkv]``) or the
official per-head scores (``head_scores [n_layers, Hkv]``, the ``full_attention_heads.tsv`` patterns that
``mit-han-lab/duo-attention`` publishes for its checkpoints) with ``head_compression_ratio``: the lowest-scored
``round(ratio * n_layers * Hkv)`` heads stream (kvpress's ``DuoAttentionPress`` rule). ``head_compression_ratio =
1.0`` without scores makes every head a streaming head (StreamingLLM per head). A streaming head keeps its first
``sink`` and last ``recent`` rows after prefill and after every decode step; a retrieval head keeps everything.

    with DuoAttention(head_scores=scores, head_compression_ratio=0.5, sink=128, recent=256)(model):
        model.generate(...)

Defaults ``sink = 128, recent = 256`` are kvpress's on-the-fly setting (the published patterns ship their own, e.g.
in their ``config.json``). Deviations: the learned gate optimisation that produces the patterns is not implemented;
kvpress compresses only the prompt, while streaming heads here also stay constant-size during decoding, as in the
paper; the cache is per-head ragged (retrieval and streaming heads of a layer have different lengths).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

import torch
from torch import Tensor

from reference_impls.decode.kv.base import LayerView, PolicyTechnique, keep_scored_plus_recent, last_rows

__all__ = ["DuoAttention", "streaming_mask", "naive_duo_keep"]


def streaming_mask(
    n_layers: int, n_kv_heads: int, head_scores=None, head_compression_ratio: float = 0.0, streaming_heads=None
) -> Tensor:
    """Bool ``[n_layers, Hkv]``: which heads stream."""
    if streaming_heads is not None:
        mask = torch.as_tensor(streaming_heads, dtype=torch.bool)
    else:
        n = round(n_layers * n_kv_heads * head_compression_ratio)
        mask = torch.zeros(n_layers * n_kv_heads, dtype=torch.bool)
        if n > 0:
            if head_scores is None:
                if n != n_layers * n_kv_heads:
                    raise ValueError(
                        "a head_compression_ratio below 1 needs head_scores (the published patterns) or streaming_heads"
                    )
                mask[:] = True
            else:
                scores = torch.as_tensor(head_scores, dtype=torch.float64).reshape(-1)
                if scores.numel() != n_layers * n_kv_heads:
                    raise ValueError(
                        f"head_scores must be [{n_layers}, {n_kv_heads}], got "
                        f"{tuple(torch.as_tensor(head_scores).shape)}"
                    )
                mask[torch.sort(scores, stable=True).indices[:n]] = True
        mask = mask.view(n_layers, n_kv_heads)
    if tuple(mask.shape) != (n_layers, n_kv_heads):
        raise ValueError(f"streaming_heads must be [{n_layers}, {n_kv_heads}], got {tuple(mask.shape)}")
    return mask


def naive_duo_keep(length: int, streaming: bool, sink: int, recent: int) -> list:
    """Spec: the rows a head of ``length`` rows keeps."""
    if not streaming or length <= sink + recent:
        return list(range(length))
    return list(range(sink)) + list(range(length - recent, length))


@dataclass
class DuoAttention(PolicyTechnique):
    """DuoAttention: retrieval heads keep everything, streaming heads ``sink`` + ``recent`` rows."""

    name: ClassVar[str] = "duo_attention"
    head_scores: object = None
    head_compression_ratio: float = 0.0
    streaming_heads: object = None
    sink: int = 128
    recent: int = 256
    score_reduce: str = "mean"
    impl: str = "auto"
    _mask: Optional[Tensor] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        r = self.head_compression_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= r <= 1.0:
            raise ValueError(f"head_compression_ratio must lie in [0, 1], got {r!r}")
        for name in ("sink", "recent"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative int, got {v!r}")
        if self.recent < 1:
            raise ValueError("recent must be at least 1 (the current token)")

    def make_cache(self, spec, batch_size: int):
        cache = super().make_cache(spec, batch_size)
        cache.policy._mask = streaming_mask(
            spec.n_layers, spec.n_kv_heads, self.head_scores, self.head_compression_ratio, self.streaming_heads
        ).to(cache.device)
        return cache

    def wants_scores(self, layer, phase, n_new, chunk_len):
        if self._mask is None or not bool(self._mask[layer].any()):
            return None  # a layer of retrieval heads never evicts
        return last_rows(n_new, chunk_len, 1)

    def keep(self, view: LayerView):
        lengths = view.lengths
        B, H = lengths.shape
        streaming = self._mask[view.layer][None, :].expand(B, H)
        budget = torch.where(streaming, torch.full_like(lengths, self.sink + self.recent), lengths)
        ar = torch.arange(view.scores.shape[-1], device=lengths.device)[None, None, :]
        sinks = (ar < self.sink) & streaming[..., None]
        recent = torch.where(streaming, torch.full_like(lengths, self.recent), lengths)
        return keep_scored_plus_recent(torch.zeros_like(view.scores), lengths, budget, recent, protect=sinks)
