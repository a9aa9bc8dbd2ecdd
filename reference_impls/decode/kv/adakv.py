"""AdaKV (arXiv 2407.11550, "Ada-KV: Optimizing KV Cache Eviction by Adaptive Budget Allocation"): instead of the
same budget for every head, a layer's total budget goes to the best-scored rows of *all* its KV heads together,
so heads whose attention is concentrated give rows to heads whose attention is spread.

A wrapper around any scorer (a policy with ``score(view)``: SnapKV by default, as in the paper; Knorm, Expected
Attention, Q-Filters ...). At the end of prefill, per layer and batch row with a prompt of ``L`` rows:
``n = floor(L * (1 - compression_ratio))`` rows per head on average; each head first keeps its best
``floor(alpha_safeguard * n)`` rows (the safeguard), then the ``Hkv * n`` best-scored rows of the layer over all heads
are kept. Heads end with different lengths: the cache stores them ragged (per-head lengths), and the packed layout
(``CompressedKVCache(layout="packed")``) stores only the kept rows.

    with AdaKV(compression_ratio=0.5)(model):                           # SnapKV scores
        model.generate(...)
    with AdaKV(scorer=Knorm(), compression_ratio=0.5)(model): ...       # any scorer

Follows kvpress's ``AdaKVPress`` (safeguard ``alpha_safeguard = 0.2``, selection of the layer-wide top rows).
Deviations: kvpress masks the dropped rows inside attention; here they are really removed. Ties go to the lower
head, then the lower row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from reference_impls.decode.kv.base import LayerView, PolicyTechnique
from reference_impls.decode.kv.scorer import check_ratio, kept_rows, mask_to_indices, policy_cache, resolve_scorer

__all__ = ["AdaKV", "adakv_keep_mask", "naive_adakv_keep"]


def adakv_keep_mask(scores: Tensor, lengths: Tensor, compression_ratio: float, alpha_safeguard: float) -> Tensor:
    """Bool ``[B, Hkv, cap]`` of kept rows (vectorised): the safeguard rows, then the layer-wide best."""
    B, H, cap = scores.shape
    L = lengths[:, 0]  # prompts: the same length in every head
    n = kept_rows(L, compression_ratio)  # [B]
    n_safe = torch.floor(n.double() * alpha_safeguard + 1e-9).long()
    ar = torch.arange(cap, device=scores.device)
    live = ar[None, None, :] < L[:, None, None]
    s = torch.where(live, scores.float(), torch.full_like(scores, float("-inf"), dtype=torch.float32))
    # rank inside each head (stable: ties -> lower row), the safeguard rows go to +inf
    order = torch.sort(-s, dim=-1, stable=True).indices
    rank = torch.empty_like(order).scatter_(-1, order, ar.expand_as(order))
    s = torch.where(live & (rank < n_safe[:, None, None]), torch.full_like(s, float("inf")), s)
    # layer-wide ranking (stable over the flattened [head, row] order: ties -> lower head, then lower row)
    flat = s.reshape(B, H * cap)
    order = torch.sort(-flat, dim=-1, stable=True).indices
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(H * cap, device=scores.device).expand_as(order))
    return (rank < (H * n)[:, None]).reshape(B, H, cap) & live


def naive_adakv_keep(scores: Tensor, length: int, compression_ratio: float, alpha_safeguard: float) -> list:
    """Spec for one prompt: ``scores [Hkv, L]`` -> per head the kept row indices (ascending)."""
    H = scores.shape[0]
    n = int(kept_rows(torch.tensor([length]), compression_ratio)[0])
    n_safe = int(n * alpha_safeguard + 1e-9)
    safe = set()
    for h in range(H):
        best = sorted(range(length), key=lambda j: (-float(scores[h, j]), j))[:n_safe]
        safe.update((h, j) for j in best)
    rest = sorted(
        ((h, j) for h in range(H) for j in range(length) if (h, j) not in safe),
        key=lambda hj: (-float(scores[hj]), hj[0], hj[1]),
    )
    chosen = sorted(safe, key=lambda hj: hj) + rest[: H * n - len(safe)]
    return [sorted(j for hh, j in chosen if hh == h) for h in range(H)]


@dataclass
class AdaKV(PolicyTechnique):
    """AdaKV: layer-wide budget allocation over the heads, around any scorer."""

    name: ClassVar[str] = "adakv"
    evicts_during_decode: ClassVar[bool] = False
    scorer: object = ("snapkv", {})
    compression_ratio: float = 0.0
    alpha_safeguard: float = 0.2
    score_reduce: str = "mean"
    impl: str = "auto"
    _scorer: object = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        check_ratio("compression_ratio", self.compression_ratio)
        if isinstance(self.alpha_safeguard, bool) or not 0.0 <= self.alpha_safeguard <= 1.0:
            raise ValueError(f"alpha_safeguard must lie in [0, 1], got {self.alpha_safeguard!r}")
        self._scorer = resolve_scorer(self.scorer)
        self.score_reduce = getattr(self._scorer, "score_reduce", self.score_reduce)

    @property
    def wants_queries(self) -> bool:
        return bool(getattr(self._scorer, "wants_queries", False))

    def make_cache(self, spec, batch_size: int):
        return policy_cache(self, spec, batch_size)

    def wants_scores(self, layer, phase, n_new, chunk_len):
        return self._scorer.wants_scores(layer, phase, n_new, chunk_len) if phase == "prefill" else None

    def keep(self, view: LayerView):
        if view.phase != "prefill" or self.compression_ratio == 0:
            return None
        mask = adakv_keep_mask(self._scorer.score(view), view.lengths, self.compression_ratio, self.alpha_safeguard)
        return mask_to_indices(mask)

    def budget_rows(self, layer: int, prompt_len: Tensor) -> Tensor:
        return kept_rows(prompt_len, self.compression_ratio)  # per head on average
