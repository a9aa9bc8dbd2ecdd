"""KIVI: tuning-free asymmetric 2-bit KV-cache quantisation (Liu et al., arXiv 2402.02750).

Why this paper: KIVI is the most used KV-quantisation method -- a standard baseline of the later KV-quantisation
papers and the scheme Hugging Face's quantised cache cites -- with no calibration: 2-bit keys and values and a small
full-precision window of recent tokens.

The method (checked against the official code, github.com/jy-yuan/KIVI):
* asymmetric min/max quantisation of a group g: ``scale = (max g - min g) / (2^bits - 1)``,
  ``code = clamp(round((x - min g) / scale), 0, 2^bits - 1)``, ``x^ = code * scale + min g``;
* **keys per channel**: a group is ``group_size`` consecutive *tokens* of one channel (keys have outlier channels,
  so each channel gets its own range);
* **values per token**: a group is ``group_size`` consecutive *channels* of one token;
* **full-precision residual**: keys are quantised in whole chunks of ``residual_length`` tokens once that many have
  accumulated (so the newest ``n mod residual_length`` keys stay exact); values keep the newest
  ``residual_length`` tokens exact and quantise the oldest one whenever there are more.
  Attention at a step always sees the step's own new tokens in full precision: as in the official code, tokens are
  quantised after the attention that first reads them (here: at the start of the layer's next ``update``).
Defaults are the official example's: ``bits=2, group_size=32, residual_length=32``.

Functions and classes
- ``naive_quantize_keys`` / ``naive_quantize_values`` / ``naive_dequantize``: the specification, loops over groups.
- ``quantize_keys`` / ``quantize_values`` / ``dequantize``: vectorised paths (reshape into groups), tested equal.
- ``pack_codes`` / ``unpack_codes``: ``8 // bits`` codes per byte along the last dimension.
- ``KIVICache``: a cache of the minimal LVLM's protocol (``models/kv_cache.py``) storing packed codes, per-group
  scale and minimum, and the two full-precision residuals; ``update`` returns the dequantised keys/values (the
  model attends with SDPA). ``kv_bytes()`` counts what a deployment stores.

Deviations from the paper / official code
- A group whose max equals its min gets scale 0 and code 0 (dequantises exactly to the minimum); the official code
  divides by zero there.
- Codes are packed into uint8 along the channel dimension (official: int32 words along the token dimension for keys);
  scale and minimum are stored in the cache dtype. Storage layout only: the dequantised numbers are the same.
- GQA is supported (the official Llama path asserts one query head per KV head); ragged batches keep separate
  residual counters per row.
- No fused 2-bit attention kernel (the official CUDA GEMV): the model attends over the dequantised copy, so this
  reference saves no memory at run time -- ``kv_bytes`` reports what the quantised layout would hold.

Identity: ``bits=16`` stores keys and values unquantised, and a ``residual_length`` at least the sequence length
never quantises: both reproduce the unmodified model exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from reference_impls.models.kv_cache import AttendKV, KVCache
from reference_impls.ops._triton import IMPLS

__all__ = [
    "naive_quantize_keys",
    "naive_quantize_values",
    "naive_dequantize",
    "quantize_keys",
    "quantize_values",
    "dequantize",
    "pack_codes",
    "unpack_codes",
    "KIVICache",
]


BITS = (2, 4, 8, 16)


def _check_bits(bits: int) -> None:
    if bits not in BITS:
        raise ValueError(f"bits must be one of {BITS}, got {bits!r}")


# --------------------------------------------------------------------------------------------------------------
# Specification
# --------------------------------------------------------------------------------------------------------------
def _quantize_group(g: Tensor, bits: int):
    """One group (any shape) -> (codes uint8, scale, minimum) with KIVI's asymmetric rule."""
    lo, hi = g.min(), g.max()
    scale = (hi - lo) / (2**bits - 1)
    if scale == 0:
        return torch.zeros_like(g, dtype=torch.uint8), scale, lo
    codes = torch.round((g - lo) / scale).clamp(0, 2**bits - 1)
    return codes.to(torch.uint8), scale, lo


