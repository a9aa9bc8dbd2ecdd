"""One-shot prompt compression by a per-row score: the shared base of Knorm, Expected Attention and Q-Filters, and
the scorers AdaKV and ChunkKV allocate with.

A :class:`ScorerPolicy` scores every prompt row of a layer at the end of prefill (``score(view) -> [B, Hkv, cap]``,
higher is kept) and keeps the best ``floor(L * (1 - compression_ratio))`` rows of each prompt of ``L`` tokens per
KV head (the rule of kvpress's ``ScorerPress``); decode rows are only appended. ``compression_ratio = 0`` keeps
everything (the identity setting).
"""

from __future__ import annotations

from typing import ClassVar, Optional

import torch
from torch import Tensor

from reference_impls.decode.kv.base import CompressedKVCache, LayerView, PolicyTechnique, last_rows
from reference_impls.ops import select_topk

__all__ = ["ScorerPolicy", "kept_rows", "mask_to_indices", "resolve_scorer", "check_ratio", "policy_cache"]


def check_ratio(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")


def kept_rows(lengths: Tensor, compression_ratio: float) -> Tensor:
    """Rows kept of prompts of ``lengths`` rows: ``floor(L * (1 - compression_ratio))`` (kvpress's rule)."""
    return torch.floor(lengths.double() * (1.0 - compression_ratio) + 1e-9).long()


def mask_to_indices(mask: Tensor) -> Tensor:
    """Bool ``[B, H, cap]`` -> kept slot indices ``[B, H, K]`` ascending, -1 padded (K = most kept in a head)."""
    cap = mask.shape[-1]
    ar = torch.arange(cap, device=mask.device).expand_as(mask)
    idx = torch.where(mask, ar, torch.full_like(ar, cap)).sort(-1).values
    K = int(mask.sum(-1).max().item()) if mask.numel() else 0
    idx = idx[..., :K]
    return torch.where(idx == cap, torch.full_like(idx, -1), idx)


def resolve_scorer(scorer):
    """A scorer given as an object with ``score(view)``, or as ``(registry name, parameters)``."""
    if isinstance(scorer, (tuple, list)) and len(scorer) == 2 and isinstance(scorer[0], str):
        from reference_impls import registry

        scorer = registry.load(scorer[0])(**dict(scorer[1]))
    if not callable(getattr(scorer, "score", None)) or not callable(getattr(scorer, "wants_scores", None)):
        raise ValueError(
            f"scorer must be a KV policy with score(view) (e.g. SnapKV(), Knorm()) or a "
            f"(registry name, parameters) pair, got {scorer!r}"
        )
    return scorer


def policy_cache(policy, spec, batch_size: int) -> CompressedKVCache:
    """The cache of one generation around a fresh copy of ``policy``, after ``prepare(spec)`` on it and on the
    scorer it wraps (scorers that need the model's shapes, e.g. Expected Attention's RoPE frequencies)."""
    fresh = policy.fresh()
    for p in (fresh, getattr(fresh, "_scorer", None)):
        if p is not None and hasattr(p, "prepare"):
            p.prepare(spec)
    return CompressedKVCache(
        fresh,
        spec.n_layers,
        batch_size,
        spec.n_kv_heads,
        spec.head_dim,
        dtype=spec.dtype,
        device=spec.device,
        score_reduce=fresh.score_reduce,
        impl=fresh.impl,
    )


class ScorerPolicy(PolicyTechnique):
    """Base of the score-and-keep prompt compressors (subclasses are dataclasses with ``compression_ratio``,
    ``score_reduce`` and ``impl`` fields and implement :meth:`score`)."""

    evicts_during_decode: ClassVar[bool] = False

    def prepare(self, spec) -> None:
        """Read what the score needs from the model's :class:`~reference_impls.technique.CacheSpec` (default:
        nothing)."""

    def make_cache(self, spec, batch_size: int) -> CompressedKVCache:
        return policy_cache(self, spec, batch_size)

    def score(self, view: LayerView) -> Tensor:
        """``[B, Hkv, cap]`` fp32: how much each committed row is worth keeping (higher is kept)."""
        raise NotImplementedError

    def wants_scores(self, layer, phase, n_new, chunk_len) -> Optional[Tensor]:
        # one scored row per prompt: the cache calls ``keep`` only after chunks that were scored
        return last_rows(n_new, chunk_len, 1) if phase == "prefill" else None

    def keep(self, view: LayerView) -> Optional[Tensor]:
        if view.phase != "prefill" or self.compression_ratio == 0:
            return None
        lengths = view.lengths
        return select_topk(
            self.score(view).float(), kept_rows(lengths, self.compression_ratio), lengths=lengths, impl=self.impl
        )

    def budget_rows(self, layer: int, prompt_len: Tensor) -> Tensor:
        return kept_rows(prompt_len, self.compression_ratio)
