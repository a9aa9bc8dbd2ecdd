"""Compressed KV caches as small composable policies acting on a *real* cache (not masks).

:class:`CompressedKVCache` implements the cache protocol of ``reference_impls/models/kv_cache.py``:

* Storage per layer: ``keys/values [B, Hkv, cap, D]`` holding only kept rows, per-KV-head ragged lengths
  ``[B, Hkv]`` (no fake keys: a head with budget 12 has 12 valid rows), per-slot RoPE positions
  ``[B, Hkv, cap]`` and a per-slot fp32 score accumulator ``[B, Hkv, cap]`` (attention mass received so far).
  ``cap`` grows when a chunk needs room and shrinks back after each compaction (``_fit``), so memory follows
  the budget. The working layout (``layout="padded"``) pads a layer to its longest head, so per-head budgets that
  differ inside a layer (HybridKV static vs dynamic heads, AdaKV-style splits) would still allocate the longest
  head's rows for every head. ``layout="packed"`` removes that: right after prefill each layer moves to flat
  ``[N, D]`` buffers where head (b, h) owns ``kept rows + growth`` contiguous rows (``PackedLayer``); decode
  appends into the slack (all segments regrow together when one is full), the split-K kernel reads every
  segment in place (``ops.decode_attention.packed_decode_attention``), and only the model's SDPA path gets a
  transient padded copy. Packed layers do not evict after prefill (SnapKV / PyramidKV / HybridKV / H2O prefill
  variant; ``KVPolicy.evicts_during_decode``). ``kv_bytes()`` counts kept rows, ``kv_bytes(allocated=True)``
  the buffers.
* Scores: the policy says which chunk rows it wants scored (``wants_scores``); the decoder passes the
  query-head column sums, which are reduced to KV heads with ``ops.colsum_to_kv_heads`` (GQA: ``mean`` by
  default, option ``max``) and added to the accumulator.
* Compaction: the policy returns kept slot indices ``[B, Hkv, K]`` (ascending, -1 padded) and the cache applies
  ``ops.kv_compact`` in place, moving positions and accumulated scores alongside.
* Storage format composes with every policy: ``kv_format="int8" | "fp8_e4m3"`` stores K/V quantised on append
  (``ops.quant.kv_quant``, one scale per (token, head), moved with the rows on compaction); the model protocol
  receives a dequantised copy, the serving paths (``attend``) dequantise inside the decode kernel.

A :class:`KVPolicy` is a tiny object with two decisions: which rows to score for a chunk, and which slots to keep
after that chunk's attention. H2O, SnapKV, PyramidKV and LightVLM-KV are :class:`PolicyTechnique` s -- a dataclass
that is both the policy and the technique applied to a model (``with SnapKV(budget=0.25)(model): ...``), whose
``make_cache`` builds a :class:`CompressedKVCache` around a fresh copy of itself. HybridKV extends the cache;
StreamingLLM (a ring buffer) is a separate cache class implementing the same protocol; the INT8 / FP8 cache is the
compressed cache with a ``kv_format`` and no eviction (``quantized.KVQuant``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from reference_impls.models.kv_cache import AttendKV, KVCache
from reference_impls.ops import colsum_to_kv_heads, kv_compact, scored_attention, select_topk
from reference_impls.ops.decode_attention import decode_attention, dequantize_kv, packed_decode_attention, unpack_rows
from reference_impls.ops.quant.kv_quant import KV_FORMATS, quantize_kv
from reference_impls.technique import CacheTechnique

__all__ = [
    "LayerView",
    "KVPolicy",
    "PolicyTechnique",
    "CompressedKVCache",
    "last_rows",
    "per_head",
    "keep_scored_plus_recent",
    "VisualMaskHook",
    "attention_step",
]


@dataclass
class PackedLayer:
    """Packed per-head store of one layer: head (b, h) owns flat rows ``row0[b, h] .. row0[b, h] + cap[b, h]``."""

    k: Tensor  # [N, D] (stored dtype)
    v: Tensor
    pos: Tensor  # [N] RoPE positions
    k_scale: Optional[Tensor]  # [N] when quantised
    v_scale: Optional[Tensor]
    row0: Tensor  # [B, Hkv]
    cap: Tensor  # [B, Hkv] rows reserved per head (kept rows + slack for appends)


@dataclass
class LayerView:
    """What a policy sees of one layer after a chunk's attention (all tensors live on the cache device)."""

    layer: int
    phase: str  # "prefill" (the cache was empty before this chunk) or "decode"
    lengths: Tensor  # [B, Hkv] committed rows
    scores: Tensor  # [B, Hkv, cap] accumulated attention mass (fp32; 0 where never scored)
    last_scores: Optional[Tensor]  # [B, Hkv, cap] this chunk's (KV-head reduced) column sums, or None
    last_colsum: Optional[Tensor]  # [B, Hq, cap] the same before the GQA reduction (per query head)
    positions: Tensor  # [B, Hkv, cap] RoPE positions, -1 on invalid slots
    keys: Tensor  # [B, Hkv, cap, D] as stored (int8/fp8 when the cache has a kv_format)
    n_new: Tensor  # [B] tokens committed by this chunk
    visual: Optional[Tensor]  # [B, Hkv, cap] bool: slot holds a visual (image) token, when known
    n_layers: int
    values: Optional[Tensor] = None  # [B, Hkv, cap, D] as stored
    queries: Optional[Tensor] = None  # [B, Hq, T, D] this chunk's post-RoPE queries, when the policy wants them


