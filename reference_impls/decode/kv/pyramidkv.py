"""PyramidKV (arXiv 2406.02069): SnapKV selection with per-layer budgets decreasing linearly with depth.

For a prompt of ``L`` tokens, global (average) budget ``C`` per layer and observation window ``w``
(``beta = 20``): ``total = C - w``, ``min = total / beta``, ``max = 2 * total - min``; if ``max >= L - w`` then
``max = L - w`` and ``min = 2 * total - max``. Layer ``l`` keeps ``w + max - l * (max - min) / (n_layers - 1)``
rows. When the constraints fail (``min < 0``, a single layer) every layer gets the flat budget ``C``; a prompt
with ``L <= C`` is not compressed.

Deviation: KVCache-Factory rounds each layer with integer division, so its budgets only approximately average to
``C``; here the fractional parts are distributed by largest remainder so the layer budgets average to ``C``
*exactly* (whenever the flat case does, i.e. always for integer ``C``). Selection inside a layer is SnapKV's
(``snapkv.SnapKVPolicy``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import CompressedKVCache
from .snapkv import SnapKVPolicy

__all__ = ["pyramid_budgets", "PyramidKVPolicy", "pyramidkv_cache"]


def pyramid_budgets(n_layers: int, budget: int, prompt_len: int, window: int, beta: float = 20.0) -> list[int]:
    """Per-layer budgets (rows kept, window included) for one prompt; they average to ``budget`` exactly when
    the prompt is compressed (``prompt_len > budget``)."""
    if n_layers < 1 or budget < window or window < 1 or beta <= 0:
        raise ValueError(f"need n_layers >= 1, window >= 1, budget >= window and beta > 0 "
                         f"(got {n_layers}, {window}, {budget}, {beta})")
    if prompt_len <= budget:
        return [prompt_len] * n_layers
    total = budget - window
    lo = total / beta
    hi = 2 * total - lo
    if hi >= prompt_len - window:
        hi = prompt_len - window
        lo = 2 * total - hi
    if n_layers == 1 or lo < 0:
        return [budget] * n_layers
    raw = [hi - l * (hi - lo) / (n_layers - 1) for l in range(n_layers)]
    floors = [math.floor(x + 1e-9) for x in raw]
    missing = total * n_layers - sum(floors)
    order = sorted(range(n_layers), key=lambda l: (-(raw[l] - floors[l]), l))
    for l in order[:max(0, missing)]:
        floors[l] += 1
    return [window + f for f in floors]


class PyramidKVPolicy(SnapKVPolicy):
    def __init__(self, budget: int, n_layers: int, window: int = 32, kernel: int = 5, pool: str = "avg",
                 beta: float = 20.0):
        if not isinstance(budget, int) or budget < window:
            raise ValueError(f"budget must be an int >= window ({window}), got {budget!r}")
        self.global_budget, self.n_layers, self.beta = budget, n_layers, beta
        self._cache: dict = {}
        super().__init__(self._layer_budget, window, kernel, pool)

    def _layer_budget(self, layer: int, prompt_len: Tensor) -> Tensor:
        out = []
        for L in prompt_len.tolist():
            key = int(L)
            if key not in self._cache:
                self._cache[key] = pyramid_budgets(self.n_layers, self.global_budget, key, self.window, self.beta)
            out.append(self._cache[key][layer])
        return torch.tensor(out, dtype=torch.long, device=prompt_len.device)


def pyramidkv_cache(cfg, batch_size: int, budget: int, window: int = 32, kernel: int = 5, pool: str = "avg",
                    beta: float = 20.0, **kw) -> CompressedKVCache:
    """A :class:`CompressedKVCache` with a :class:`PyramidKVPolicy` for the minimal LVLM config ``cfg``."""
    return CompressedKVCache.for_model(cfg, batch_size, PyramidKVPolicy(budget, cfg.n_layers, window, kernel, pool,
                                                                        beta), **kw)