def naive_quantize_keys(k: Tensor, bits: int = 2, group_size: int = 32):
    """Per-channel key quantisation: ``k [B, H, T, D]`` (T a multiple of ``group_size``) -> ``(codes [B, H, T, D]
    uint8, scale [B, H, T / group_size, D], minimum [same])``; group = ``group_size`` consecutive tokens of one
    channel. fp32 math."""
    _check_bits(bits)
    B, H, T, D = k.shape
    if T % group_size:
        raise ValueError(f"keys are quantised in whole groups: T={T} is not a multiple of group_size={group_size}")
    kf = k.float()
    codes = torch.zeros(k.shape, dtype=torch.uint8, device=k.device)
    scale = torch.zeros(B, H, T // group_size, D, device=k.device)
    minimum = torch.zeros_like(scale)
    for b in range(B):
        for h in range(H):
            for g in range(T // group_size):
                rows = slice(g * group_size, (g + 1) * group_size)
                for d in range(D):
                    codes[b, h, rows, d], scale[b, h, g, d], minimum[b, h, g, d] = _quantize_group(
                        kf[b, h, rows, d], bits
                    )
    return codes, scale, minimum


def naive_quantize_values(v: Tensor, bits: int = 2, group_size: int = 32):
    """Per-token value quantisation: ``v [B, H, T, D]`` (D a multiple of ``group_size``) -> ``(codes [B, H, T, D],
    scale [B, H, T, D / group_size], minimum [same])``; group = ``group_size`` consecutive channels of one token."""
    _check_bits(bits)
    B, H, T, D = v.shape
    if D % group_size:
        raise ValueError(f"values are quantised in channel groups: D={D} is not a multiple of group_size={group_size}")
    vf = v.float()
    codes = torch.zeros(v.shape, dtype=torch.uint8, device=v.device)
    scale = torch.zeros(B, H, T, D // group_size, device=v.device)
    minimum = torch.zeros_like(scale)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                for g in range(D // group_size):
                    cols = slice(g * group_size, (g + 1) * group_size)
                    codes[b, h, t, cols], scale[b, h, t, g], minimum[b, h, t, g] = _quantize_group(
                        vf[b, h, t, cols], bits
                    )
    return codes, scale, minimum


def naive_dequantize(codes: Tensor, scale: Tensor, minimum: Tensor, group_size: int, along: str) -> Tensor:
    """``code * scale + minimum`` with the group's scale/minimum; ``along="tokens"`` for keys, ``"channels"`` for
    values. Returns fp32 ``[B, H, T, D]``."""
    out = torch.zeros(codes.shape, device=codes.device)
    T, D = codes.shape[2:]
    for t in range(T):
        for d in range(D):
            g_scale = scale[:, :, t // group_size, d] if along == "tokens" else scale[:, :, t, d // group_size]
            g_min = minimum[:, :, t // group_size, d] if along == "tokens" else minimum[:, :, t, d // group_size]
            out[:, :, t, d] = codes[:, :, t, d].float() * g_scale.float() + g_min.float()
    return out


# --------------------------------------------------------------------------------------------------------------
# Vectorised path
# --------------------------------------------------------------------------------------------------------------
def _quantize_last(x: Tensor, bits: int):
    """Groups on the last dimension of ``x [..., G]`` -> (codes uint8 [..., G], scale [...], minimum [...])."""
    lo, hi = x.amin(-1), x.amax(-1)
    scale = (hi - lo) / (2**bits - 1)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.round((x - lo[..., None]) / safe[..., None]).clamp(0, 2**bits - 1)
    codes = torch.where(scale[..., None] > 0, codes, torch.zeros_like(codes))
    return codes.to(torch.uint8), scale, lo


def quantize_keys(k: Tensor, bits: int = 2, group_size: int = 32):
    """Vectorised ``naive_quantize_keys`` (same outputs)."""
    _check_bits(bits)
    B, H, T, D = k.shape
    if T % group_size:
        raise ValueError(f"keys are quantised in whole groups: T={T} is not a multiple of group_size={group_size}")
    grouped = k.float().reshape(B, H, T // group_size, group_size, D).transpose(-1, -2)  # [B, H, n, D, G]
    codes, scale, minimum = _quantize_last(grouped, bits)
    return codes.transpose(-1, -2).reshape(B, H, T, D), scale, minimum


def quantize_values(v: Tensor, bits: int = 2, group_size: int = 32):
    """Vectorised ``naive_quantize_values`` (same outputs)."""
    _check_bits(bits)
    B, H, T, D = v.shape
    if D % group_size:
        raise ValueError(f"values are quantised in channel groups: D={D} is not a multiple of group_size={group_size}")
    codes, scale, minimum = _quantize_last(v.float().reshape(B, H, T, D // group_size, group_size), bits)
    return codes.reshape(B, H, T, D), scale, minimum


def dequantize(codes: Tensor, scale: Tensor, minimum: Tensor, group_size: int, along: str) -> Tensor:
    """Vectorised ``naive_dequantize``."""
    if along not in ("tokens", "channels"):
        raise ValueError(f"along must be 'tokens' (keys) or 'channels' (values), got {along!r}")
    if along == "tokens":
        s, m = scale.repeat_interleave(group_size, dim=2), minimum.repeat_interleave(group_size, dim=2)
    else:
        s, m = scale.repeat_interleave(group_size, dim=3), minimum.repeat_interleave(group_size, dim=3)
    return codes.float() * s.float() + m.float()


def pack_codes(codes: Tensor, bits: int) -> Tensor:
    """``8 // bits`` codes per uint8 along the last dimension (first code in the lowest bits)."""
    per = 8 // bits
    if codes.shape[-1] % per:
        raise ValueError(f"last dimension {codes.shape[-1]} is not a multiple of {per} codes per byte")
    grouped = codes.to(torch.int32).reshape(*codes.shape[:-1], -1, per)
    shifts = torch.arange(per, device=codes.device, dtype=torch.int32) * bits
    return (grouped << shifts).sum(-1).to(torch.uint8)


def unpack_codes(packed: Tensor, bits: int) -> Tensor:
    """Inverse of ``pack_codes``."""
    per = 8 // bits
    shifts = torch.arange(per, device=packed.device, dtype=torch.int32) * bits
    codes = (packed.to(torch.int32)[..., None] >> shifts) & (2**bits - 1)
    return codes.reshape(*packed.shape[:-1], -1).to(torch.uint8)


# --------------------------------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------------------------------
class KIVICache(KVCache):
    """KIVI KV cache for the minimal LVLM (``model.generate(..., cache=KIVICache.for_model(cfg, B))``).

    Per layer and batch row it keeps the quantised key chunks and value tokens (packed codes + per-group scale and
    minimum) and the two full-precision residuals; ``keys[l]`` / ``values[l]`` hold the dequantised view the model
    attends to (quantised slots dequantised, residual slots exact). ``impl="naive"`` quantises with the loop
    specification, anything else with the vectorised path.
    """

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        head_dim: int,
        capacity: int,
        *,
        bits: int = 2,
        group_size: int = 32,
        residual_length: int = 32,
        dtype=torch.float32,
        device=None,
        impl: str = "auto",
    ):
        super().__init__(n_layers, batch_size, device)
        _check_bits(bits)
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        if group_size < 1 or residual_length < 1 or residual_length % group_size:
            raise ValueError(
                f"need group_size >= 1 and residual_length a multiple of it, got group_size="
                f"{group_size}, residual_length={residual_length}"
            )
        if bits < 16 and head_dim % group_size:
            raise ValueError(f"head_dim {head_dim} must be a multiple of group_size {group_size} (value groups)")
        if bits < 16 and head_dim % (8 // bits):
            raise ValueError(f"head_dim {head_dim} must be a multiple of {8 // bits} to pack {bits}-bit codes")
        self.bits, self.group_size, self.residual_length = bits, group_size, residual_length
        self.capacity, self.n_kv_heads, self.head_dim, self.dtype = capacity, n_kv_heads, head_dim, dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.impl = impl
        shape = (batch_size, n_kv_heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(n_layers)]
        self.positions = [
            torch.full((batch_size, capacity), -1, dtype=torch.long, device=self.device) for _ in range(n_layers)
        ]
        self._len = torch.zeros(n_layers, batch_size, dtype=torch.long, device=self.device)
        self._bound = [0] * n_layers
        # per layer, per row: slots [0, n) of keys / values are quantised (the rest of the committed slots is exact)
        self.key_quantised = [[0] * batch_size for _ in range(n_layers)]
        self.value_quantised = [[0] * batch_size for _ in range(n_layers)]
        # per layer, per row: the stored quantised data, as lists of (packed codes, scale, minimum) per chunk/token
        self.key_store = [[[] for _ in range(batch_size)] for _ in range(n_layers)]
        self.value_store = [[[] for _ in range(batch_size)] for _ in range(n_layers)]

    @classmethod
    def for_model(cls, cfg, batch_size: int, capacity: int | None = None, **kw) -> "KIVICache":
        return cls(cfg.n_layers, batch_size, cfg.n_kv_heads, cfg.head_dim, capacity or cfg.max_seq_len, **kw)

    # -- protocol ------------------------------------------------------------------------------------------------
    def lengths(self, layer: int) -> Tensor:
        return self._len[layer]

    def max_length_bound(self, layer: int) -> int:
        return self._bound[layer]

    def update(self, layer: int, k_new: Tensor, v_new: Tensor, positions: Tensor, n_new: Tensor) -> AttendKV:
        B, H, T, D = k_new.shape
        if B != self.batch_size or H != self.n_kv_heads or D != self.head_dim or v_new.shape != k_new.shape:
            raise ValueError(f"k/v {tuple(k_new.shape)} do not match the cache")
        if self._bound[layer] + T > self.capacity:
            raise ValueError(f"KV cache overflow at layer {layer}: {self._bound[layer]} + {T} > {self.capacity}")
        if self.bits < 16:
            self._quantise_pending(layer)
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

    def rollback(self, n) -> None:
        n = torch.as_tensor(n, device=self.device)
        new = self._len - n
        if bool((new < 0).any()):
            raise ValueError("rollback beyond the start of the cache")
        quantised = torch.tensor(
            [[max(k, v) for k, v in zip(self.key_quantised[l], self.value_quantised[l])] for l in range(self.n_layers)],
            device=self.device,
        )
        if bool((new < quantised).any()):
            raise ValueError("KIVICache cannot roll back into tokens it has already quantised")
        self._len = new
        self.next_position = self.next_position - n
        self._bound = [int(x) for x in new.max(dim=1).values.tolist()]

    # -- KIVI ----------------------------------------------------------------------------------------------------
    def _quantisers(self):
        naive = self.impl == "naive"
        return (
            naive_quantize_keys if naive else quantize_keys,
            naive_quantize_values if naive else quantize_values,
            naive_dequantize if naive else dequantize,
        )

    def _quantise_pending(self, layer: int) -> None:
        """Quantise what the previous step left over: whole ``residual_length`` chunks of exact keys, and exact
        values beyond the newest ``residual_length``."""
        qk, qv, deq = self._quantisers()
        R, G = self.residual_length, self.group_size
        for b in range(self.batch_size):
            length = int(self._len[layer, b])
            kq = self.key_quantised[layer][b]
            while length - kq >= R:
                chunk = self.keys[layer][b : b + 1, :, kq : kq + R].float()
                codes, scale, minimum = qk(chunk, self.bits, G)
                self.key_store[layer][b].append(
                    (pack_codes(codes, self.bits), scale.to(self.dtype), minimum.to(self.dtype))
                )
                self.keys[layer][b : b + 1, :, kq : kq + R] = deq(
                    codes, scale.to(self.dtype), minimum.to(self.dtype), G, "tokens"
                ).to(self.dtype)
                kq += R
            self.key_quantised[layer][b] = kq
            vq = self.value_quantised[layer][b]
            if length - vq > R:
                rows = self.values[layer][b : b + 1, :, vq : length - R].float()
                codes, scale, minimum = qv(rows, self.bits, G)
                self.value_store[layer][b].append(
                    (pack_codes(codes, self.bits), scale.to(self.dtype), minimum.to(self.dtype))
                )
                restored = deq(codes, scale.to(self.dtype), minimum.to(self.dtype), G, "channels")
                self.values[layer][b : b + 1, :, vq : length - R] = restored.to(self.dtype)
                self.value_quantised[layer][b] = length - R

    def kv_bytes(self) -> int:
        """Bytes of the KIVI layout: packed codes, scales and minima of the quantised part, plus the exact residual
        keys and values, over all layers and rows (committed tokens only)."""
        if self.bits == 16:
            return int(2 * self._len.sum()) * self.n_kv_heads * self.head_dim * self.keys[0].element_size()
        total = 0
        for layer in range(self.n_layers):
            for b in range(self.batch_size):
                for store in (self.key_store[layer][b], self.value_store[layer][b]):
                    total += sum(t.numel() * t.element_size() for item in store for t in item)
                length = int(self._len[layer, b])
                exact = (length - self.key_quantised[layer][b]) + (length - self.value_quantised[layer][b])
                total += exact * self.n_kv_heads * self.head_dim * self.keys[layer].element_size()
        return total
