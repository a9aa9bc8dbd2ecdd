"""ChunkKV (arXiv 2502.00299, "ChunkKV: Semantic-Preserving KV Cache Compression for Efficient Long-Context LLM
Inference"): keep whole chunks of consecutive tokens instead of isolated tokens, so that kept context stays
contiguous.

A wrapper around any scorer (SnapKV's observation-window scores by default). At the end of prefill, per layer and
batch row with a prompt of ``L`` rows: the rows are cut into chunks of ``chunk_length`` (the last one may be
shorter); a chunk's score is the mean over its rows of the scores summed over the KV heads; the best
``max(1, floor(n_chunks * (1 - compression_ratio)))`` chunks are kept, the same rows in every head. A prompt
shorter than one chunk falls back to the scorer's own per-row selection of ``floor(L * (1 - compression_ratio))``
rows (as kvpress does).

    with ChunkKV(compression_ratio=0.5, chunk_length=20)(model):
        model.generate(...)

Follows kvpress's ``ChunkKVPress`` (chunk scores, chunk count, default ``chunk_length = 20``). Deviations: batched
and ragged (kvpress selects the chunks of batch row 0 for every row); the paper's layer-wise index reuse (sharing
the kept indices between adjacent layers) is not implemented; ties go to the earlier chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from reference_impls.decode.kv.base import LayerView, PolicyTechnique
from reference_impls.decode.kv.scorer import check_ratio, kept_rows, mask_to_indices, policy_cache, resolve_scorer
from reference_impls.ops import select_topk

__all__ = ["ChunkKV", "chunkkv_keep", "naive_chunkkv_keep"]


def chunkkv_keep(
    scores: Tensor, lengths: Tensor, compression_ratio: float, chunk_length: int, impl: str = "auto"
) -> Tensor:
    """Kept slots ``[B, Hkv, K]`` (ascending, -1 padded) of prompts of ``lengths [B, Hkv]`` rows (vectorised)."""
    B, H, cap = scores.shape
    L = lengths[:, 0]
    c = chunk_length
    n_chunks = -(-L // c)  # [B]
    width = -(-cap // c) * c
    live = torch.arange(width, device=scores.device)[None, :] < L[:, None]
    summed = torch.nn.functional.pad(scores.float().sum(1), (0, width - cap))  # [B, width]
    summed = torch.where(live, summed, torch.zeros_like(summed))
    chunk_mean = summed.view(B, -1, c).sum(-1) / live.view(B, -1, c).sum(-1).clamp(min=1)
    n_keep = torch.clamp(torch.floor(n_chunks.double() * (1 - compression_ratio) + 1e-9).long(), min=1)
    chunks = select_topk(chunk_mean, n_keep, lengths=n_chunks, impl=impl)  # [B, Kc]
    keep = torch.zeros(B, width, dtype=torch.bool, device=scores.device)
    valid = chunks >= 0
    rows = (chunks.clamp(min=0)[..., None] * c + torch.arange(c, device=scores.device)).reshape(B, -1)
    keep.scatter_(1, rows, valid[..., None].expand(-1, -1, c).reshape(B, -1))
    keep = (keep & live)[:, :cap]
    short = L < c  # no complete chunk: the scorer's per-row selection
    if bool(short.any()):
        per_row = select_topk(scores.float(), kept_rows(lengths, compression_ratio), lengths=lengths, impl=impl)
        row_mask = torch.zeros(B, H, cap + 1, dtype=torch.bool, device=scores.device)
        row_mask.scatter_(2, torch.where(per_row >= 0, per_row, cap), True)
        mask = torch.where(short[:, None, None], row_mask[..., :cap], keep[:, None, :].expand(B, H, cap))
    else:
        mask = keep[:, None, :].expand(B, H, cap)
    return mask_to_indices(mask)


def naive_chunkkv_keep(scores: Tensor, length: int, compression_ratio: float, chunk_length: int) -> list:
    """Spec for one prompt: ``scores [Hkv, L]`` -> per head the kept row indices (ascending)."""
    H = scores.shape[0]
    if length < chunk_length:
        n = int(kept_rows(torch.tensor([length]), compression_ratio)[0])
        return [sorted(sorted(range(length), key=lambda j: (-float(scores[h, j]), j))[:n]) for h in range(H)]
    chunks = [list(range(s, min(s + chunk_length, length))) for s in range(0, length, chunk_length)]
    summed = [sum(float(scores[h, j]) for h in range(H)) for j in range(length)]
    chunk_score = [sum(summed[j] for j in ch) / len(ch) for ch in chunks]
    n_keep = max(1, int(len(chunks) * (1 - compression_ratio) + 1e-9))
    best = sorted(range(len(chunks)), key=lambda i: (-chunk_score[i], i))[:n_keep]
    rows = sorted(j for i in best for j in chunks[i])
    return [rows for _ in range(H)]


@dataclass
class ChunkKV(PolicyTechnique):
    """ChunkKV: keep the best chunks of ``chunk_length`` consecutive prompt rows, around any scorer."""

    name: ClassVar[str] = "chunkkv"
    evicts_during_decode: ClassVar[bool] = False
    scorer: object = ("snapkv", {})
    compression_ratio: float = 0.0
    chunk_length: int = 20
    score_reduce: str = "mean"
    impl: str = "auto"
    _scorer: object = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        check_ratio("compression_ratio", self.compression_ratio)
        if isinstance(self.chunk_length, bool) or not isinstance(self.chunk_length, int) or self.chunk_length < 1:
            raise ValueError(f"chunk_length must be a positive int, got {self.chunk_length!r}")
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
        return chunkkv_keep(
            self._scorer.score(view), view.lengths, self.compression_ratio, self.chunk_length, self.impl
        )
