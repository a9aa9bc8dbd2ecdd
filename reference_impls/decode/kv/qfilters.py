"""Q-Filters (arXiv 2503.02812, "Q-Filters: Leveraging QK Geometry for Efficient KV Cache Compression"): queries of
a head concentrate around one direction, so ``q.k`` is estimated by the projection of ``k`` on that direction, a
"filter" computed once per head; no attention scores are needed.

The filter of a (layer, KV head) is the first right singular vector of its group's queries (post-RoPE), oriented
so that the queries' mean projection on it is positive (:func:`qfilters_from_queries`). At the end of prefill every
prompt row scores ``<k, filter>`` and the best ``floor(L * (1 - compression_ratio))`` rows are kept
(``scorer.ScorerPolicy``).

    filters = qfilters_from_queries(calibration_queries, n_kv_heads)   # [n_layers, Hkv, D], once per model
    with QFilters(filters=filters, compression_ratio=0.5)(model):
        model.generate(...)

Deviations: the paper computes the filters offline on a calibration set and publishes them per model (kvpress's
``QFilterPress`` downloads them and scores ``-<filter, k>``; we did not check the orientation of the published
filters, so load them only after checking which sign makes ``<q, filter>`` positive). Without ``filters`` this class
calibrates on the prompt itself, per layer, batch row and KV head (a self-calibrated variant for hosts without
published filters; it reads the prompt's queries).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

import torch
from torch import Tensor

from reference_impls.decode.kv.base import LayerView
from reference_impls.decode.kv.scorer import ScorerPolicy, check_ratio

__all__ = ["QFilters", "qfilters_from_queries", "naive_qfilter_direction"]


def _direction(q: Tensor) -> Tensor:
    """First right singular vector of ``q [N, D]`` with ``mean(q @ u) >= 0``."""
    _, _, vh = torch.linalg.svd(q.double(), full_matrices=False)
    u = vh[0]
    return u if float((q.double() @ u).mean()) >= 0 else -u


def naive_qfilter_direction(q: Tensor) -> Tensor:
    """Spec: the unit vector maximising ``sum_n (q_n . u)^2`` (power iteration on ``q^T q``), oriented so that the
    mean projection is positive. ``q [N, D]``."""
    M = q.double().T @ q.double()
    u = torch.ones(M.shape[0], dtype=torch.float64)
    for _ in range(500):
        u = M @ u
        u = u / u.norm()
    return u if float((q.double() @ u).mean()) >= 0 else -u


def qfilters_from_queries(queries, n_kv_heads: int) -> Tensor:
    """Filters ``[n_layers, Hkv, D]`` from per-layer calibration queries (each ``[N, Hq, D]`` or ``[B, Hq, T, D]``,
    post-RoPE): one direction per KV head over the queries of its group."""
    out = []
    for q in queries:
        q = q.transpose(1, 2).reshape(-1, q.shape[1], q.shape[-1]) if q.dim() == 4 else q
        Hq, D = q.shape[1], q.shape[2]
        G = Hq // n_kv_heads
        out.append(torch.stack([_direction(q[:, h * G : (h + 1) * G].reshape(-1, D)) for h in range(n_kv_heads)]))
    return torch.stack(out).float()


@dataclass
class QFilters(ScorerPolicy):
    """Q-Filters: keep the keys with the largest projection on each head's query direction."""

    name: ClassVar[str] = "qfilters"
    compression_ratio: float = 0.0
    filters: Optional[Tensor] = field(default=None, repr=False, compare=False)
    score_reduce: str = "mean"
    impl: str = "auto"

    def __post_init__(self):
        check_ratio("compression_ratio", self.compression_ratio)
        if self.filters is not None:
            self.filters = torch.as_tensor(self.filters, dtype=torch.float32)
            if self.filters.dim() != 3:
                raise ValueError(f"filters must be [n_layers, Hkv, D], got {tuple(self.filters.shape)}")

    @property
    def wants_queries(self) -> bool:
        return self.filters is None  # self-calibration reads the prompt's queries

    def prepare(self, spec) -> None:
        if self.filters is not None and tuple(self.filters.shape) != (spec.n_layers, spec.n_kv_heads, spec.head_dim):
            raise ValueError(
                f"filters are {tuple(self.filters.shape)}; this model needs "
                f"[{spec.n_layers}, {spec.n_kv_heads}, {spec.head_dim}]"
            )

    def score(self, view: LayerView) -> Tensor:
        keys = view.keys.float()
        if self.filters is not None:
            f = self.filters[view.layer].to(keys.device)[None]  # [1, Hkv, D]
        else:
            B, Hkv = keys.shape[:2]
            Hq = view.queries.shape[1]
            G = Hq // Hkv
            f = torch.zeros(B, Hkv, keys.shape[-1], device=keys.device)
            for b in range(B):
                L = int(view.n_new[b])
                q = view.queries[b, :, :L].float()  # [Hq, L, D]
                for h in range(Hkv):
                    f[b, h] = _direction(q[h * G : (h + 1) * G].reshape(-1, q.shape[-1])).float()
        return torch.einsum("bhld,bhd->bhl", keys, f.expand(keys.shape[0], -1, -1))
