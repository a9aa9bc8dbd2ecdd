"""H2O heavy-hitter eviction (arXiv 2306.14048) on a real compressed cache.

State: per layer and KV head, ``acc`` = attention mass each cached key has received (the sum of the softmax
columns over every query so far: all prompt queries, then each decode query), reduced over the GQA group with
``mean`` (option ``max``) -- the cache's accumulator. Budget ``heavy + recent`` per (row, KV head): when a layer
holds more, keep the last ``recent`` rows plus the ``heavy`` rows with the largest ``acc`` among the older ones
and compact K, V, positions and ``acc`` in place (``ops.kv_compact``). Sizes are absolute, or ratios of each
row's prompt length (upstream defaults ``heavy_ratio = recent_ratio = 0.1``).

The "prefill variant" (KVCache-Factory's H2O: colsum over all prompt queries, keep top-(C - w) plus the last
w) is the same rule applied once at the end of prefill; ``evict_during_decode=False`` stops there.

    with H2O(heavy=64, recent=64)(model):      # or ratios of each prompt: H2O(heavy_ratio=0.1, recent_ratio=0.1)
        model.generate(...)

Deviations: scores come from ``ops.scored_attention`` (no eager attention); GQA scores are reduced to KV heads
(upstream keeps per-query-head caches); ratios are rounded down, with at least one recent row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

import torch
from torch import Tensor

from reference_impls.decode.kv.base import LayerView, PolicyTechnique, keep_scored_plus_recent

__all__ = ["H2O", "naive_h2o_attention"]


@dataclass
class H2O(PolicyTechnique):
    """H2O: keep ``recent`` latest rows plus ``heavy`` heavy hitters per (row, KV head); sizes absolute or ratios."""

    name: ClassVar[str] = "h2o"
    heavy: Optional[int] = None
    recent: Optional[int] = None
    heavy_ratio: float = 0.1
    recent_ratio: float = 0.1
    evict_during_decode: bool = True
    score_reduce: str = "mean"
    impl: str = "auto"
    _prompt_len: Optional[Tensor] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        heavy, recent = self.heavy, self.recent
        for name, val in (("heavy", heavy), ("recent", recent)):
            if val is not None and (not isinstance(val, int) or isinstance(val, bool) or val < 0):
                raise ValueError(f"{name} must be a non-negative int, got {val!r}")
        for name, val in (("heavy_ratio", self.heavy_ratio), ("recent_ratio", self.recent_ratio)):
            if not 0.0 <= val < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {val}")
        if (heavy if heavy is not None else 1) + (recent if recent is not None else 1) <= 0:
            raise ValueError("heavy + recent must be positive")
        self.evicts_during_decode = self.evict_during_decode  # the prefill variant alone may use the packed layout

    def sizes(self, prompt_len: Tensor) -> tuple[Tensor, Tensor]:
        """``(heavy [B], recent [B])`` for rows with ``prompt_len`` prompt tokens."""
        heavy = (
            torch.full_like(prompt_len, self.heavy)
            if self.heavy is not None
            else (prompt_len.double() * self.heavy_ratio).floor().long()
        )
        recent = (
            torch.full_like(prompt_len, self.recent)
            if self.recent is not None
            else (prompt_len.double() * self.recent_ratio).floor().long().clamp(min=1)
        )
        return heavy, recent

    def budget_rows(self, layer: int, prompt_len: Tensor) -> Tensor:
        heavy, recent = self.sizes(prompt_len)
        return heavy + recent

    def wants_scores(self, layer, phase, n_new, chunk_len):
        if phase == "prefill" and layer == 0:
            self._prompt_len = n_new.clone()
        ar = torch.arange(chunk_len, device=n_new.device)[None, :]
        return ar < n_new[:, None]  # every query contributes to acc

    def keep(self, view: LayerView):
        if view.phase == "decode" and not self.evict_during_decode:
            return None
        heavy, recent = self.sizes(self._prompt_len)
        return keep_scored_plus_recent(view.scores, view.lengths, heavy + recent, recent)


def naive_h2o_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    prompt_len: int,
    heavy: int,
    recent: int,
    *,
    score_reduce: str = "mean",
    scale: Optional[float] = None,
):
    """Mask-based specification (nothing is ever compacted): a prompt of ``prompt_len`` tokens attends causally,
    then tokens ``prompt_len ..`` are decoded one by one. ``keep [B, Hkv, L]`` marks the simulated cache; after
    each step ``acc`` grows by the step's (group-reduced) probabilities and, over budget, the rows outside the
    last ``recent`` kept ones with the lowest ``acc`` are masked out (ties: the later row goes).
    q [B, Hq, L, D], k, v [B, Hkv, L, D]. Returns ``(o [B, Hq, L, D], keep, acc)`` in fp64."""
    B, Hq, L, D = q.shape
    Hkv = k.shape[1]
    G = Hq // Hkv
    scale = D**-0.5 if scale is None else scale
    qd, kd, vd = q.double(), k.double().repeat_interleave(G, 1), v.double().repeat_interleave(G, 1)
    keep = torch.zeros(B, Hkv, L, dtype=torch.bool)
    acc = torch.zeros(B, Hkv, L, dtype=torch.float64)
    out = torch.zeros(B, Hq, L, D, dtype=torch.float64)

    def reduce(p):  # [B, Hq, ...] -> [B, Hkv, ...]
        p = p.reshape(B, Hkv, G, *p.shape[2:])
        return p.mean(2) if score_reduce == "mean" else p.amax(2)

    def evict():
        budget = heavy + recent
        for b in range(B):
            for h in range(Hkv):
                kept = keep[b, h].nonzero().flatten().tolist()
                if len(kept) <= budget:
                    continue
                rec = kept[len(kept) - recent :] if recent > 0 else []
                old = kept[: len(kept) - len(rec)]
                old.sort(key=lambda j: (-float(acc[b, h, j]), j))
                keep[b, h] = False
                keep[b, h, rec + old[: budget - len(rec)]] = True

    # prefill
    s = torch.einsum("bhid,bhjd->bhij", qd[:, :, :prompt_len], kd[:, :, :prompt_len]) * scale
    causal = torch.ones(prompt_len, prompt_len, dtype=torch.bool).tril()
    p = torch.softmax(s.masked_fill(~causal, float("-inf")), -1)
    out[:, :, :prompt_len] = p @ vd[:, :, :prompt_len]
    keep[:, :, :prompt_len] = True
    acc[:, :, :prompt_len] += reduce(p.sum(2))
    evict()
    for t in range(prompt_len, L):
        keep[:, :, t] = True
        vis = keep.repeat_interleave(G, 1)  # [B, Hq, L]
        s = torch.einsum("bhd,bhjd->bhj", qd[:, :, t], kd) * scale
        p = torch.softmax(s.masked_fill(~vis, float("-inf")), -1)
        out[:, :, t] = torch.einsum("bhj,bhjd->bhd", p, vd)
        acc += reduce(p)
        evict()
    return out, keep, acc
