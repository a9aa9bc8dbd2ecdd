"""ThinK (arXiv 2407.21018, "ThinK: Thinner Key Cache by Query-Driven Pruning"): prune key *channels*, not tokens:
the channels whose query-key interaction over an observation window is smallest are dropped from the prompt's keys.

At the end of prefill, per layer, batch row and KV head: channel ``c`` scores
``mean_t(q_t[c]^2) * mean_j(k_j[c]^2)`` over the last ``window`` prompt queries ``q_t`` (post-RoPE, the mean of the
head's query group) and every prompt key ``k_j``; the ``floor(D * key_channel_ratio)`` lowest channels are zeroed in
every prompt key of that head. Decode keys are stored whole. Channel pruning composes with any token eviction.

    with ThinK(key_channel_ratio=0.5)(model):
        model.generate(...)

Follows kvpress's ``ThinKPress`` (reviewed there by ThinK's first author): the same channel score, zeroing instead
of a narrower store. Deviations: like kvpress, the pruned channels stay allocated (zeroed), so memory is not saved
in this layout; ``CompressedKVCache.kv_bytes()`` reports what a channel-pruned store would hold (the zeroed channels
of the prompt rows are not counted), ``kv_bytes(allocated=True)`` the real buffers. Batched and ragged: each row's
window is its own last ``window`` prompt rows. Ties: the higher channel is pruned first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
from torch import Tensor

from reference_impls.decode.kv.base import LayerView, PolicyTechnique, last_rows

__all__ = ["ThinK", "think_channel_scores", "naive_think_pruned_channels"]


def think_channel_scores(queries: Tensor, keys: Tensor, n_new: Tensor, window: int) -> Tensor:
    """Channel scores ``[B, Hkv, D]`` (vectorised): ``queries [B, Hq, T, D]`` of the prompt chunk, ``keys
    [B, Hkv, cap, D]`` whose first ``n_new[b]`` rows are the prompt."""
    B, Hq, T, D = queries.shape
    Hkv = keys.shape[1]
    ar = torch.arange(T, device=queries.device)[None, :]
    w = torch.clamp(n_new, max=window)
    rows = ((ar < n_new[:, None]) & (ar >= (n_new - w)[:, None])).float()  # [B, T]
    q2 = (queries.float() ** 2 * rows[:, None, :, None]).sum(2) / w[:, None, None].float()  # [B, Hq, D]
    q2 = q2.view(B, Hkv, Hq // Hkv, D).mean(2)
    live = (torch.arange(keys.shape[2], device=keys.device)[None, :] < n_new[:, None]).float()
    k2 = (keys.float() ** 2 * live[:, None, :, None]).sum(2) / n_new[:, None, None].float()
    return q2 * k2


def naive_think_pruned_channels(q: Tensor, k: Tensor, window: int, key_channel_ratio: float) -> list:
    """Spec for one prompt: ``q [Hq, L, D]``, ``k [Hkv, L, D]`` -> per KV head the set of pruned channels."""
    Hq, L, D = q.shape
    Hkv = k.shape[0]
    G = Hq // Hkv
    n = int(D * key_channel_ratio + 1e-9)
    w = min(window, L)
    out = []
    for h in range(Hkv):
        score = []
        for c in range(D):
            qn = sum(float(q[g, t, c].double() ** 2) for g in range(h * G, (h + 1) * G) for t in range(L - w, L))
            kn = sum(float(k[h, j, c].double() ** 2) for j in range(L))
            score.append(qn / (w * G) * kn / L)
        out.append(set(sorted(range(D), key=lambda c: (score[c], -c))[:n]))
    return out


@dataclass
class ThinK(PolicyTechnique):
    """ThinK: zero the ``key_channel_ratio`` least query-relevant key channels of the prompt."""

    name: ClassVar[str] = "think"
    evicts_during_decode: ClassVar[bool] = False
    wants_queries: ClassVar[bool] = True
    key_channel_ratio: float = 0.0
    window: int = 32
    score_reduce: str = "mean"
    impl: str = "auto"

    def __post_init__(self):
        r = self.key_channel_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= r < 1.0:
            raise ValueError(f"key_channel_ratio must be a number in [0, 1), got {r!r}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be a positive int, got {self.window!r}")

    def wants_scores(self, layer, phase, n_new, chunk_len):
        return last_rows(n_new, chunk_len, 1) if phase == "prefill" else None

    def pruned_channels(self, view: LayerView) -> Optional[Tensor]:
        if view.phase != "prefill" or self.key_channel_ratio == 0:
            return None
        scores = think_channel_scores(view.queries, view.keys, view.n_new, self.window)  # [B, Hkv, D]
        D = scores.shape[-1]
        n = int(D * self.key_channel_ratio + 1e-9)
        if n == 0:
            return None
        # ascending score, ties -> higher channel first: rank on (score, -channel)
        order = torch.sort(scores.flip(-1), dim=-1, stable=True).indices
        lowest = (D - 1) - order[..., :n]
        return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, lowest, True)
