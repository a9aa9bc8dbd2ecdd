"""PyramidKV (arXiv 2406.02069): SnapKV selection with per-layer budgets decreasing linearly with depth.

Budgets follow the official code (``Zefan-Cai/KVCache-Factory``, ``PyramidKVCluster.update_kv``) for a prompt of
``L`` tokens, an average budget ``C`` rows per layer (window included), observation window ``w`` and ``beta = 20``:

* ``L < C``: nothing is compressed (every layer keeps its ``L`` rows);
* ``C <= L < 2 (C - w)``: every layer keeps the flat budget ``C``;
* otherwise, with integer arithmetic: ``min = (C - w) // beta``, ``max = 2 (C - w) - min``; if ``max >= L - w``
  then ``max = L - w`` and ``min = 2 (C - w) - max``; ``steps = (max - min) // (n_layers - 1)``; layer ``l``
  keeps ``w + max - l * steps`` rows. The integer steps make the budgets average slightly above ``C``.

    with PyramidKV(budget=0.25)(model):     # C = a quarter of each prompt (an int: C rows)
        model.generate(...)

Selection inside a layer is SnapKV's (``snapkv.SnapKV``; its deviations apply). Our additions: a float ``budget``
(``C = ceil(budget * L)`` per row), ragged batches (budgets per row), a one-layer model (the official code divides
by ``n_layers - 1``) keeps the flat budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from reference_impls.decode.kv.snapkv import SnapKV, rows_budget

__all__ = ["pyramid_budgets", "PyramidKV"]


def pyramid_budgets(n_layers: int, budget: int, prompt_len: int, window: int, beta: int = 20) -> list[int]:
    """Rows kept per layer (window included) for one prompt of ``prompt_len`` tokens, as the official code."""
    if n_layers < 1 or window < 1 or budget <= window or beta <= 0:
        raise ValueError(
            f"need n_layers >= 1, window >= 1, budget > window and beta > 0 "
            f"(got {n_layers}, {window}, {budget}, {beta})"
        )
    if prompt_len < budget:
        return [prompt_len] * n_layers
    total = budget - window
    if prompt_len < 2 * total or n_layers == 1:
        return [budget] * n_layers
    lo = total // beta
    hi = 2 * total - lo
    if hi >= prompt_len - window:
        hi = prompt_len - window
        lo = 2 * total - hi
    steps = (hi - lo) // (n_layers - 1)
    return [window + hi - layer * steps for layer in range(n_layers)]


@dataclass
class PyramidKV(SnapKV):
    """PyramidKV: SnapKV with the pyramid of per-layer budgets (see the module docstring)."""

    name: ClassVar[str] = "pyramidkv"
    beta: int = 20
    n_layers: int = field(default=0, init=False, repr=False, compare=False)  # set by make_cache
    _memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if callable(self.budget):
            raise ValueError("PyramidKV's budget is an int or a float (the per-layer budgets are derived from it)")
        super().__post_init__()
        if isinstance(self.budget, int) and self.budget <= self.window:
            raise ValueError(f"budget ({self.budget}) must be > window ({self.window})")
        if not isinstance(self.beta, int) or self.beta <= 0:
            raise ValueError(f"beta must be a positive int, got {self.beta!r}")

    def make_cache(self, spec, batch_size: int):
        cache = super().make_cache(spec, batch_size)
        cache.policy.n_layers = spec.n_layers
        return cache

    def layer_budget(self, layer: int, prompt_len: Tensor) -> Tensor:
        out = []
        for L, C in zip(prompt_len.tolist(), rows_budget(self.budget, prompt_len).tolist()):
            C = max(int(C), self.window + 1)
            key = (int(L), C)
            if key not in self._memo:
                self._memo[key] = pyramid_budgets(self.n_layers, C, int(L), self.window, self.beta)
            out.append(self._memo[key][layer])
        return torch.tensor(out, dtype=torch.long, device=prompt_len.device)
