"""KV-cache protocol of the minimal LVLM, and the plain static cache.

The protocol (``KVCache``) is what every cache implements -- the static cache here and the compressed
caches in ``reference_impls/decode/kv``. The decoder talks to a cache only through it.

Layout and terms
----------------
* Keys/values are stored **after RoPE**, ``[B, Hkv, Lk, D]``. Row ``b`` (or head ``(b, h)`` for
  per-head caches) holds ``length`` valid slots ``0 .. length-1`` in chronological order; slots
  beyond are garbage. Slot order is the causal order.
* A forward call processes a *chunk* of ``T`` new tokens per row (``T = 1`` in decode), right-padded:
  row ``b`` has ``n_new[b] <= T`` valid tokens.

``update(layer, k_new, v_new, positions, n_new) -> AttendKV(k, v, kv_lengths, key_positions)``
    Store the chunk's keys/values of ``layer`` (all ``T`` rows, padding included) behind each row's
    valid slots and return what the chunk attends to. ``kv_lengths`` ([B] or [B, Hkv]) is the
    *written* length ``old + T``: the chunk's query ``i`` sits at key slot ``kv_lengths - T + i``
    and may attend to slots ``<= kv_lengths - T + i`` (bottom-right causal alignment, the convention
    of ``reference_impls.ops.scored_attention``). Valid chunk queries therefore never see the chunk's
    padding. After the call the cache *commits* ``old + n_new`` (the padded rows are overwritten by the
    next update). ``key_positions`` ([B, Lk] or [B, Hkv, Lk], -1 where invalid) are the RoPE positions
    of the stored keys -- informational (position gaps after pruning are fine: masking is by slot).
``lengths(layer) -> LongTensor [B] | [B, Hkv]``: committed valid slots.
``max_length_bound(layer) -> int``: a host-side upper bound of ``lengths(layer).max()`` (no device sync);
    0 must mean "empty" -- the decoder then uses SDPA's causal fast path for the chunk.
``wants_scores(layer, n_new, chunk_len) -> BoolTensor[B, chunk_len] | None``
    A cache that needs attention statistics (H2O, SnapKV ...) returns the chunk rows whose attention
    probabilities it wants summed. The decoder then calls
``observe_scores(layer, colsum, score_rows)`` after the layer's attention, with
    ``colsum [B, Hq, Lk]`` fp32 in the cache's slot space (the same ``Lk`` as returned by ``update``;
    use ``ops.colsum_to_kv_heads`` for per-KV-head scores). The cache may compress that layer right
    there (e.g. SnapKV after prefill) -- the chunk's attention is already done. A cache whose
    ``wants_queries`` is true also receives the chunk's post-RoPE queries ``[B, Hq, T, D]`` as
    ``observe_scores(..., queries=q)`` (Expected Attention, ThinK, Q-Filters read them).
``rope_shift(layer) -> LongTensor [B]`` and ``set_rope_shift(layer, shift)``
    Offset between the *logical* position of future tokens (their index in the unpruned prompt +
    generated text; what ``forward_tokens`` receives) and the RoPE position used at ``layer``. It is 0
    unless a prefill hook re-indexed positions contiguously (PyramidDrop), in which case the decoder
    stores ``kept - original`` so that decode continues the contiguous numbering at that layer.
``rollback(n)``: forget the last ``n`` (int or [B]) committed tokens in every layer (speculative
    decoding). ``capacity``: max slots per row. ``next_position`` is set by the decoder to the logical
    position of the chunk's last valid token + 1 (with tree chunks, set it yourself after acceptance).

Compressed caches subclass ``KVCache`` (it holds the shared bookkeeping: ``rope_shift``,
``next_position`` -- the logical position of the next token, maintained by the decoder) and override
``update`` / ``lengths`` / ``rollback`` and, if they score, ``wants_scores`` / ``observe_scores``.
A cache with per-head lengths returns ``kv_lengths [B, Hkv]``; the decoder builds per-head masks.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import torch
from torch import Tensor


class AttendKV(NamedTuple):
    k: Tensor  # [B, Hkv, Lk, D] (post-RoPE)
    v: Tensor  # [B, Hkv, Lk, D]
    kv_lengths: Tensor  # [B] or [B, Hkv] int64: written length, old + T (see module doc)
    key_positions: Optional[Tensor]  # [B, Lk] or [B, Hkv, Lk] int64, -1 invalid


class KVCache:
    """Base class of all caches: shared bookkeeping + the protocol (see module docstring)."""

    def __init__(self, n_layers: int, batch_size: int, device=None):
        self.n_layers = n_layers
        self.batch_size = batch_size
        self._rope_shift = torch.zeros(n_layers, batch_size, dtype=torch.long, device=device)
        # logical position of the next token per row (maintained by the decoder)
        self.next_position = torch.zeros(batch_size, dtype=torch.long, device=device)

    # -- protocol ---------------------------------------------------------------------------
    def update(self, layer: int, k_new: Tensor, v_new: Tensor, positions: Tensor, n_new: Tensor) -> AttendKV:
        raise NotImplementedError

    def lengths(self, layer: int) -> Tensor:
        raise NotImplementedError

    def max_length_bound(self, layer: int) -> int:
        """Host-side upper bound on ``lengths(layer).max()`` (0 means the layer is empty)."""
        raise NotImplementedError

    def wants_scores(self, layer: int, n_new: Tensor, chunk_len: int) -> Optional[Tensor]:
        return None

    def observe_scores(self, layer: int, colsum: Tensor, score_rows: Tensor) -> None:
        return None

    def rollback(self, n: Union[int, Tensor]) -> None:
        raise NotImplementedError

    # -- shared bookkeeping -----------------------------------------------------------------
    def rope_shift(self, layer: int) -> Tensor:
        return self._rope_shift[layer]

    def set_rope_shift(self, layer: int, shift: Tensor) -> None:
        self._rope_shift[layer] = shift


class StaticKVCache(KVCache):
    """Pre-allocated ``[B, Hkv, capacity, D]`` buffers per layer, per-layer per-row lengths.

    Per-layer lengths let pruned layers (FastV: layers >= K) hold fewer rows than early layers.
    Buffers are public (``keys[l]``, ``values[l]``, ``positions[l]``) for techniques that edit rows
    (e.g. ``ops.kv_compact``, speculative accepted-path copies); call ``set_lengths`` afterwards.
    """

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        head_dim: int,
        capacity: int,
        dtype=torch.float32,
        device=None,
    ):
        super().__init__(n_layers, batch_size, device)
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        shape = (batch_size, n_kv_heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.positions = [
            torch.full((batch_size, capacity), -1, dtype=torch.long, device=device) for _ in range(n_layers)
        ]
        self._lengths = torch.zeros(n_layers, batch_size, dtype=torch.long, device=device)
        self._bound = [0] * n_layers  # host-side upper bound of lengths, avoids device syncs

    @classmethod
    def for_model(
        cls, cfg, batch_size: int, capacity: Optional[int] = None, dtype=torch.float32, device=None, **kw
    ) -> "StaticKVCache":
        """A cache shaped for the model config ``cfg``; ``kw`` go to a subclass's constructor."""
        return cls(
            cfg.n_layers,
            batch_size,
            cfg.n_kv_heads,
            cfg.head_dim,
            capacity or cfg.max_seq_len,
            dtype=dtype,
            device=device,
            **kw,
        )

    def lengths(self, layer: int) -> Tensor:
        return self._lengths[layer]

    def max_length_bound(self, layer: int) -> int:
        return self._bound[layer]

    def kv_bytes(self) -> int:
        """Bytes of the committed K/V rows (not of the pre-allocated capacity)."""
        rows = int(self._lengths.sum().item())
        k = self.keys[0]
        return rows * k.shape[1] * k.shape[3] * k.element_size() * 2

    def set_lengths(self, layer: int, lengths: Tensor) -> None:
        self._lengths[layer] = lengths
        self._bound[layer] = int(lengths.max().item()) if lengths.numel() else 0

    def update(self, layer, k_new, v_new, positions, n_new) -> AttendKV:
        B, H, T, D = k_new.shape
        if B != self.batch_size or v_new.shape != k_new.shape:
            raise ValueError(f"k/v shape {tuple(k_new.shape)} / {tuple(v_new.shape)} do not match the cache")
        if self._bound[layer] + T > self.capacity:
            raise ValueError(
                f"KV cache overflow at layer {layer}: {self._bound[layer]} + {T} > capacity {self.capacity}"
            )
        start = self._lengths[layer]  # [B]
        slots = start[:, None] + torch.arange(T, device=start.device)  # [B, T]
        kb, vb = self.keys[layer], self.values[layer]
        idx = slots[:, None, :, None].expand(B, H, T, D).to(kb.device)  # buffers may live elsewhere (offloading)
        kb.scatter_(2, idx, k_new.to(kb.device, kb.dtype))
        vb.scatter_(2, idx, v_new.to(vb.device, vb.dtype))
        valid = torch.arange(T, device=start.device)[None, :] < n_new[:, None]
        self.positions[layer].scatter_(1, slots, torch.where(valid, positions, -1))
        written = start + T
        lk = self._bound[layer] + T
        self._lengths[layer] = start + n_new
        self._bound[layer] = lk  # upper bound (n_new <= T); exact when no row is padded
        return AttendKV(kb[:, :, :lk], vb[:, :, :lk], written, self.positions[layer][:, :lk])

    def reset(self) -> None:
        """Empty the cache (buffers are kept and overwritten by later updates)."""
        self._lengths.zero_()
        self._bound = [0] * self.n_layers
        self._rope_shift.zero_()
        self.next_position.zero_()

    def rollback(self, n) -> None:
        n = torch.as_tensor(n, device=self._lengths.device)
        new = self._lengths - n
        if (new < 0).any():
            raise ValueError("rollback beyond the start of the cache")
        self._lengths = new
        self.next_position = self.next_position - n
        self._bound = [int(x) for x in new.max(dim=1).values.tolist()]