class KVPolicy:
    """Base policy: never scores, never evicts (the full cache)."""

    #: whether ``keep`` may evict rows after prefill (the packed layout needs False)
    evicts_during_decode: bool = True
    #: whether the host must hand the chunk's queries to ``observe_scores`` (``LayerView.queries``)
    wants_queries: bool = False

    def wants_scores(self, layer: int, phase: str, n_new: Tensor, chunk_len: int) -> Optional[Tensor]:
        """Bool ``[B, chunk_len]``: chunk rows whose attention probabilities should be summed, or None."""
        return None

    def keep(self, view: LayerView) -> Optional[Tensor]:
        """Kept slots ``[B, Hkv, K]`` (ascending, -1 padded) after this chunk, or None to keep everything.
        Called right after the attention of every chunk for which ``wants_scores`` returned rows (so a policy
        that evicts must ask for at least one row per chunk it evicts on)."""
        return None

    def budget_rows(self, layer: int, prompt_len: Tensor) -> Optional[Tensor]:
        """Per-row budget of ``layer`` (``[B]`` or ``[B, Hkv]``) for accounting / tests, None when unbounded."""
        return None

    def pruned_channels(self, view: LayerView) -> Optional[Tensor]:
        """Bool ``[B, Hkv, D]``: key channels to zero in the rows this chunk committed (ThinK), or None."""
        return None


def last_rows(n_new: Tensor, chunk_len: int, count: int | Tensor) -> Tensor:
    """Bool ``[B, chunk_len]``: the last ``count`` valid rows of each (right-padded) chunk row."""
    ar = torch.arange(chunk_len, device=n_new.device)[None, :]
    return (ar < n_new[:, None]) & (ar >= (n_new - count)[:, None])


def per_head(x, B: int, H: int, device) -> Tensor:
    """Broadcast an int / ``[B]`` / ``[B, H]`` value to a long tensor ``[B, H]``."""
    t = torch.as_tensor(x, device=device).to(torch.long)
    if t.dim() == 0:
        return t.expand(B, H)
    if t.dim() == 1:
        return t[:, None].expand(B, H)
    return t.expand(B, H)


def keep_scored_plus_recent(
    scores: Tensor, lengths: Tensor, budget, recent, protect: Optional[Tensor] = None
) -> Optional[Tensor]:
    """The common eviction rule: per (b, kv head) keep the last ``recent`` rows plus the best-scoring older rows
    so that ``budget`` rows survive (ties -> older row). ``protect [B, Hkv, cap]`` marks rows always kept
    (counted inside the budget; if they exceed it they all survive). Returns kept indices ``[B, Hkv, K]``, or
    None when no row is over budget."""
    B, H, cap = scores.shape
    budget = per_head(budget, B, H, scores.device)
    if bool((lengths <= budget).all()):
        return None
    recent = per_head(recent, B, H, scores.device)
    ar = torch.arange(cap, device=scores.device)[None, None, :]
    live = ar < lengths[..., None]
    prot = (ar >= (lengths - recent)[..., None]) & live
    if protect is not None:
        prot = prot | (protect & live)
    k = torch.maximum(torch.minimum(budget, lengths), prot.sum(-1))
    return select_topk(scores.float(), k, lengths=lengths, protect_mask=prot)


