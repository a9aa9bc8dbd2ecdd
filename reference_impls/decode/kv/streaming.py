"""StreamingLLM sink + window cache (arXiv 2309.17453) as a real ring buffer of ``n_sink + window`` slots.

Slots ``[0, n_sink)`` hold the first tokens (attention sinks) forever; slots ``[n_sink, n_sink + window)`` are a
ring for the most recent tokens: token number ``c`` (0-based count per row) goes to slot ``c`` while
``c < n_sink``, else to ``n_sink + (c - n_sink) % window``, overwriting the oldest window token. Memory is
``n_sink + window`` rows per layer whatever the stream length.

``pos_mode``:
  * ``"rolled"`` (as upstream's ``pos_shift`` attention): keys are stored *before* RoPE (un-rotated on
    write by ``-position``) and rotated when read at their rank inside the cache, so the cache always looks like a
    contiguous sequence ending at the query: a key of rank ``r`` among ``n`` cached rows is read at
    ``P_q - (n - 1 - r)``. Only relative positions matter, so the model's query (rotated at its original position)
    needs no change (upstream rotates the query at the cache length: the same relative distances). Needs 1-D RoPE
    (not Qwen2-VL's M-RoPE) with unit attention scaling.
  * ``"original"``: keys keep the RoPE of their original position (what the model wrote) -- our option.
  * ``"auto"`` (what ``StreamingLLM`` uses by default): ``"rolled"`` where the model allows it, else
    ``"original"`` (M-RoPE models: a deviation there).

    with StreamingLLM(n_sink=4, window=2000)(model):     # upstream's start_size / recent_size defaults
        model.generate(...)

Decode (one token per row, the common case) attends over the ring *in slot order* -- softmax attention is
permutation invariant, so no reordering is needed (the test checks ring == concatenation). A multi-token chunk
attends over the cached rows in chronological order followed by the whole chunk (so a long prompt attends to
itself fully, as upstream, which evicts only before generation), then only its surviving tokens (the first
sinks and the last ``window``) are written.

``attend(layer, q)`` runs the decode attention straight on the ring buffers with
``ops.decode_attention`` (original) or ``ops.decode_attention.ring_decode_attention`` (rolled: RoPE-on-read in
registers) -- the Triton path for serving; the model protocol path (``update``) materialises the rolled keys.

Deviations: per-row counts (ragged batches) instead of batch size 1; prefill attends fully (upstream feeds the
prompt in one pass too, its eviction precedes generation); eviction happens at every step (the ring), where
upstream's example evicts before each new prompt for the room it needs; rolled mode's re-rotation is in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from reference_impls.models.kv_cache import AttendKV, KVCache
from reference_impls.ops.decode_attention import decode_attention, ring_decode_attention, rope_rotate
from reference_impls.technique import CacheTechnique, UnsupportedModel

__all__ = ["StreamingLLM", "SinkWindowCache", "sink_window_mask", "naive_sink_window_attention"]


def sink_window_mask(L: int, n_sink: int, window: int, device=None) -> Tensor:
    """Dense bool ``[L, L]``: query ``i`` may attend key ``j`` iff ``j <= i`` and (``j < n_sink`` or
    ``i - window < j``)."""
    i = torch.arange(L, device=device)[:, None]
    j = torch.arange(L, device=device)[None, :]
    return (j <= i) & ((j < n_sink) | (j > i - window))


def naive_sink_window_attention(q: Tensor, k: Tensor, v: Tensor, n_sink: int, window: int) -> Tensor:
    """Concatenation/mask specification (fp64): dense attention of ``q [B, Hq, L, D]`` over ``k, v [B, Hkv, L, D]``
    with :func:`sink_window_mask` (original positions)."""
    B, Hq, L, D = q.shape
    G = Hq // k.shape[1]
    s = q.double() @ k.double().repeat_interleave(G, 1).transpose(-1, -2) * D**-0.5
    s = s.masked_fill(~sink_window_mask(L, n_sink, window, q.device), float("-inf"))
    return torch.softmax(s, -1) @ v.double().repeat_interleave(G, 1)


@dataclass
class StreamingLLM(CacheTechnique):
    """StreamingLLM: ``n_sink`` attention sinks plus the ``window`` most recent tokens per layer."""

    name: ClassVar[str] = "streamingllm"
    n_sink: int = 4
    window: int = 2000
    pos_mode: str = "auto"

    def __post_init__(self):
        if self.pos_mode not in ("auto", "original", "rolled"):
            raise ValueError(f"pos_mode must be 'auto', 'original' or 'rolled', got {self.pos_mode!r}")
        if not isinstance(self.n_sink, int) or self.n_sink < 0 or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"need n_sink >= 0 and window >= 1 (ints), got {self.n_sink!r}, {self.window!r}")

    def check_host(self, host) -> None:
        spec = host.cache_spec()
        if self.pos_mode == "rolled" and (spec.inv_freq is None or spec.rope_scaling != 1.0):
            raise UnsupportedModel(
                "streamingllm: pos_mode='rolled' re-rotates keys with 1-D RoPE of unit scaling; "
                "use pos_mode='original' (or 'auto') on this model"
            )

    def make_cache(self, spec, batch_size: int) -> "SinkWindowCache":
        mode = self.pos_mode
        if mode == "auto":
            mode = "rolled" if spec.inv_freq is not None and spec.rope_scaling == 1.0 else "original"
        return SinkWindowCache(
            spec.n_layers,
            batch_size,
            spec.n_kv_heads,
            spec.head_dim,
            n_sink=self.n_sink,
            window=self.window,
            pos_mode=mode,
            inv_freq=spec.inv_freq,
            dtype=spec.dtype,
            device=spec.device,
        )


class SinkWindowCache(KVCache):
    """Ring-buffer KV cache implementing the protocol of ``reference_impls/models/kv_cache.py``."""

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        head_dim: int,
        *,
        n_sink: int = 4,
        window: int = 2000,
        pos_mode: str = "rolled",
        rope_theta: float = 10000.0,
        inv_freq=None,
        dtype=torch.float32,
        device=None,
    ):
        super().__init__(n_layers, batch_size, device)
        if pos_mode not in ("original", "rolled"):
            raise ValueError(f"pos_mode must be 'original' or 'rolled', got {pos_mode!r}")
        if not isinstance(n_sink, int) or n_sink < 0 or not isinstance(window, int) or window < 1:
            raise ValueError(f"need n_sink >= 0 and window >= 1 (ints), got {n_sink!r}, {window!r}")
        self.n_sink, self.window, self.pos_mode = n_sink, window, pos_mode
        self.capacity = n_sink + window
        self.n_kv_heads, self.head_dim, self.dtype = n_kv_heads, head_dim, dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        S = self.capacity
        shape = (batch_size, n_kv_heads, S, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(n_layers)]
        self.slot_pos = [torch.full((batch_size, S), -1, dtype=torch.long, device=self.device) for _ in range(n_layers)]
        self.slot_tok = [torch.full((batch_size, S), -1, dtype=torch.long, device=self.device) for _ in range(n_layers)]
        self.count = [torch.zeros(batch_size, dtype=torch.long, device=self.device) for _ in range(n_layers)]
        self.inv_freq = (
            inv_freq.to(self.device, torch.float32)
            if inv_freq is not None
            else 1.0
            / (rope_theta ** (torch.arange(0, head_dim, 2, device=self.device, dtype=torch.float32) / head_dim))
        )

    # ------------------------------------------------------------------ helpers
    def slot_of(self, tok: Tensor) -> Tensor:
        """Slot of token number ``tok`` (0-based count within its row)."""
        return torch.where(tok < self.n_sink, tok, self.n_sink + (tok - self.n_sink) % self.window)

    def lengths(self, layer: int) -> Tensor:
        return torch.clamp(self.count[layer], max=self.capacity)

    def max_length_bound(self, layer: int) -> int:
        return int(self.lengths(layer).max().item()) if self.batch_size else 0

    def kv_bytes(self) -> int:
        return int(sum(k.numel() * k.element_size() * 2 for k in self.keys))

    def _ranks(self, layer: int) -> Tensor:
        """Chronological rank of each slot among the filled ones ``[B, S]`` (-1 for empty slots)."""
        tok = self.slot_tok[layer]
        key = torch.where(tok >= 0, tok, torch.iinfo(torch.long).max)
        rank = torch.argsort(torch.argsort(key, dim=1), dim=1)
        return torch.where(tok >= 0, rank, -1)

    def _write(self, layer: int, k: Tensor, v: Tensor, positions: Tensor, tok: Tensor, valid: Tensor) -> None:
        """Store tokens ``tok [B, T]`` (only where ``valid`` and the token survives the whole chunk)."""
        B, H, T, D = k.shape
        total = self.count[layer] + valid.sum(1)  # count after the chunk
        survive = valid & ((tok < self.n_sink) | (tok >= (total - self.window)[:, None]))
        if self.pos_mode == "rolled":  # store pre-RoPE keys
            k = rope_rotate(k, -positions.clamp(min=0)[:, None, :], self.inv_freq)
        slot = torch.where(survive, self.slot_of(tok), self.capacity)  # dump slot for the rest
        ext = lambda t, fill: torch.cat([t, torch.full_like(t[:, :, :1], fill)], dim=2)  # noqa: E731
        kb, vb = ext(self.keys[layer], 0), ext(self.values[layer], 0)
        idx = slot[:, None, :, None].expand(B, H, T, D)
        kb.scatter_(2, idx, k.to(self.dtype))
        vb.scatter_(2, idx, v.to(self.dtype))
        self.keys[layer].copy_(kb[:, :, :-1])
        self.values[layer].copy_(vb[:, :, :-1])
        for buf, val in ((self.slot_pos, positions), (self.slot_tok, tok)):
            b2 = torch.cat([buf[layer], torch.full_like(buf[layer][:, :1], -1)], dim=1)
            b2.scatter_(1, slot, val)
            buf[layer].copy_(b2[:, :-1])
        self.count[layer] = total

    def _read_keys(self, layer: int, q_pos: Tensor, n_after: Tensor) -> Tensor:
        """Keys as the model must see them (post-RoPE). Rolled: rotate slot of rank r at
        ``q_pos - (n_after - 1) + r``."""
        k = self.keys[layer]
        if self.pos_mode == "original":
            return k
        eff = q_pos[:, None] - (n_after - 1)[:, None] + self._ranks(layer)  # [B, S]
        return rope_rotate(k, eff[:, None, :].clamp(min=0), self.inv_freq).to(self.dtype)

    # ------------------------------------------------------------------ protocol
    def update(self, layer: int, k_new: Tensor, v_new: Tensor, positions: Tensor, n_new: Tensor) -> AttendKV:
        B, H, T, D = k_new.shape
        if B != self.batch_size or H != self.n_kv_heads or D != self.head_dim or v_new.shape != k_new.shape:
            raise ValueError(
                f"k/v {tuple(k_new.shape)} do not match the cache (B={self.batch_size}, "
                f"Hkv={self.n_kv_heads}, D={self.head_dim})"
            )
        ar = torch.arange(T, device=self.device)
        valid = ar[None, :] < n_new[:, None]
        tok = self.count[layer][:, None] + ar[None, :]
        if T == 1 and bool(valid.all()):
            # decode: write into the ring, attend over it in slot order (permutation invariant)
            self._write(layer, k_new, v_new, positions, tok, valid)
            n = self.lengths(layer)
            keys = self._read_keys(layer, positions[:, 0], n)
            return AttendKV(keys, self.values[layer], n, self.slot_pos[layer][:, None, :].expand(B, H, -1))
        # chunk: cached rows in chronological order, then the chunk, right-padded per row
        n_old = self.lengths(layer)
        m = int(n_old.max().item()) if B else 0
        order = torch.argsort(
            torch.where(self.slot_tok[layer] >= 0, self.slot_tok[layer], torch.iinfo(torch.long).max), dim=1
        )[:, :m]  # [B, m]
        q_last = torch.gather(positions, 1, (n_new - 1).clamp(min=0)[:, None])[:, 0]
        old_k = self._read_keys(layer, q_last, n_old + n_new)
        gi = order[:, None, :, None].expand(B, H, m, D)
        old_k = torch.gather(old_k, 2, gi)
        old_v = torch.gather(self.values[layer], 2, gi)
        old_p = torch.gather(self.slot_pos[layer], 1, order)
        L = m + T
        dst = torch.where(
            torch.arange(m, device=self.device)[None, :] < n_old[:, None],
            torch.arange(m, device=self.device)[None, :],
            L,
        )  # padding -> dump
        dst_new = n_old[:, None] + ar[None, :]
        ks = torch.zeros(B, H, L + 1, D, dtype=self.dtype, device=self.device)
        vs = torch.zeros_like(ks)
        ps = torch.full((B, L + 1), -1, dtype=torch.long, device=self.device)
        ks.scatter_(2, dst[:, None, :, None].expand(B, H, m, D), old_k.to(self.dtype))
        vs.scatter_(2, dst[:, None, :, None].expand(B, H, m, D), old_v)
        ps.scatter_(1, dst, old_p)
        ks.scatter_(2, dst_new[:, None, :, None].expand(B, H, T, D), k_new.to(self.dtype))
        vs.scatter_(2, dst_new[:, None, :, None].expand(B, H, T, D), v_new.to(self.dtype))
        ps.scatter_(1, dst_new, torch.where(valid, positions, -1))
        self._write(layer, k_new, v_new, positions, tok, valid)
        return AttendKV(ks[:, :, :L], vs[:, :, :L], n_old + T, ps[:, None, :L].expand(B, H, L))

    def attend(self, layer: int, q: Tensor, q_positions: Tensor, *, impl: str = "auto") -> Tensor:
        """Decode attention of ``q [B, Hq, D]`` (post-RoPE at ``q_positions [B]``) straight over the ring (after
        ``update`` stored the token): Triton split-K, with RoPE-on-read in rolled mode. Returns ``[B, Hq, D]``."""
        n = self.lengths(layer)
        if self.pos_mode == "original":
            o, _ = decode_attention(q, self.keys[layer], self.values[layer], n, impl=impl)
            return o
        eff = q_positions[:, None] - (n - 1)[:, None] + self._ranks(layer)
        eff = eff.clamp(min=0)[:, None, :].expand(-1, self.n_kv_heads, -1).contiguous()
        o, _ = ring_decode_attention(q, self.keys[layer], self.values[layer], n, eff, self.inv_freq, impl=impl)
        return o

    def rollback(self, n) -> None:
        raise NotImplementedError("a ring buffer cannot roll back overwritten tokens")
