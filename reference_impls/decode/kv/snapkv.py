"""SnapKV (arXiv 2404.14469): one-shot prompt compression from an observation window, on a real cache.

At the end of prefill, per layer: the last ``window`` prompt queries' attention probabilities on the prefix keys
(``ops.scored_attention`` with those rows only) are summed per query head, pooled along the key axis
(``avg_pool1d`` / ``max_pool1d``, kernel 5, padding k//2, stride 1, zero padding as upstream), reduced over the
GQA group (mean, option max), and the top ``budget - window`` prefix keys plus the ``window`` last keys are kept
(compacted in place; per-KV-head storage, so GQA stores ``Hkv`` heads, not ``Hq`` copies). Rows whose prompt is
not longer than the budget are untouched. Decode tokens are appended afterwards (as upstream: the budget bounds
the prompt part; the cache grows by one row per generated token).

``budget`` may be an int or a callable ``(layer, prompt_len [B]) -> [B]`` (PyramidKV's per-layer budgets).
Deviations: batched and ragged (upstream is batch-size 1); pooling of each row stops at its own prefix end;
scores from the fused kernel instead of eager attention.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ...ops import colsum_to_kv_heads
from .base import CompressedKVCache, KVPolicy, LayerView, keep_scored_plus_recent, last_rows

__all__ = ["SnapKVPolicy", "snapkv_cache", "pool_scores"]

Budget = Union[int, Callable[[int, Tensor], Tensor]]


def pool_scores(scores: Tensor, prefix_len: Tensor, kernel: int, pool: str) -> Tensor:
    """Pool ``scores [B, H, L]`` along L (stride 1, padding kernel//2), each row over its own prefix
    ``[0, prefix_len[b, h])`` only (zeros beyond it, as upstream's zero padding at the prefix edge)."""
    if kernel <= 1:
        return scores
    B, H, L = scores.shape
    live = torch.arange(L, device=scores.device)[None, None, :] < prefix_len[..., None]
    x = torch.where(live, scores, torch.zeros_like(scores)).reshape(B * H, 1, L)
    if pool == "avg":
        y = F.avg_pool1d(x, kernel, stride=1, padding=kernel // 2)
    else:
        y = F.max_pool1d(x, kernel, stride=1, padding=kernel // 2)
    return torch.where(live, y.reshape(B, H, -1)[..., :L], torch.zeros_like(scores))


class SnapKVPolicy(KVPolicy):
    evicts_during_decode = False   # one-shot prompt compression: decode rows are only appended

    def __init__(self, budget: Budget, window: int = 32, kernel: int = 5, pool: str = "avg",
                 score_reduce: Optional[str] = None):
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int, got {window!r}")
        if not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd int, got {kernel!r}")
        if isinstance(budget, int) and budget < window:
            raise ValueError(f"budget ({budget}) must be >= window ({window})")
        if not (isinstance(budget, int) or callable(budget)):
            raise ValueError("budget must be an int or a callable (layer, prompt_len) -> [B]")
        self._budget, self.window, self.kernel, self.pool = budget, window, kernel, pool
        self.score_reduce = score_reduce   # None: the cache's reduction

    def budget(self, layer: int, prompt_len: Tensor) -> Tensor:
        if callable(self._budget):
            return torch.as_tensor(self._budget(layer, prompt_len), device=prompt_len.device).to(torch.long)
        return torch.full_like(prompt_len, self._budget)

    def wants_scores(self, layer, phase, n_new, chunk_len):
        return last_rows(n_new, chunk_len, self.window) if phase == "prefill" else None

    def keep(self, view: LayerView):
        if view.phase != "prefill":
            return None
        lengths = view.lengths                                           # [B, Hkv]
        B, Hkv = lengths.shape
        Hq = view.last_colsum.shape[1]
        w = torch.clamp(lengths, max=self.window)
        prefix = lengths - w
        pooled = pool_scores(view.last_colsum, prefix.repeat_interleave(Hq // Hkv, dim=1), self.kernel, self.pool)
        reduce = self.score_reduce or ("max" if self.pool == "max" else "mean")
        scores = colsum_to_kv_heads(pooled, Hkv, reduce)
        budget = self.budget(view.layer, view.n_new)                    # per row
        budget = torch.maximum(budget, torch.full_like(budget, self.window))
        return keep_scored_plus_recent(scores, lengths, budget[:, None].expand(B, Hkv), w)


def snapkv_cache(cfg, batch_size: int, budget: Budget, window: int = 32, kernel: int = 5, pool: str = "avg",
                 **kw) -> CompressedKVCache:
    """A :class:`CompressedKVCache` with a :class:`SnapKVPolicy` for the minimal LVLM config ``cfg``."""
    return CompressedKVCache.for_model(cfg, batch_size, SnapKVPolicy(budget, window, kernel, pool), **kw)
