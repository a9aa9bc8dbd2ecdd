"""INT8 / FP8-E4M3 KV cache (spec 18): quantise on append with one scale per (token, KV head).

Storage per layer: ``keys/values [B, Hkv, capacity, D]`` in int8 or float8_e4m3fn plus fp32 scales
``[B, Hkv, capacity]`` -- half the bytes of a bf16 cache (a quarter of fp32) plus 4 bytes per token and head.
Appends go through ``ops.quant.kv_quant.quantize_kv`` (Triton: row amax + scale + cast + scatter in one pass).

Two read paths:
  * ``attend(layer, q)``: decode attention straight over the quantised buffers with
    ``ops.decode_attention.decode_attention`` -- int8/fp8 values are converted in registers and the scales are
    applied to the dot products (no dequantised copy is ever written). This is the serving path.
  * ``update(...)`` (the minimal LVLM's protocol): the model attends with SDPA over float tensors, so the returned
    ``AttendKV`` is dequantised (a materialised copy); numerics are identical to the kernel path.

Deviations from calibrated deployments: dynamic per-(token, head) scales only (no static per-head calibration);
scales stored in fp32.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ...models.kv_cache import AttendKV, KVCache
from ...ops.decode_attention import decode_attention, dequantize_kv
from ...ops.quant.kv_quant import KV_FORMATS, quantize_kv

__all__ = ["QuantizedKVCache"]


class QuantizedKVCache(KVCache):
    def __init__(self, n_layers: int, batch_size: int, n_kv_heads: int, head_dim: int, capacity: int, *,
                 fmt: str = "int8", compute_dtype=torch.float32, device=None, impl: str = "auto"):
        super().__init__(n_layers, batch_size, device)
        if fmt not in KV_FORMATS:
            raise ValueError(f"fmt must be one of {sorted(KV_FORMATS)}, got {fmt!r}")
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.fmt, self.capacity, self.compute_dtype, self.impl = fmt, capacity, compute_dtype, impl
        self.n_kv_heads, self.head_dim = n_kv_heads, head_dim
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        qdtype = KV_FORMATS[fmt][0]
        shape = (batch_size, n_kv_heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=qdtype, device=self.device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=qdtype, device=self.device) for _ in range(n_layers)]
        self.k_scale = [torch.ones(shape[:3], device=self.device) for _ in range(n_layers)]
        self.v_scale = [torch.ones(shape[:3], device=self.device) for _ in range(n_layers)]
        self.positions = [torch.full((batch_size, capacity), -1, dtype=torch.long, device=self.device)
                          for _ in range(n_layers)]
        self._len = torch.zeros(n_layers, batch_size, dtype=torch.long, device=self.device)
        self._bound = [0] * n_layers

    @classmethod
    def for_model(cls, cfg, batch_size: int, capacity: int | None = None, **kw) -> "QuantizedKVCache":
        return cls(cfg.n_layers, batch_size, cfg.n_kv_heads, cfg.head_dim, capacity or cfg.max_seq_len, **kw)

    def lengths(self, layer: int) -> Tensor:
        return self._len[layer]

    def max_length_bound(self, layer: int) -> int:
        return self._bound[layer]

    def kv_bytes(self) -> int:
        """Bytes of the quantised K/V buffers plus their scales (allocated)."""
        return int(sum(t.numel() * t.element_size() for l in range(self.n_layers)
                       for t in (self.keys[l], self.values[l], self.k_scale[l], self.v_scale[l])))

    def update(self, layer: int, k_new: Tensor, v_new: Tensor, positions: Tensor, n_new: Tensor) -> AttendKV:
        B, H, T, D = k_new.shape
        if B != self.batch_size or H != self.n_kv_heads or D != self.head_dim or v_new.shape != k_new.shape:
            raise ValueError(f"k/v {tuple(k_new.shape)} do not match the cache")
        if self._bound[layer] + T > self.capacity:
            raise ValueError(f"KV cache overflow at layer {layer}: {self._bound[layer]} + {T} > {self.capacity}")
        start = self._len[layer]
        quantize_kv(k_new, self.fmt, out=self.keys[layer], out_scale=self.k_scale[layer], start=start,
                    impl=self.impl)
        quantize_kv(v_new, self.fmt, out=self.values[layer], out_scale=self.v_scale[layer], start=start,
                    impl=self.impl)
        slots = start[:, None] + torch.arange(T, device=self.device)
        valid = torch.arange(T, device=self.device)[None, :] < n_new[:, None]
        self.positions[layer].scatter_(1, slots, torch.where(valid, positions, -1))
        written = start + T
        lk = self._bound[layer] + T
        self._len[layer] = start + n_new
        self._bound[layer] = lk
        k = dequantize_kv(self.keys[layer][:, :, :lk], self.k_scale[layer][:, :, :lk]).to(self.compute_dtype)
        v = dequantize_kv(self.values[layer][:, :, :lk], self.v_scale[layer][:, :, :lk]).to(self.compute_dtype)
        return AttendKV(k, v, written, self.positions[layer][:, :lk])

    def attend(self, layer: int, q: Tensor, *, impl: str | None = None) -> Tensor:
        """Decode attention ``q [B, Hq, D]`` over the stored (quantised) rows; returns ``[B, Hq, D]``."""
        lk = self._bound[layer]
        o, _ = decode_attention(q, self.keys[layer][:, :, :lk], self.values[layer][:, :, :lk], self._len[layer],
                                k_scale=self.k_scale[layer][:, :, :lk], v_scale=self.v_scale[layer][:, :, :lk],
                                impl=impl or self.impl)
        return o

    def rollback(self, n) -> None:
        n = torch.as_tensor(n, device=self.device)
        new = self._len - n
        if bool((new < 0).any()):
            raise ValueError("rollback beyond the start of the cache")
        self._len = new
        self.next_position = self.next_position - n
        self._bound = [int(x) for x in new.max(dim=1).values.tolist()]
