"""MiniCache: KV-cache compression in the depth dimension (Liu et al., arXiv 2405.14366).

Why this paper: MiniCache is the training-free cross-layer KV-sharing method of the catalogue that works on an
existing model's cache (layer-condensed caches, CLA, MLKV, YOCO and SwiftKV need training or a new architecture).

The method: KV states of adjacent layers in the middle-to-deep part of an LLM point in similar directions. For a
pair of layers (l, l+1) and each token (per KV head), decompose ``x = |x| * x / |x|``, store one shared direction
(spherical interpolation, SLERP, of the two unit vectors with parameter t)

    e = sin((1 - t) W) / sin(W) * x_l / |x_l| + sin(t W) / sin(W) * x_{l+1} / |x_{l+1}|,   W = angle(x_l, x_{l+1})

plus both norms, and restore ``x^_l = |x_l| e``, ``x^_{l+1} = |x_{l+1}| e``. Token pairs that are too far apart
(large normalised angular distance ``W / pi``) are *retained*: stored unmerged for both layers and restored exactly.
Keys and values are merged separately; the first layer of the merged range is ``start_layer`` (the paper: the middle
of the network), pairs are ``(start_layer, start_layer + 1), (start_layer + 2, start_layer + 3), ...``;
``t = 0.6`` by default (the paper's setting).

Functions and classes
- ``naive_minicache_merge`` / ``naive_minicache_restore``: the specification, one token at a time.
- ``minicache_merge`` / ``minicache_restore``: vectorised, tested against the specification.
- ``MiniCacheKV``: a cache of the minimal LVLM's protocol; the prompt's KV of every merged pair is compressed once
  after prefill (attention during prefill is exact) and the layers then attend to the restored states.

Deviations
- Retention rule: the paper selects the tokens to keep unmerged with a threshold on the angular distance; this
  implementation keeps the ``retain_ratio`` fraction (rounded up) of the tokens with the largest distance, per
  (batch row, KV head). No official code is published to check the threshold's exact form against.
- Only the prompt's KV is merged; tokens generated afterwards are stored per layer, unmerged.
- Nearly parallel pairs (``sin W < 1e-6``) fall back to normalised linear interpolation (SLERP's limit).
- The cache holds the restored float states for the model's SDPA; ``kv_bytes()`` counts the merged layout (one
  direction, two norms per token, the retained tokens and their indices).

Identity: ``start_layer >= n_layers`` merges nothing, and ``retain_ratio = 1`` retains every token: both reproduce
the unmodified model exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from reference_impls.models.kv_cache import AttendKV, KVCache

__all__ = [
    "MergedPair",
    "naive_minicache_merge",
    "naive_minicache_restore",
    "minicache_merge",
    "minicache_restore",
    "MiniCacheKV",
]


PARALLEL_EPS = 1e-6


@dataclass
class MergedPair:
    """One merged layer pair on one tensor kind (keys or values), ``L`` tokens, ``K`` retained per head.

    direction [B, H, L, D] (unit), norm_first / norm_second [B, H, L], distance [B, H, L] (angle / pi),
    retained [B, H, K] (slot indices, ascending), retained_first / retained_second [B, H, K, D] (exact states)."""

    direction: Tensor
    norm_first: Tensor
    norm_second: Tensor
    distance: Tensor
    retained: Tensor
    retained_first: Tensor
    retained_second: Tensor


def _retained_count(length: int, retain_ratio: float) -> int:
    return min(length, math.ceil(length * retain_ratio - 1e-9))


def _check(first, second, t, retain_ratio):
    if first.dim() != 4 or first.shape != second.shape:
        raise ValueError(
            f"the two layers' states must both be [B, H, L, D]; got {tuple(first.shape)} and {tuple(second.shape)}"
        )
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t}")
    if not 0.0 <= retain_ratio <= 1.0:
        raise ValueError(f"retain_ratio must lie in [0, 1], got {retain_ratio}")


# --------------------------------------------------------------------------------------------------------------
# Specification
# --------------------------------------------------------------------------------------------------------------
def _slerp_one(a: Tensor, b: Tensor, t: float):
    """(direction, |a|, |b|, angle / pi) for two vectors (fp64)."""
    na, nb = a.norm(), b.norm()
    ua, ub = a / na, b / nb
    angle = torch.arccos(torch.clamp(ua @ ub, -1.0, 1.0))
    if torch.sin(angle) < PARALLEL_EPS:
        e = (1 - t) * ua + t * ub
        e = e / e.norm()
    else:
        e = (torch.sin((1 - t) * angle) * ua + torch.sin(t * angle) * ub) / torch.sin(angle)
    return e, na, nb, angle / math.pi


def naive_minicache_merge(first: Tensor, second: Tensor, t: float = 0.6, retain_ratio: float = 0.05) -> MergedPair:
    """Merge layer l (``first``) and layer l + 1 (``second``) states ``[B, H, L, D]`` token by token."""
    _check(first, second, t, retain_ratio)
    B, H, L, D = first.shape
    f, s = first.double(), second.double()
    direction = torch.zeros(B, H, L, D, dtype=torch.float64, device=first.device)
    norm_first, norm_second, distance = (
        torch.zeros(B, H, L, dtype=torch.float64, device=first.device) for _ in range(3)
    )
    for b in range(B):
        for h in range(H):
            for i in range(L):
                direction[b, h, i], norm_first[b, h, i], norm_second[b, h, i], distance[b, h, i] = _slerp_one(
                    f[b, h, i], s[b, h, i], t
                )
    K = _retained_count(L, retain_ratio)
    retained = torch.zeros(B, H, K, dtype=torch.long, device=first.device)
    for b in range(B):
        for h in range(H):
            order = sorted(range(L), key=lambda i: (-float(distance[b, h, i]), i))  # largest distance first
            retained[b, h] = torch.tensor(sorted(order[:K]), dtype=torch.long)
    gather = retained[..., None].expand(B, H, K, D)
    return MergedPair(
        direction.to(first.dtype),
        norm_first.to(first.dtype),
        norm_second.to(first.dtype),
        distance.to(first.dtype),
        retained,
        first.gather(2, gather),
        second.gather(2, gather),
    )


def naive_minicache_restore(pair: MergedPair) -> tuple[Tensor, Tensor]:
    """``(x^_l, x^_{l+1})``: norm times the shared direction, retained tokens put back exactly."""
    first = pair.norm_first[..., None] * pair.direction
    second = pair.norm_second[..., None] * pair.direction
    B, H, K = pair.retained.shape
    for b in range(B):
        for h in range(H):
            for j in range(K):
                i = int(pair.retained[b, h, j])
                first[b, h, i] = pair.retained_first[b, h, j]
                second[b, h, i] = pair.retained_second[b, h, j]
    return first, second


# --------------------------------------------------------------------------------------------------------------
# Vectorised path
# --------------------------------------------------------------------------------------------------------------
def minicache_merge(
    first: Tensor, second: Tensor, t: float = 0.6, retain_ratio: float = 0.05, valid: Optional[Tensor] = None
) -> MergedPair:
    """Vectorised ``naive_minicache_merge``. ``valid [B, L]`` (optional) excludes padding slots from retention
    (they are never retained; their merged values are meaningless)."""
    _check(first, second, t, retain_ratio)
    B, H, L, D = first.shape
    f, s = first.double(), second.double()
    nf, ns = f.norm(dim=-1), s.norm(dim=-1)
    uf, us = f / nf[..., None], s / ns[..., None]
    angle = torch.arccos(torch.clamp((uf * us).sum(-1), -1.0, 1.0))
    sin = torch.sin(angle)
    parallel = sin < PARALLEL_EPS
    slerp = (torch.sin((1 - t) * angle)[..., None] * uf + torch.sin(t * angle)[..., None] * us) / torch.where(
        parallel, torch.ones_like(sin), sin
    )[..., None]
    lerp = (1 - t) * uf + t * us
    lerp = lerp / lerp.norm(dim=-1, keepdim=True)
    direction = torch.where(parallel[..., None], lerp, slerp)
    distance = angle / math.pi
    K = _retained_count(L, retain_ratio)
    key = -distance if valid is None else torch.where(valid[:, None, :], -distance, torch.full_like(distance, 1.0))
    order = torch.sort(key, dim=-1, stable=True).indices[..., :K]  # largest distance first, ties: lower slot
    retained = torch.sort(order, dim=-1).values
    gather = retained[..., None].expand(B, H, K, D)
    return MergedPair(
        direction.to(first.dtype),
        nf.to(first.dtype),
        ns.to(first.dtype),
        distance.to(first.dtype),
        retained,
        first.gather(2, gather),
        second.gather(2, gather),
    )


def minicache_restore(pair: MergedPair) -> tuple[Tensor, Tensor]:
    """Vectorised ``naive_minicache_restore``."""
    first = pair.norm_first[..., None] * pair.direction
    second = pair.norm_second[..., None] * pair.direction
    index = pair.retained[..., None].expand(*pair.retained.shape, first.shape[-1])
    return first.scatter(2, index, pair.retained_first), second.scatter(2, index, pair.retained_second)


# --------------------------------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------------------------------
class MiniCacheKV(KVCache):
    """Static cache whose prompt KV is merged across adjacent layer pairs after prefill (MiniCache).

    ``start_layer`` defaults to ``n_layers // 2``. The merge happens lazily, at the first update after the prefill
    (prefill attention is therefore exact, as in the paper, which compresses the cache once it is filled).
    """

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        head_dim: int,
        capacity: int,
        *,
        start_layer: Optional[int] = None,
        t: float = 0.6,
        retain_ratio: float = 0.05,
        dtype=torch.float32,
        device=None,
        impl: str = "auto",
    ):
        super().__init__(n_layers, batch_size, device)
        self.start_layer = n_layers // 2 if start_layer is None else start_layer
        if not isinstance(self.start_layer, int) or self.start_layer < 0:
            raise ValueError(f"start_layer must be a non-negative int, got {start_layer!r}")
        _check(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), t, retain_ratio)
        self.t, self.retain_ratio, self.impl = t, retain_ratio, impl
        self.capacity, self.n_kv_heads, self.head_dim, self.dtype = capacity, n_kv_heads, head_dim, dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        shape = (batch_size, n_kv_heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(n_layers)]
        self.positions = [
            torch.full((batch_size, capacity), -1, dtype=torch.long, device=self.device) for _ in range(n_layers)
        ]
        self._len = torch.zeros(n_layers, batch_size, dtype=torch.long, device=self.device)
        self._bound = [0] * n_layers
        self.merged: dict[int, tuple[MergedPair, MergedPair]] = {}  # first layer of a pair -> (keys, values)
        self.merged_lengths: Optional[Tensor] = None  # [B] prompt tokens merged per row

    @classmethod
    def for_model(cls, cfg, batch_size: int, capacity: Optional[int] = None, **kw) -> "MiniCacheKV":
        return cls(cfg.n_layers, batch_size, cfg.n_kv_heads, cfg.head_dim, capacity or cfg.max_seq_len, **kw)

    def pairs(self) -> list[tuple[int, int]]:
        return [(l, l + 1) for l in range(self.start_layer, self.n_layers - 1, 2)]

    def lengths(self, layer: int) -> Tensor:
        return self._len[layer]

    def max_length_bound(self, layer: int) -> int:
        return self._bound[layer]

    def update(self, layer, k_new, v_new, positions, n_new) -> AttendKV:
        B, H, T, D = k_new.shape
        if B != self.batch_size or H != self.n_kv_heads or v_new.shape != k_new.shape:
            raise ValueError(f"k/v {tuple(k_new.shape)} do not match the cache")
        if self._bound[layer] + T > self.capacity:
            raise ValueError(f"KV cache overflow at layer {layer}: {self._bound[layer]} + {T} > {self.capacity}")
        first = {a: (a, b) for a, b in self.pairs()}
        if layer in first and layer not in self.merged and self._bound[layer] > 0:
            self._merge_pair(*first[layer])
        start = self._len[layer]
        slots = start[:, None] + torch.arange(T, device=self.device)
        idx = slots[:, None, :, None].expand(B, H, T, D)
        self.keys[layer].scatter_(2, idx, k_new.to(self.dtype))
        self.values[layer].scatter_(2, idx, v_new.to(self.dtype))
        valid = torch.arange(T, device=self.device)[None, :] < n_new[:, None]
        self.positions[layer].scatter_(1, slots, torch.where(valid, positions, -1))
        written = start + T
        lk = self._bound[layer] + T
        self._len[layer] = start + n_new
        self._bound[layer] = lk
        return AttendKV(
            self.keys[layer][:, :, :lk], self.values[layer][:, :, :lk], written, self.positions[layer][:, :lk]
        )

    def _merge_pair(self, a: int, b: int) -> None:
        if not torch.equal(self._len[a], self._len[b]):
            raise RuntimeError(f"layers {a} and {b} hold different token counts; MiniCache merges equal-length caches")
        lengths = self._len[a]
        L = int(lengths.max())
        valid = torch.arange(L, device=self.device)[None, :] < lengths[:, None]
        merge = naive_minicache_merge if self.impl == "naive" else minicache_merge
        restore = naive_minicache_restore if self.impl == "naive" else minicache_restore
        out = []
        for store in (self.keys, self.values):
            first, second = store[a][:, :, :L].float(), store[b][:, :, :L].float()
            if self.impl == "naive" and not bool(valid.all()):
                raise ValueError("impl='naive' merges unpadded batches only (equal row lengths)")
            pair = (
                merge(first, second, self.t, self.retain_ratio)
                if self.impl == "naive"
                else merge(first, second, self.t, self.retain_ratio, valid)
            )
            ra, rb = restore(pair)
            keep = valid[:, None, :, None]
            store[a][:, :, :L] = torch.where(keep, ra, first).to(self.dtype)
            store[b][:, :, :L] = torch.where(keep, rb, second).to(self.dtype)
            out.append(pair)
        self.merged[a] = (out[0], out[1])
        self.merged_lengths = lengths.clone()

    def kv_bytes(self) -> int:
        """Bytes of the merged layout: per merged pair and tensor kind one direction and two norms per prompt token
        plus the retained tokens (two states and an int32 index each); everything else one state per layer."""
        el = self.keys[0].element_size()
        D, H = self.head_dim, self.n_kv_heads
        total = 0
        merged_layers = {l for pair in self.pairs() if pair[0] in self.merged for l in pair}
        for layer in range(self.n_layers):
            tokens = int(self._len[layer].sum())
            if layer in merged_layers:
                tokens -= int(self.merged_lengths.sum())  # generated tokens stay per layer
            total += 2 * tokens * H * D * el
        for a in self.merged:
            prompt = int(self.merged_lengths.sum())
            for pair in self.merged[a]:
                K = pair.retained.shape[-1]
                total += prompt * H * (D + 2) * el + self.batch_size * H * K * (2 * D * el + 4)
        return total

    def rollback(self, n) -> None:
        n = torch.as_tensor(n, device=self.device)
        new = self._len - n
        if bool((new < 0).any()):
            raise ValueError("rollback beyond the start of the cache")
        if self.merged_lengths is not None and bool((new[self.start_layer] < self.merged_lengths).any()):
            raise ValueError("MiniCacheKV cannot roll back into the merged prompt")
        self._len = new
        self.next_position = self.next_position - n
        self._bound = [int(x) for x in new.max(dim=1).values.tolist()]
