"""SnapKV (arXiv 2404.14469): one-shot prompt compression from an observation window, on a real cache.

At the end of prefill, per layer: the last ``window`` prompt queries' attention probabilities on the prefix keys
(``ops.scored_attention`` with those rows only) are summed per query head, reduced over each GQA group
(``score_reduce``, mean by default), pooled along the key axis (``avg_pool1d`` / ``max_pool1d``, kernel 5, padding
k//2, stride 1, zero padding as upstream), and the top ``budget - window`` prefix keys plus the ``window`` last keys
are kept per KV head (compacted in place). Rows whose prompt is not longer than the budget are untouched. Decode
tokens are appended afterwards (as upstream: the budget bounds the prompt part; the cache grows by one row per
generated token).

    with SnapKV(budget=0.25)(model):       # keep a quarter of each prompt (an int keeps that many rows)
        model.generate(...)

``naive_snapkv_keep`` is the readable specification (eager softmax, one row at a time, upstream's order of
operations); ``SnapKV.keep`` is the batched rule on the cache's column sums, tested against it.

Deviations from the official code (``FasterDecoding/SnapKV``, which selects per *query* head on caches expanded
with ``repeat_kv``): per-KV-head storage, so a GQA model stores ``Hkv`` heads; the group is reduced *before*
pooling, with ``score_reduce`` (mean by default, ``"max"`` offered) independent of ``pool`` -- the order and the
default of KVCache-Factory's kv-head mode; for MHA (one query head per KV head) the selection is upstream's.
Ties go to the lower index (upstream ``topk`` order is unspecified). Batched and ragged (upstream is batch size
1): pooling of each row stops at its own prefix end; scores come from the fused kernel instead of eager attention.
A float ``budget`` (our addition) is ``ceil(budget * prompt length)`` rows per row, at least ``window``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from reference_impls.decode.kv.base import LayerView, PolicyTechnique, keep_scored_plus_recent, last_rows
from reference_impls.ops import colsum_to_kv_heads

__all__ = ["SnapKV", "pool_scores", "naive_snapkv_keep", "rows_budget"]

Budget = Union[int, float, Callable[[int, Tensor], Tensor]]


def rows_budget(budget: Union[int, float], prompt_len: Tensor) -> Tensor:
    """Rows kept per row ``[B]``: an int as is; a float in (0, 1] as ``ceil(budget * prompt_len)``."""
    if isinstance(budget, float):
        return torch.ceil(prompt_len.double() * budget - 1e-9).long()
    return torch.full_like(prompt_len, int(budget))


def check_budget(budget, window: int) -> None:
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) and not callable(budget):
        raise ValueError(
            f"budget must be an int, a float in (0, 1] or a callable (layer, prompt_len) -> [B], got {budget!r}"
        )
    if isinstance(budget, float) and not 0.0 < budget <= 1.0:
        raise ValueError(f"a float budget is a fraction of the prompt in (0, 1], got {budget}")
    if isinstance(budget, int) and budget < window:
        raise ValueError(f"budget ({budget}) must be >= window ({window})")


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


def naive_snapkv_keep(
    q: Tensor, k: Tensor, budget: int, window: int, kernel: int = 5, pool: str = "avg", score_reduce: str = "mean"
) -> Tensor:
    """Spec of one layer for prompts of full length ``L``: ``q [B, Hq, L, D]``, ``k [B, Hkv, L, D]`` (post-RoPE)
    -> kept key indices ``[B, Hkv, budget]`` (ascending; all ``L`` when ``L <= budget``). Per row and KV head: the
    causal softmax of the last ``window`` queries, summed over those queries, reduced over the head's query group,
    pooled over the prefix, and the best ``budget - window`` prefix keys (ties: lower index) plus the window."""
    B, Hq, L, D = q.shape
    Hkv = k.shape[1]
    G = Hq // Hkv
    if L <= budget:
        return torch.arange(L).expand(B, Hkv, L).clone()
    out = torch.zeros(B, Hkv, budget, dtype=torch.long)
    for b in range(B):
        logits = q[b].double() @ k[b].double().repeat_interleave(G, 0).transpose(-1, -2) / math.sqrt(D)
        logits = logits.masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1), float("-inf"))
        window_rows = logits.softmax(-1)[:, L - window :, : L - window]  # [Hq, w, prefix]
        summed = window_rows.sum(1)  # [Hq, prefix]
        for h in range(Hkv):
            group = summed[h * G : (h + 1) * G]
            score = group.mean(0) if score_reduce == "mean" else group.amax(0)
            pooled = (
                (F.avg_pool1d if pool == "avg" else F.max_pool1d)(
                    score[None, None].float(), kernel, stride=1, padding=kernel // 2
                )[0, 0]
                if kernel > 1
                else score.float()
            )
            ranked = sorted(range(L - window), key=lambda j: (-float(pooled[j]), j))[: budget - window]
            out[b, h] = torch.tensor(sorted(ranked) + list(range(L - window, L)))
    return out


@dataclass
class SnapKV(PolicyTechnique):
    """SnapKV: keep ``budget`` prompt rows per (row, KV head) chosen by an observation window."""

    name: ClassVar[str] = "snapkv"
    evicts_during_decode: ClassVar[bool] = False  # one-shot prompt compression: decode rows are only appended
    budget: Budget = 0.25
    window: int = 32
    kernel: int = 5
    pool: str = "avg"
    score_reduce: str = "mean"
    impl: str = "auto"

    def __post_init__(self):
        if self.pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}")
        if self.score_reduce not in ("mean", "max"):
            raise ValueError(f"score_reduce must be 'mean' or 'max', got {self.score_reduce!r}")
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be a positive int, got {self.window!r}")
        if not isinstance(self.kernel, int) or self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd int, got {self.kernel!r}")
        check_budget(self.budget, self.window)

    def layer_budget(self, layer: int, prompt_len: Tensor) -> Tensor:
        """Prompt rows kept at ``layer`` per row ``[B]`` (before the ``window`` floor)."""
        if callable(self.budget):
            return torch.as_tensor(self.budget(layer, prompt_len), device=prompt_len.device).to(torch.long)
        return rows_budget(self.budget, prompt_len)

    def wants_scores(self, layer, phase, n_new, chunk_len):
        return last_rows(n_new, chunk_len, self.window) if phase == "prefill" else None

    def keep(self, view: LayerView):
        if view.phase != "prefill":
            return None
        lengths = view.lengths  # [B, Hkv]
        B, Hkv = lengths.shape
        w = torch.clamp(lengths, max=self.window)
        scores = colsum_to_kv_heads(view.last_colsum, Hkv, self.score_reduce)
        scores = pool_scores(scores, lengths - w, self.kernel, self.pool)
        budget = self.layer_budget(view.layer, view.n_new)  # per row
        budget = torch.maximum(budget, torch.full_like(budget, self.window))
        return keep_scored_plus_recent(scores, lengths, budget[:, None].expand(B, Hkv), w)

    def score(self, view: LayerView) -> Tensor:
        """SnapKV's pooled observation-window scores ``[B, Hkv, cap]``, the window itself scored ``+inf`` (always
        kept): what AdaKV and ChunkKV allocate with when they wrap SnapKV."""
        lengths = view.lengths
        w = torch.clamp(lengths, max=self.window)
        scores = colsum_to_kv_heads(view.last_colsum, lengths.shape[1], self.score_reduce)
        scores = pool_scores(scores, lengths - w, self.kernel, self.pool)
        ar = torch.arange(scores.shape[-1], device=scores.device)[None, None, :]
        return torch.where(ar >= (lengths - w)[..., None], torch.full_like(scores, float("inf")), scores)

    def budget_rows(self, layer: int, prompt_len: Tensor) -> Tensor:
        """Rows of each prompt kept at ``layer`` (for accounting and tests)."""
        return torch.minimum(
            torch.maximum(self.layer_budget(layer, prompt_len), torch.full_like(prompt_len, self.window)), prompt_len
        )