class PolicyTechnique(KVPolicy, CacheTechnique):
    """A KV technique whose rule is a :class:`KVPolicy` (subclasses are dataclasses with ``score_reduce`` and
    ``impl`` fields): ``make_cache`` wraps a fresh copy of it (per-generation state) in a :class:`CompressedKVCache`."""

    def make_cache(self, spec, batch_size: int) -> "CompressedKVCache":
        return CompressedKVCache(
            self.fresh(),
            spec.n_layers,
            batch_size,
            spec.n_kv_heads,
            spec.head_dim,
            dtype=spec.dtype,
            device=spec.device,
            score_reduce=self.score_reduce,
            impl=self.impl,
        )


class CompressedKVCache(KVCache):
    """A real compressed cache driven by a :class:`KVPolicy` (see the module docstring)."""

    def __init__(
        self,
        policy: KVPolicy,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        head_dim: int,
        *,
        dtype=torch.float32,
        device=None,
        score_reduce: str = "mean",
        growth: int = 16,
        impl: str = "auto",
        kv_format: Optional[str] = None,
        layout: str = "padded",
    ):
        super().__init__(n_layers, batch_size, device)
        if score_reduce not in ("mean", "max"):
            raise ValueError(f"score_reduce must be 'mean' or 'max', got {score_reduce!r}")
        if not isinstance(policy, KVPolicy):
            raise ValueError(f"policy must be a KVPolicy, got {type(policy).__name__}")
        self.policy = policy
        self.n_kv_heads = n_kv_heads
        self.head_dim = head_dim
        self.dtype = dtype  # compute dtype of the K/V handed to the attention
        if kv_format is not None and kv_format not in KV_FORMATS:
            raise ValueError(f"kv_format must be None or one of {sorted(KV_FORMATS)}, got {kv_format!r}")
        self.kv_format = kv_format
        if layout not in ("padded", "packed"):
            raise ValueError(f"layout must be 'padded' or 'packed', got {layout!r}")
        if layout == "packed" and policy.evicts_during_decode:
            raise ValueError(
                f"layout='packed' needs a policy that does not evict after prefill ({type(policy).__name__} does)"
            )
        self.layout = layout
        self.store_dtype = dtype if kv_format is None else KV_FORMATS[kv_format][0]
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.score_reduce = score_reduce
        self.growth = growth
        self.impl = impl  # for the ops the cache runs itself (kv_compact, chunk scoring)
        self.capacity = None  # unbounded: storage follows the policy's budget
        B, H = batch_size, n_kv_heads
        self.keys = [self._empty(0, head_dim, self.store_dtype) for _ in range(n_layers)]
        self.values = [self._empty(0, head_dim, self.store_dtype) for _ in range(n_layers)]
        # per-(token, head) dequantisation scales when kv_format is set (value = stored * scale)
        self.k_scale = [torch.ones(B, H, 0, device=self.device) for _ in range(n_layers)] if kv_format else None
        self.v_scale = [torch.ones(B, H, 0, device=self.device) for _ in range(n_layers)] if kv_format else None
        self.positions = [torch.full((B, H, 0), -1, dtype=torch.long, device=self.device) for _ in range(n_layers)]
        self.scores = [torch.zeros(B, H, 0, device=self.device) for _ in range(n_layers)]
        self.visual = [torch.zeros(B, H, 0, dtype=torch.bool, device=self.device) for _ in range(n_layers)]
        self._len = [torch.zeros(B, H, dtype=torch.long, device=self.device) for _ in range(n_layers)]
        self._bound = [0] * n_layers
        self._packed: list = [None] * n_layers  # PackedLayer once a packed-layout layer finished its prefill
        self._chunk = [None] * n_layers  # (phase, n_new, T) of the chunk in flight, for observe_scores
        self._visual_mask: Optional[Tensor] = None
        self.zeroed_key_channels = None  # per layer [B, Hkv, D] bool once a policy pruned key channels (ThinK)
        self._pruned_rows = [torch.zeros(B, H, dtype=torch.long, device=self.device) for _ in range(n_layers)]
        self.compactions = [0] * n_layers  # how many times each layer was really compacted
        self.peak_stored = [0] * n_layers  # max committed rows per layer (over heads and rows) after compaction

    # ------------------------------------------------------------------ storage helpers
    def _empty(self, cap: int, D: int, dtype) -> Tensor:
        return torch.zeros(self.batch_size, self.n_kv_heads, cap, D, dtype=dtype, device=self.device)

    def _resize(self, layer: int, cap: int) -> None:
        """Reallocate layer ``layer`` to exactly ``cap`` slots (keeps the first min(old, cap) slots)."""
        old = self.keys[layer].shape[2]
        n = min(old, cap)

        def move(t: Tensor, fill) -> Tensor:
            new = torch.zeros((*t.shape[:2], cap, *t.shape[3:]), dtype=t.dtype, device=t.device)
            if fill != 0:
                new.fill_(fill)
            new[:, :, :n] = t[:, :, :n]
            return new

        self.keys[layer] = move(self.keys[layer], 0)
        self.values[layer] = move(self.values[layer], 0)
        self.positions[layer] = move(self.positions[layer], -1)
        self.scores[layer] = move(self.scores[layer], 0.0)
        self.visual[layer] = move(self.visual[layer], False)
        if self.kv_format:
            self.k_scale[layer] = move(self.k_scale[layer], 1.0)
            self.v_scale[layer] = move(self.v_scale[layer], 1.0)

    def _round(self, n: int) -> int:
        return -(-n // self.growth) * self.growth

    def _fit(self, layer: int) -> None:
        """Shrink the buffers to the committed rows (+ growth slack): memory follows the budget."""
        want = self._round(self._bound[layer] + 1)
        if want < self.keys[layer].shape[2]:
            self._resize(layer, want)

    # ------------------------------------------------------------------ accounting
    def stored_tokens(self, layer: Optional[int] = None) -> int:
        """Valid (kept) rows summed over batch and KV heads, for one layer or all."""
        layers = range(self.n_layers) if layer is None else [layer]
        return int(sum(int(self._len[l].sum()) for l in layers))

    def kv_bytes(self, allocated: bool = False) -> int:
        """Bytes of K and V: of the valid rows (default) or of the allocated buffers (``allocated=True``)."""
        scale_bytes = 4 * 2 if self.kv_format else 0  # fp32 k and v scale per (token, head)
        if allocated:
            total = 0
            for l, k in enumerate(self.keys):
                pk = self._packed[l]
                rows = pk.k.shape[0] if pk is not None else k.shape[0] * k.shape[1] * k.shape[2]
                total += rows * (
                    self.head_dim * torch.empty(0, dtype=self.store_dtype).element_size() * 2 + scale_bytes
                )
            return int(total)
        elem = torch.empty(0, dtype=self.store_dtype).element_size()
        per_row = self.head_dim * elem * 2 + scale_bytes
        total = self.stored_tokens() * per_row
        if self.zeroed_key_channels is not None:  # ThinK: channels a channel-pruned layout would not store
            for l, ch in enumerate(self.zeroed_key_channels):
                if ch.numel():
                    rows = torch.minimum(self._len[l], self._pruned_rows[l])
                    total -= int((rows * ch.sum(-1)).sum()) * elem
        return total

    # ------------------------------------------------------------------ modality
    def set_visual_mask(self, vis_mask: Tensor) -> None:
        """Mark which tokens of the *next* chunk are visual (``[B, T]`` bool, e.g. ``input_ids ==
        image_token_id``). Policies that treat image tokens differently (HybridKV, LightVLM) need it."""
        self._visual_mask = vis_mask.to(self.device, torch.bool)

    def model_hooks(self) -> list:
        """Hooks the host runs with this cache (``models.hooks`` protocol): the prefill's visual-token mask."""
        return [VisualMaskHook(self)]

    # ------------------------------------------------------------------ protocol
    def lengths(self, layer: int) -> Tensor:
        return self._len[layer]

    def max_length_bound(self, layer: int) -> int:
        return self._bound[layer]

    def update(self, layer: int, k_new: Tensor, v_new: Tensor, positions: Tensor, n_new: Tensor) -> AttendKV:
        B, H, T, D = k_new.shape
        if B != self.batch_size or H != self.n_kv_heads or D != self.head_dim or v_new.shape != k_new.shape:
            raise ValueError(
                f"k/v {tuple(k_new.shape)} / {tuple(v_new.shape)} do not match the cache "
                f"(B={self.batch_size}, Hkv={self.n_kv_heads}, D={self.head_dim})"
            )
        if self._packed[layer] is not None:
            return self._update_packed(layer, k_new, v_new, positions, n_new)
        phase = "prefill" if self._bound[layer] == 0 else "decode"
        need = self._bound[layer] + T
        if need > self.keys[layer].shape[2]:
            self._resize(layer, self._round(need))
        start = self._len[layer]  # [B, H]
        slots = start[..., None] + torch.arange(T, device=self.device)  # [B, H, T]
        idx = slots[..., None].expand(B, H, T, D)
        if self.kv_format:  # quantise on append straight into the buffers (Triton: one fused pass)
            quantize_kv(
                k_new, self.kv_format, out=self.keys[layer], out_scale=self.k_scale[layer], start=start, impl=self.impl
            )
            quantize_kv(
                v_new,
                self.kv_format,
                out=self.values[layer],
                out_scale=self.v_scale[layer],
                start=start,
                impl=self.impl,
            )
        else:
            self.keys[layer].scatter_(2, idx, k_new.to(self.dtype))
            self.values[layer].scatter_(2, idx, v_new.to(self.dtype))
        valid = torch.arange(T, device=self.device)[None, :] < n_new[:, None]  # [B, T]
        pos = torch.where(valid, positions, -1)[:, None, :].expand(B, H, T)
        self.positions[layer].scatter_(2, slots, pos)
        self.scores[layer].scatter_(2, slots, torch.zeros(B, H, T, device=self.device))
        vis = (
            self._visual_mask
            if (self._visual_mask is not None and self._visual_mask.shape == (B, T))
            else torch.zeros(B, T, dtype=torch.bool, device=self.device)
        )
        self.visual[layer].scatter_(2, slots, (vis & valid)[:, None, :].expand(B, H, T))
        written = start + T
        self._len[layer] = start + n_new[:, None]
        self._bound[layer] = need
        self._chunk[layer] = (phase, n_new, T)
        if layer == self.n_layers - 1:
            self._visual_mask = None  # consumed by every layer of this chunk
        lk = need
        k_att, v_att = self.keys[layer][:, :, :lk], self.values[layer][:, :, :lk]
        if self.kv_format:  # the model attends with SDPA over floats: hand it a dequantised copy
            k_att = dequantize_kv(k_att, self.k_scale[layer][:, :, :lk]).to(self.dtype)
            v_att = dequantize_kv(v_att, self.v_scale[layer][:, :, :lk]).to(self.dtype)
        kv = AttendKV(k_att, v_att, written, self.positions[layer][:, :, :lk])
        return kv

    def wants_scores(self, layer: int, n_new: Tensor, chunk_len: int) -> Optional[Tensor]:
        # called by the decoder *before* update(): the phase is decided by the layer being empty
        phase = "prefill" if self._bound[layer] == 0 else "decode"
        return self.policy.wants_scores(layer, phase, n_new, chunk_len)

    @property
    def wants_queries(self) -> bool:
        """Whether the host must pass the chunk's queries to ``observe_scores`` (the policy reads them)."""
        return self.policy.wants_queries

    def observe_scores(self, layer: int, colsum: Tensor, score_rows: Tensor, queries: Optional[Tensor] = None) -> None:
        if self._packed[layer] is not None:
            return None  # packed layers no longer evict (scores are not tracked there)
        if self.policy.wants_queries and queries is None:
            raise ValueError(
                f"{type(self.policy).__name__} needs the chunk's queries: the host must pass "
                f"observe_scores(..., queries=q)"
            )
        kv_scores = colsum_to_kv_heads(colsum.float(), self.n_kv_heads, self.score_reduce)  # [B, Hkv, Lk]
        Lk = kv_scores.shape[-1]
        self.scores[layer][:, :, :Lk] += kv_scores
        cap = self.scores[layer].shape[2]
        pad = (0, cap - Lk)
        self._after_chunk(
            layer, torch.nn.functional.pad(kv_scores, pad), torch.nn.functional.pad(colsum.float(), pad), queries
        )

    def _after_chunk(
        self, layer: int, last_scores: Optional[Tensor], last_colsum: Optional[Tensor], queries: Optional[Tensor] = None
    ) -> None:
        phase, n_new, _ = self._chunk[layer]
        view = LayerView(
            layer=layer,
            phase=phase,
            lengths=self._len[layer],
            scores=self.scores[layer],
            last_scores=last_scores,
            last_colsum=last_colsum,
            positions=self.positions[layer],
            keys=self.keys[layer],
            n_new=n_new,
            visual=self.visual[layer],
            n_layers=self.n_layers,
            values=self.values[layer],
            queries=queries,
        )
        channels = self.policy.pruned_channels(view)
        if channels is not None:
            self._zero_key_channels(layer, channels, n_new)
        idx = self.policy.keep(view)
        if idx is not None:
            self.compact(layer, idx)
        self._bound[layer] = int(self._len[layer].max().item()) if self._len[layer].numel() else 0
        self.peak_stored[layer] = max(self.peak_stored[layer], self._bound[layer])
        self._fit(layer)
        if self.layout == "packed" and phase == "prefill":
            self._pack(layer)

    def _zero_key_channels(self, layer: int, channels: Tensor, n_new: Tensor) -> None:
        """Zero the key channels ``channels [B, Hkv, D]`` of the rows the last chunk committed (the storage keeps
        its width; ``kv_bytes`` counts only the channels left)."""
        keys = self.keys[layer]
        end = self._len[layer]  # [B, Hkv]
        ar = torch.arange(keys.shape[2], device=self.device)[None, None, :]
        rows = (ar >= (end - n_new[:, None])[..., None]) & (ar < end[..., None])  # [B, Hkv, cap]
        zero = rows[..., None] & channels[:, :, None, :]
        keys.masked_fill_(zero, 0)
        if self.zeroed_key_channels is None:
            self.zeroed_key_channels = [
                torch.zeros(self.batch_size, self.n_kv_heads, 0, dtype=torch.bool, device=self.device)
                for _ in range(self.n_layers)
            ]
        self.zeroed_key_channels[layer] = channels.clone()
        self._pruned_rows[layer] = end.clone()

    def compact(self, layer: int, idx: Tensor) -> None:
        """Keep slots ``idx [B, Hkv, K]`` (ascending, -1 padded) of ``layer``: K/V via ``ops.kv_compact`` in
        place; positions, scores and modality flags move alongside."""
        k, v = self.keys[layer], self.values[layer]
        if k.dtype == torch.float8_e4m3fn:  # move fp8 rows as raw bytes (no fp8 gather kernels on CPU)
            k, v = k.view(torch.uint8), v.view(torch.uint8)
        K = idx.shape[-1]
        _, _, new_len = kv_compact(k, v, idx, inplace=True, impl=self.impl)
        safe = idx.clamp(min=0)
        kept = idx >= 0
        moved = [("positions", -1), ("scores", 0.0), ("visual", False)]
        if self.kv_format:
            moved += [("k_scale", 1.0), ("v_scale", 1.0)]
        for name, fill in moved:
            buf = getattr(self, name)[layer]
            g = torch.gather(buf, 2, safe)
            buf[:, :, :K] = torch.where(kept, g, torch.full_like(g, fill))
        self._len[layer] = new_len.to(torch.long)
        self.compactions[layer] += 1

    # ------------------------------------------------------------------ packed layout
    def _pack(self, layer: int, extra: int | None = None) -> None:
        """Move ``layer`` to the packed layout: each (b, kv head) keeps its rows contiguously in flat ``[N, D]``
        buffers with ``growth`` slack rows for decode appends; N = sum of (length + slack) -- only what is kept."""
        extra = self.growth if extra is None else extra
        pk = self._packed[layer]
        lengths = self._len[layer]
        if pk is None:  # from the padded working buffers (right after prefill)
            src = dict(
                k=self.keys[layer],
                v=self.values[layer],
                pos=self.positions[layer],
                k_scale=self.k_scale[layer] if self.kv_format else None,
                v_scale=self.v_scale[layer] if self.kv_format else None,
            )
            cap_old = self.keys[layer].shape[2]
            old_row0 = (
                torch.arange(self.batch_size * self.n_kv_heads, device=self.device).view(
                    self.batch_size, self.n_kv_heads
                )
                * cap_old
            )
            flat = {n: (None if t is None else t.reshape(-1, *t.shape[3:])) for n, t in src.items()}
        else:
            old_row0 = pk.row0
            flat = dict(k=pk.k, v=pk.v, pos=pk.pos, k_scale=pk.k_scale, v_scale=pk.v_scale)
        caps = lengths + extra
        row0 = torch.cumsum(caps.reshape(-1), 0) - caps.reshape(-1)
        row0 = row0.view_as(lengths)
        N = int(caps.sum().item())
        # destination row of every kept source row
        width = int(lengths.max().item()) if lengths.numel() else 0
        ar = torch.arange(width, device=self.device)
        live = ar[None, None, :] < lengths[..., None]
        src_rows = (old_row0[..., None] + ar)[live]
        dst_rows = (row0[..., None] + ar)[live]

        def move(t, fill):
            if t is None:
                return None
            out = (
                torch.full((N, *t.shape[1:]), fill, dtype=t.dtype, device=t.device)
                if t.dtype not in (torch.float8_e4m3fn,)
                else torch.zeros((N, *t.shape[1:]), dtype=t.dtype, device=t.device)
            )
            if t.dtype == torch.float8_e4m3fn:
                out.view(torch.uint8)[dst_rows] = t.view(torch.uint8)[src_rows]
            else:
                out[dst_rows] = t[src_rows]
            return out

        self._packed[layer] = PackedLayer(
            k=move(flat["k"], 0),
            v=move(flat["v"], 0),
            pos=move(flat["pos"], -1),
            k_scale=move(flat["k_scale"], 1.0),
            v_scale=move(flat["v_scale"], 1.0),
            row0=row0,
            cap=caps,
        )
        # the padded working buffers are released: the packed store is the cache from now on
        self._resize(layer, 0)

    def _update_packed(self, layer: int, k_new: Tensor, v_new: Tensor, positions: Tensor, n_new: Tensor) -> AttendKV:
        B, H, T, D = k_new.shape
        pk = self._packed[layer]
        start = self._len[layer]
        if bool((start + T > pk.cap).any()):
            self._pack(layer, extra=max(self.growth, T))  # regrow every segment (amortised)
            pk = self._packed[layer]
        rows = (pk.row0 + start)[..., None] + torch.arange(T, device=self.device)  # [B, H, T]
        valid = torch.arange(T, device=self.device)[None, :] < n_new[:, None]
        if self.kv_format:
            kq, ks = quantize_kv(k_new, self.kv_format, impl=self.impl)
            vq, vs = quantize_kv(v_new, self.kv_format, impl=self.impl)
            raw = (lambda t: t.view(torch.uint8)) if kq.dtype == torch.float8_e4m3fn else (lambda t: t)  # noqa
            raw(pk.k)[rows.reshape(-1)] = raw(kq).reshape(-1, D)
            raw(pk.v)[rows.reshape(-1)] = raw(vq).reshape(-1, D)
            pk.k_scale[rows.reshape(-1)] = ks.reshape(-1)
            pk.v_scale[rows.reshape(-1)] = vs.reshape(-1)
        else:
            pk.k[rows.reshape(-1)] = k_new.to(self.dtype).reshape(-1, D)
            pk.v[rows.reshape(-1)] = v_new.to(self.dtype).reshape(-1, D)
        pk.pos[rows.reshape(-1)] = torch.where(valid, positions, -1)[:, None, :].expand(B, H, T).reshape(-1)
        written = start + T
        self._len[layer] = start + n_new[:, None]
        self._bound[layer] = int(written.max().item())
        self._chunk[layer] = ("decode", n_new, T)
        if layer == self.n_layers - 1:
            self._visual_mask = None
        # the model's SDPA needs a padded view: a transient copy (the kernel path, attend(), reads in place)
        k_att = unpack_rows(pk.k, pk.row0, written)
        v_att = unpack_rows(pk.v, pk.row0, written)
        if self.kv_format:
            k_att = dequantize_kv(k_att, unpack_rows(pk.k_scale, pk.row0, written, fill=1)).to(self.dtype)
            v_att = dequantize_kv(v_att, unpack_rows(pk.v_scale, pk.row0, written, fill=1)).to(self.dtype)
        return AttendKV(k_att, v_att, written, unpack_rows(pk.pos, pk.row0, written, fill=-1))

    def attend(self, layer: int, q: Tensor, *, impl: Optional[str] = None) -> Tensor:
        """Serving path: decode attention of ``q [B, Hq, D]`` over this layer's kept rows (the current token
        already written by ``update``) with the split-K kernel: per-KV-head ragged lengths, GQA, and in-kernel
        dequantisation when ``kv_format`` is set. Returns ``[B, Hq, D]``."""
        pk = self._packed[layer]
        if pk is not None:
            o, _ = packed_decode_attention(
                q, pk.k, pk.v, pk.row0, self._len[layer], k_scale=pk.k_scale, v_scale=pk.v_scale, impl=impl or self.impl
            )
            return o
        lk = self._bound[layer]
        ks = vs = None
        if self.kv_format:
            ks, vs = self.k_scale[layer][:, :, :lk], self.v_scale[layer][:, :, :lk]
        o, _ = decode_attention(
            q,
            self.keys[layer][:, :, :lk],
            self.values[layer][:, :, :lk],
            self._len[layer],
            k_scale=ks,
            v_scale=vs,
            impl=impl or self.impl,
        )
        return o

    def rollback(self, n) -> None:
        raise NotImplementedError("compressed caches do not support rollback (evicted rows cannot come back)")


class VisualMaskHook:
    """Model hook (``reference_impls.models.hooks`` protocol) that gives the prefill chunk's visual-token mask
    to a cache before layer 0; it changes nothing else."""

    def __init__(self, cache):
        self.cache = cache

    def before_layer(self, layer, state, ctx):
        if layer == 0:
            self.cache.set_visual_mask(state.vis_mask)
        return state

    def score_rows(self, layer, state):
        return None

    def after_layer(self, layer, state, ctx, colsum):
        return state


def attention_step(
    cache: KVCache,
    layer: int,
    q: Tensor,
    k_new: Tensor,
    v_new: Tensor,
    positions: Tensor,
    n_new: Tensor,
    *,
    impl: str = "auto",
) -> Tensor:
    """One attention layer on plain tensors through the cache protocol (what the minimal LVLM's decoder does):
    ask for score rows, ``update``, attend with ``ops.scored_attention`` (bottom-right causal, per-head
    lengths), hand the column sums back. ``q [B, Hq, T, D]``; returns ``o [B, Hq, T, D]``."""
    rows = cache.wants_scores(layer, n_new, q.shape[2])
    kv = cache.update(layer, k_new, v_new, positions, n_new)
    o, _, colsum = scored_attention(q, kv.k, kv.v, causal=True, kv_lengths=kv.kv_lengths, score_q_mask=rows, impl=impl)
    if rows is not None:
        if getattr(cache, "wants_queries", False):
            cache.observe_scores(layer, colsum, rows, queries=q)
        else:
            cache.observe_scores(layer, colsum, rows)
    return o
