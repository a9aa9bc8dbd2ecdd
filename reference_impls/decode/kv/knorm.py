"""Knorm (arXiv 2406.11430, "A Simple and Effective L2 Norm-Based Strategy for KV Cache Compression"): keep the
keys with the *lowest* L2 norm, which the paper finds receive the most attention.

At the end of prefill every prompt row of every layer and KV head is scored ``-||k||`` (post-RoPE keys, as stored)
and the best ``floor(L * (1 - compression_ratio))`` rows are kept (``scorer.ScorerPolicy``). Chosen as the simplest
attention-free scorer; it needs no attention scores, so it also composes with fused attention kernels.

    with Knorm(compression_ratio=0.5)(model):
        model.generate(...)

Follows kvpress's ``KnormPress`` (score ``-keys.norm(dim=-1)``, one-shot at prefill). Deviations: the paper also
evaluates compressing during decoding and skipping the first layers; this class compresses the prompt once, every
layer. Ties go to the lower index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from reference_impls.decode.kv.scorer import ScorerPolicy, check_ratio, kept_rows

__all__ = ["Knorm", "naive_knorm_keep"]


@dataclass
class Knorm(ScorerPolicy):
    """Keep the lowest-norm keys of each prompt."""

    name: ClassVar[str] = "knorm"
    compression_ratio: float = 0.0
    score_reduce: str = "mean"
    impl: str = "auto"

    def __post_init__(self):
        check_ratio("compression_ratio", self.compression_ratio)

    def score(self, view) -> Tensor:
        return -view.keys.float().norm(dim=-1)


def naive_knorm_keep(k: Tensor, compression_ratio: float) -> list:
    """Spec for one prompt ``k [Hkv, L, D]``: per head, the indices (ascending) of the ``floor(L (1 - ratio))``
    keys of smallest norm (ties: lower index)."""
    Hkv, L, _ = k.shape
    n = int(kept_rows(torch.tensor([L]), compression_ratio)[0])
    out = []
    for h in range(Hkv):
        norms = [float(k[h, j].double().norm()) for j in range(L)]
        out.append(sorted(sorted(range(L), key=lambda j: (norms[j], j))[:n]))
    return out
