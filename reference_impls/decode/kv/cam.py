"""CaM: cache merging for memory-efficient LLM inference (Zhang et al., ICML 2024, OpenReview LCTmppB165; the
paper has no arXiv version).

Why this paper: CaM is the merge-instead-of-evict method that mainstream KV-compression tooling ships (kvpress's
``CAMPress``), with public code whose rule is simple to state; D2O and KeepKV, the catalogue's other training-free
merging methods, also merge evicted entries into kept ones.

The method, as in the official generation code (github.com/zyxxmu/cam, ``kv_cache_cam.py``), on top of a
StreamingLLM cache of ``n_sink`` first tokens plus the ``window`` most recent ones:
* every cached token accumulates the attention it receives (summed over the queries seen so far);
* when a token leaves the recent window (it is the oldest non-sink token and the cache holds more than
  ``n_sink + window`` tokens), it is evicted, but first its **value** is merged into the ``merge_size`` tokens that
  follow it: with ``p = clamp(A_evicted / mean(A_next), 0, 1)`` (A = accumulated attention) a Bernoulli draw decides
  whether ``v_evicted / merge_size`` is added to each of those values; keys are never merged;
* this happens per (batch row, KV head): each head draws its own Bernoulli variable.

Functions and classes
- ``naive_cam_merge``: the specification, one evicted token at a time with explicit loops over rows and heads.
- ``cam_merge``: the same, vectorised over rows and heads (tokens are still evicted one at a time: a merge changes
  the values the next merge may move).
- ``CaMCache``: a cache of the minimal LVLM's protocol applying the rule after every chunk's attention.

Deviations from the official code
- Uniform draws are explicit (``uniforms`` / ``generator``) so results are reproducible and testable; the official
  code calls ``torch.bernoulli``.
- A prompt longer than the cache evicts its excess tokens one at a time, oldest first, each merged as above; the
  official generation code merges only the token next to the window and drops the older ones unmerged. Its
  LM-eval variant (``modify_llama_cam.py``, merge window = the whole recent window, normalised by the maximum
  mean attention) is not implemented.
- Keys keep their original RoPE positions (no StreamingLLM position rolling); GQA: the attention of a KV head is
  the sum over its query heads (the probability ratio is unchanged by that scaling for MHA).

Identity: ``n_sink + window`` at least the sequence length never evicts, so the model is unchanged.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from reference_impls.models.kv_cache import AttendKV, KVCache

__all__ = ["merge_probability", "naive_cam_merge", "cam_merge", "CaMCache"]


def merge_probability(evicted_attention: Tensor, next_attention: Tensor) -> Tensor:
    """``clamp(A_evicted / mean(A_next), 0, 1)`` per head; a window with no attention at all gives 0 (the official
    code replaces the NaN of 0/0 by 0) and a zero mean with a positive numerator gives 1."""
    mean = next_attention.mean(-1)
    ratio = torch.where(
        mean > 0,
        evicted_attention / mean.clamp(min=torch.finfo(mean.dtype).tiny),
        (evicted_attention > 0).to(mean.dtype),
    )
    return ratio.clamp(0, 1)


def _check(values, attention, evicted, merge_size, uniforms):
    if values.dim() != 4 or attention.shape != values.shape[:3]:
        raise ValueError(
            f"values must be [B, H, L, D] and attention [B, H, L]; got {tuple(values.shape)}, {tuple(attention.shape)}"
        )
    if not isinstance(merge_size, int) or merge_size < 1:
        raise ValueError(f"merge_size must be a positive int, got {merge_size!r}")
    if uniforms.shape != (values.shape[0], values.shape[1], len(evicted)):
        raise ValueError(f"uniforms must be [B, H, {len(evicted)}], got {tuple(uniforms.shape)}")


def naive_cam_merge(values: Tensor, attention: Tensor, evicted: list[int], merge_size: int, uniforms: Tensor) -> Tensor:
    """Merge the values of the tokens ``evicted`` (slot indices, processed in the given order) into the
    ``merge_size`` slots after each of them, on one sequence: values [B, H, L, D], attention [B, H, L] (accumulated
    attention per slot), uniforms [B, H, len(evicted)] in [0, 1) (merge iff ``u < p``). Returns new values (the
    evicted slots are left in place; the caller removes them)."""
    _check(values, attention, evicted, merge_size, uniforms)
    out = values.clone()
    B, H, L, _ = values.shape
    for n, e in enumerate(evicted):
        targets = list(range(e + 1, min(e + 1 + merge_size, L)))
        if not targets:
            continue
        for b in range(B):
            for h in range(H):
                p = merge_probability(attention[b, h, e], attention[b, h, targets])
                if uniforms[b, h, n] < p:
                    for t in targets:
                        out[b, h, t] += out[b, h, e] / merge_size
    return out


def cam_merge(values: Tensor, attention: Tensor, evicted: list[int], merge_size: int, uniforms: Tensor) -> Tensor:
    """``naive_cam_merge`` vectorised over rows and heads."""
    _check(values, attention, evicted, merge_size, uniforms)
    out = values.clone()
    L = values.shape[2]
    for n, e in enumerate(evicted):
        hi = min(e + 1 + merge_size, L)
        if hi <= e + 1:
            continue
        p = merge_probability(attention[:, :, e], attention[:, :, e + 1 : hi])  # [B, H]
        gate = (uniforms[:, :, n] < p).to(out.dtype)[..., None, None]  # [B, H, 1, 1]
        out[:, :, e + 1 : hi] += gate * out[:, :, e : e + 1] / merge_size
    return out


class CaMCache(KVCache):
    """StreamingLLM cache (``n_sink`` + ``window``) whose evicted values are merged CaM-style.

    Storage per layer: ``keys/values [B, Hkv, cap, D]`` (post-RoPE), per-row lengths, accumulated attention
    ``[B, Hkv, cap]``. ``merge=False`` gives plain sink + window eviction (the StreamingLLM baseline of the paper).
    ``uniform_fn(shape) -> Tensor`` (default: ``torch.rand`` with ``generator``) supplies the Bernoulli draws.
    """

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        head_dim: int,
        capacity: int,
        *,
        n_sink: int = 4,
        window: int = 512,
        merge_size: int = 16,
        merge: bool = True,
        dtype=torch.float32,
        device=None,
        generator: Optional[torch.Generator] = None,
        impl: str = "auto",
    ):
        super().__init__(n_layers, batch_size, device)
        for name, val in (("n_sink", n_sink), ("window", window), ("merge_size", merge_size)):
            if not isinstance(val, int) or val < (0 if name == "n_sink" else 1):
                raise ValueError(f"{name} must be an int >= {0 if name == 'n_sink' else 1}, got {val!r}")
        self.n_sink, self.window, self.merge_size, self.merge = n_sink, window, merge_size, merge
        self.capacity, self.n_kv_heads, self.dtype = capacity, n_kv_heads, dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.generator, self.impl = generator, impl
        shape = (batch_size, n_kv_heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(n_layers)]
        self.attention = [torch.zeros(shape[:3], device=self.device) for _ in range(n_layers)]
        self.positions = [
            torch.full((batch_size, capacity), -1, dtype=torch.long, device=self.device) for _ in range(n_layers)
        ]
        self._len = torch.zeros(n_layers, batch_size, dtype=torch.long, device=self.device)
        self._bound = [0] * n_layers

    @classmethod
    def for_model(cls, cfg, batch_size: int, capacity: Optional[int] = None, **kw) -> "CaMCache":
        return cls(cfg.n_layers, batch_size, cfg.n_kv_heads, cfg.head_dim, capacity or cfg.max_seq_len, **kw)

    def lengths(self, layer: int) -> Tensor:
        return self._len[layer]

    def max_length_bound(self, layer: int) -> int:
        return self._bound[layer]

    def kv_bytes(self) -> int:
        return int(2 * self._len.sum()) * self.n_kv_heads * self.keys[0].shape[-1] * self.keys[0].element_size()

    def update(self, layer, k_new, v_new, positions, n_new) -> AttendKV:
        B, H, T, D = k_new.shape
        if B != self.batch_size or H != self.n_kv_heads or v_new.shape != k_new.shape:
            raise ValueError(f"k/v {tuple(k_new.shape)} do not match the cache")
        if self._bound[layer] + T > self.capacity:
            raise ValueError(f"KV cache overflow at layer {layer}: {self._bound[layer]} + {T} > {self.capacity}")
        start = self._len[layer]
        slots = start[:, None] + torch.arange(T, device=self.device)
        idx = slots[:, None, :, None].expand(B, H, T, D)
        self.keys[layer].scatter_(2, idx, k_new.to(self.dtype))
        self.values[layer].scatter_(2, idx, v_new.to(self.dtype))
        self.attention[layer].scatter_(2, slots[:, None, :].expand(B, H, T), torch.zeros(B, H, T, device=self.device))
        valid = torch.arange(T, device=self.device)[None, :] < n_new[:, None]
        self.positions[layer].scatter_(1, slots, torch.where(valid, positions, -1))
        written = start + T
        lk = self._bound[layer] + T
        self._len[layer] = start + n_new
        self._bound[layer] = lk
        return AttendKV(
            self.keys[layer][:, :, :lk], self.values[layer][:, :, :lk], written, self.positions[layer][:, :lk]
        )

    def wants_scores(self, layer, n_new, chunk_len):
        return torch.arange(chunk_len, device=n_new.device)[None, :] < n_new[:, None]  # every query counts

    def observe_scores(self, layer, colsum, score_rows) -> None:
        B, Hq, Lk = colsum.shape
        self.attention[layer][:, :, :Lk] += colsum.float().reshape(B, self.n_kv_heads, Hq // self.n_kv_heads, Lk).sum(2)
        self._evict(layer)

    def _evict(self, layer: int) -> None:
        merge_fn = naive_cam_merge if self.impl == "naive" else cam_merge
        for b in range(self.batch_size):
            length = int(self._len[layer, b])
            excess = length - self.n_sink - self.window
            if excess <= 0:
                continue
            evicted = list(range(self.n_sink, self.n_sink + excess))
            vals = self.values[layer][b : b + 1, :, :length]
            if self.merge:
                u = torch.rand(1, self.n_kv_heads, excess, generator=self.generator, device=self.device)
                merged = merge_fn(
                    vals.float(), self.attention[layer][b : b + 1, :, :length], evicted, self.merge_size, u
                )
                vals = merged.to(self.dtype)
            keep = torch.cat([torch.arange(self.n_sink), torch.arange(self.n_sink + excess, length)]).to(self.device)
            n_keep = keep.numel()
            self.keys[layer][b, :, :n_keep] = self.keys[layer][b, :, keep]
            self.values[layer][b, :, :n_keep] = vals[0, :, keep]
            self.attention[layer][b, :, :n_keep] = self.attention[layer][b, :, keep]
            self.positions[layer][b, :n_keep] = self.positions[layer][b, keep]
            self._len[layer, b] = n_keep
        self._bound[layer] = int(self._len[layer].max())

    def rollback(self, n) -> None:
        raise NotImplementedError("CaMCache evicts and merges: it cannot roll back")
