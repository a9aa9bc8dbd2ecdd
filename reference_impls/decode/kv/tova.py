"""TOVA (arXiv 2401.06104, "Transformers are Multi-State RNNs"): a fixed-size cache that, whenever it is over its
budget, drops the rows the *current* query attends to least, the attention averaged over all heads of the layer.

Per layer: at the end of prefill the prompt is cut to ``budget`` rows by the last prompt query's attention; then at
every decode step the new row is appended and, over budget, the lowest-scored rows by that step's query go. One
score per row for the whole layer (the mean over every query head), so all KV heads keep the same rows. The current
token is never dropped (kvpress's ``TOVAPress`` protects it the same way; the paper does not force it, but its own
attention weight is usually the highest).

    with TOVA(budget=512)(model):        # or a fraction of each prompt: TOVA(budget=0.25)
        model.generate(...)

Deviations from the official code (``schwartz-lab-NLP/TOVA``, ``tova_cache.py``): batched and ragged (each row its
own prompt length and budget); scores come from ``ops.scored_attention``'s column sums of the one scored row instead
of eager attention weights; ties go to the older row. A float ``budget`` (our addition) is ``ceil(budget * L)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional, Union

import torch
from torch import Tensor

from reference_impls.decode.kv.base import LayerView, PolicyTechnique, keep_scored_plus_recent, last_rows
from reference_impls.decode.kv.snapkv import rows_budget

__all__ = ["TOVA", "naive_tova_attention"]


@dataclass
class TOVA(PolicyTechnique):
    """TOVA: at most ``budget`` rows per (row, layer), evicting by the current query's head-averaged attention."""

    name: ClassVar[str] = "tova"
    budget: Union[int, float] = 512
    score_reduce: str = "mean"
    impl: str = "auto"
    _budget_rows: Optional[Tensor] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        b = self.budget
        if (
            isinstance(b, bool)
            or not isinstance(b, (int, float))
            or (isinstance(b, int) and b < 1)
            or (isinstance(b, float) and not 0.0 < b <= 1.0)
        ):
            raise ValueError(f"budget must be a positive int or a fraction in (0, 1], got {b!r}")

    def wants_scores(self, layer, phase, n_new, chunk_len):
        if phase == "prefill" and layer == 0:
            self._budget_rows = rows_budget(self.budget, n_new).clamp(min=1)
        return last_rows(n_new, chunk_len, 1)  # the current (last) query of every chunk

    def keep(self, view: LayerView):
        B, Hkv = view.lengths.shape
        head_mean = view.last_colsum.mean(1, keepdim=True).expand(B, Hkv, -1)  # [B, Hkv, cap]
        return keep_scored_plus_recent(head_mean, view.lengths, self._budget_rows[:, None].expand(B, Hkv), 1)

    def budget_rows(self, layer: int, prompt_len: Tensor) -> Tensor:
        return rows_budget(self.budget, prompt_len).clamp(min=1)


def naive_tova_attention(q: Tensor, k: Tensor, v: Tensor, prompt_len: int, budget: int, scale: Optional[float] = None):
    """Mask-based specification for one layer: the prompt attends causally, is cut to ``budget`` rows by the last
    prompt query's attention (mean over the ``Hq`` heads; the last row always stays; ties: the later row goes),
    then tokens ``prompt_len ..`` are decoded one by one under the same rule. q [B, Hq, L, D], k, v [B, Hkv, L, D].
    Returns ``(o [B, Hq, L, D], keep [B, L])`` in fp64 (one kept set per batch row: all heads share it)."""
    B, Hq, L, D = q.shape
    G = Hq // k.shape[1]
    scale = D**-0.5 if scale is None else scale
    qd, kd, vd = q.double(), k.double().repeat_interleave(G, 1), v.double().repeat_interleave(G, 1)
    keep = torch.zeros(B, L, dtype=torch.bool)
    out = torch.zeros(B, Hq, L, D, dtype=torch.float64)

    def evict(p_last, t):  # p_last [B, Hq, L]: the current query's probabilities; t: the current row
        score = p_last.mean(1)
        for b in range(B):
            kept = keep[b].nonzero().flatten().tolist()
            if len(kept) <= budget:
                continue
            old = sorted((j for j in kept if j != t), key=lambda j: (-float(score[b, j]), j))[: budget - 1]
            keep[b] = False
            keep[b, old + [t]] = True

    s = torch.einsum("bhid,bhjd->bhij", qd[:, :, :prompt_len], kd[:, :, :prompt_len]) * scale
    causal = torch.ones(prompt_len, prompt_len, dtype=torch.bool).tril()
    p = torch.softmax(s.masked_fill(~causal, float("-inf")), -1)
    out[:, :, :prompt_len] = p @ vd[:, :, :prompt_len]
    keep[:, :prompt_len] = True
    last = torch.zeros(B, Hq, L, dtype=torch.float64)
    last[:, :, :prompt_len] = p[:, :, -1]
    evict(last, prompt_len - 1)
    for t in range(prompt_len, L):
        keep[:, t] = True
        s = torch.einsum("bhd,bhjd->bhj", qd[:, :, t], kd) * scale
        p = torch.softmax(s.masked_fill(~keep[:, None, :], float("-inf")), -1)
        out[:, :, t] = torch.einsum("bhj,bhjd->bhd", p, vd)
        evict(p, t)
    return out, keep
