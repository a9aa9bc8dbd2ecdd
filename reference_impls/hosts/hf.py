"""Hugging Face models as hosts: LLaVA-1.5 / LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL, and the Llama / Qwen2 text models
(``transformers`` 5.17 and later; nothing is monkeypatched, everything is forward hooks removed on exit).

While a token technique or a KV technique is attached, every forward of the model runs through one driver:

* The top-level pre-hook records ``input_ids`` / ``attention_mask`` and gives the call a :class:`ReferenceCache`
  (a ``transformers`` ``Cache``) in place of the empty cache ``generate`` created. It wraps a cache of the protocol
  of ``reference_impls.models.kv_cache``: the attached KV technique's, or a full one (no eviction).
* At decoder layer 0 of a prefill the chunk is reordered so that each row's valid tokens come first (the ragged,
  right-padded ``TokenState`` of ``reference_impls.models.hooks``, whatever the input padding). Before each layer
  the attached token techniques see that state through the same hook methods the minimal LVLM calls
  (``before_layer``, ``score_rows``, ``after_layer``); the scores they ask for are recomputed for the requested
  query rows with the layer's own norm, projections and RoPE (``ops.scored_attention``), so the model keeps its
  SDPA / eager attention and never returns attention weights.
* Each layer receives the state's hidden states, RoPE tables and an attention mask built from the protocol cache's
  per-row (or per-KV-head) lengths: the cache decides what each query sees, so pruned layers, evicted rows and
  per-head budgets all work with ``generate``, batch > 1 and padding. The mask is allocated before the layer and
  filled inside ``ReferenceCache.update`` from the lengths the protocol cache returns.
* After the last layer the output is put back in the input's layout (its own columns when no token was pruned, else
  left-padded so that every row's last token is the last column, which ``generate`` reads).

Positions: pruned tokens keep their RoPE positions; 1-D RoPE hosts can also renumber them (``position_mode=
"contiguous"``, then decoding continues each layer's numbering); M-RoPE hosts (Qwen2-VL, Qwen2.5-VL) take every
kept token's tables from its original column (a merged token from its representative's).

Score kernels: the recomputed scores use ``ops.scored_attention`` with ``host_for(model).impl`` (``"auto"``: Triton
on CUDA, the naive path on CPU), as the minimal LVLM uses its ``score_impl``; a technique's own ``impl`` selects the
kernels of its selection step.

Supported attention implementations: ``sdpa`` and ``eager`` (tested on CPU); ``flash_attention_2/3`` receive a 2-D
key mask, which cannot express per-head lengths (a clear error then), and are untested here. Not supported: beam
search and cache reordering, continuing from a cache filled outside the technique.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn

from reference_impls.hosts.hf_model import (
    cache_argument,
    find_language_model,
    gather_seq,
    left_pad_indices,
    visual_token_ids,
)
from reference_impls.models.hooks import TokenState
from reference_impls.technique import RunStats, Technique, UnsupportedModel

SUPPORTED_ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")
MROPE_HOSTS = ("qwen2_vl", "qwen2_5_vl")


def layer_projections(attn: nn.Module, normed: Tensor, cos: Tensor, sin: Tensor, head_dim: int, which: str):
    """Post-RoPE queries ``[B, Hq, T, D]`` (``which="q"``) or keys ``[B, Hkv, T, D]`` (``"k"``) of an HF attention
    module, from its own (already layer-normed) input, projections, optional q/k norms and RoPE function."""
    B, T, _ = normed.shape
    proj = attn.q_proj if which == "q" else attn.k_proj
    x = proj(normed).view(B, T, -1, head_dim).transpose(1, 2)
    norm = getattr(attn, f"{which}_norm", None)
    if norm is not None:
        x = norm(x)
    rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    out, _ = rope(x, x, cos, sin)
    return out


# --------------------------------------------------------------------------------------------------------------
# the transformers Cache wrapping a protocol cache
# --------------------------------------------------------------------------------------------------------------
def _cache_base():
    from transformers.cache_utils import Cache, CacheLayerMixin

    return Cache, CacheLayerMixin


@dataclass
class _Plan:
    """One layer's chunk: what ``update`` writes, the mask it must fill, the score rows to observe afterwards."""

    width: int  # key width the mask was allocated for
    n_new: Tensor  # [B] valid tokens of the chunk (right padded)
    positions: Tensor  # [B, T]
    mask: Tensor  # the buffer handed to the layer as attention_mask
    rows: Optional[Tensor] = None  # [B, T] score rows wanted by the protocol cache
    queries: Optional[Tensor] = None  # [B, Hq, T, D] post-RoPE queries (when rows are wanted)
    attended: object = None  # AttendKV returned by the protocol cache


def make_reference_cache(host: "HFHost", protocol_cache):
    """A ``transformers`` Cache whose layers are backed by ``protocol_cache`` (see the module docstring)."""
    Cache, CacheLayerMixin = _cache_base()

    class ReferenceCacheLayer(CacheLayerMixin):
        is_compileable = False
        is_sliding = False

        def __init__(self, owner):
            super().__init__()
            self.owner = owner

        def lazy_initialization(self, key_states, value_states):
            return None

        def update(self, key_states, value_states, *args, **kwargs):
            raise RuntimeError("ReferenceCache layers are updated through ReferenceCache.update")

        def get_mask_sizes(self, *args, **kwargs):
            query_length = args[0] if args and isinstance(args[0], int) else kwargs.get("query_length", 0)
            if not isinstance(query_length, int):  # older signature: cache_position tensor
                query_length = int(query_length.shape[-1])
            return self.owner.seen + query_length, 0

        def get_seq_length(self, *args, **kwargs) -> int:
            return self.owner.seen

        def get_max_length(self) -> int:
            return -1

        def get_max_cache_shape(self) -> int:
            return -1

        def reset(self) -> None:
            raise RuntimeError("a ReferenceCache cannot be reset; start a new generation")

        def reorder_cache(self, beam_idx) -> None:
            raise UnsupportedModel("beam search is not supported with reference_impls techniques")

    class ReferenceCache(Cache):
        """Wraps a protocol cache (``.kv``); ``seen`` counts the chunk columns processed, as an unmodified cache would
        report (generate and the models derive positions from it)."""

        def __init__(self):
            super().__init__(layers=[ReferenceCacheLayer(self) for _ in range(host.n_layers)])
            self.host = host
            self.kv = protocol_cache
            self.seen = 0
            self.plans: dict = {}
            self.rope_shift = [None] * host.n_layers  # [B] per layer once a prefill renumbered positions
            self.logical_next: Optional[Tensor] = None  # [B] logical position of the next token

        def update(self, key_states, value_states, layer_idx, *args, **kwargs):
            plan = self.plans.get(layer_idx)
            if plan is None:
                raise RuntimeError(f"layer {layer_idx} was called outside the reference_impls driver")
            kv = self.kv.update(layer_idx, key_states, value_states, plan.positions, plan.n_new)
            kv = _fit_width(kv, plan.width)
            _fill_mask(plan, kv.kv_lengths, host)
            plan.attended = kv
            return kv.k.to(key_states.dtype), kv.v.to(value_states.dtype)

        def get_seq_length(self, layer_idx: int = 0) -> int:
            return self.seen

        def crop(self, *args, **kwargs):
            raise UnsupportedModel("cropping (assisted generation) is not supported with reference_impls techniques")

        def batch_repeat_interleave(self, *args, **kwargs):
            raise UnsupportedModel(
                "num_return_sequences / beam expansion is not supported with reference_impls techniques"
            )

        def batch_select_indices(self, *args, **kwargs):
            raise UnsupportedModel("contrastive search is not supported with reference_impls techniques")

        @property
        def is_compileable(self) -> bool:
            return False

    return ReferenceCache()


def _fit_width(kv, width: int):
    """Pad (with invalid slots) or crop (only invalid slots) the attended K/V to exactly ``width`` keys."""
    from reference_impls.models.kv_cache import AttendKV

    A = kv.k.shape[2]
    if A == width:
        return kv
    if A > width:
        if int(kv.kv_lengths.max()) > width:
            raise RuntimeError(f"the cache returned {int(kv.kv_lengths.max())} keys, more than the {width} planned")
        pos = None if kv.key_positions is None else kv.key_positions[..., :width]
        return AttendKV(kv.k[:, :, :width], kv.v[:, :, :width], kv.kv_lengths, pos)
    pad = (0, 0, 0, width - A)
    pos = None if kv.key_positions is None else torch.nn.functional.pad(kv.key_positions, (0, width - A), value=-1)
    return AttendKV(torch.nn.functional.pad(kv.k, pad), torch.nn.functional.pad(kv.v, pad), kv.kv_lengths, pos)


def _fill_mask(plan: _Plan, kv_lengths: Tensor, host: "HFHost") -> None:
    from reference_impls.models.minimal_lvlm import chunk_attention_mask

    T = plan.positions.shape[1]
    buf = plan.mask
    if buf.dim() == 2:  # FlashAttention: committed keys per row (uniform over heads, checked when planned)
        kl = kv_lengths if kv_lengths.dim() == 1 else kv_lengths[:, 0]
        buf.copy_(torch.arange(plan.width, device=buf.device)[None, :] < (kl - T + plan.n_new)[:, None])
        return
    allowed = chunk_attention_mask(kv_lengths, T, plan.width)  # [B, 1 | Hkv, T, W]
    heads = buf.shape[1]
    if allowed.shape[1] != heads:
        if heads == 1:
            if bool((allowed != allowed[:, :1]).any()):
                raise RuntimeError("per-head key lengths reached a layer planned with one mask for all heads")
            allowed = allowed[:, :1]
        elif allowed.shape[1] == 1:
            allowed = allowed.expand(-1, heads, -1, -1)
        else:
            allowed = allowed.repeat_interleave(heads // allowed.shape[1], dim=1)
    if buf.dtype == torch.bool:
        buf.copy_(allowed)
    else:
        buf.copy_(torch.where(allowed, 0.0, torch.finfo(buf.dtype).min))


# --------------------------------------------------------------------------------------------------------------
# what token techniques see at a layer
# --------------------------------------------------------------------------------------------------------------
class HFLayerContext:
    """The Hugging Face counterpart of ``models.hooks.LayerContext``: scores, keys and queries of the chunk under
    layer ``layer``'s own input norm, projections and RoPE."""

    def __init__(self, host: "HFHost", layer: int, fwd: "_Forward"):
        self.host, self.layer, self.fwd = host, layer, fwd
        self.n_layers = host.n_layers
        self.renumber_positions = not host.mrope

    def _normed(self, state: TokenState) -> Tensor:
        return self.host.layers[self.layer].input_layernorm(state.hidden)

    def queries(self, state: TokenState) -> Tensor:
        cos, sin = self.fwd.rope(state, self.layer)
        return layer_projections(
            self.host.layers[self.layer].self_attn, self._normed(state), cos, sin, self.host.head_dim, "q"
        )

    def keys(self, state: TokenState) -> Tensor:
        cos, sin = self.fwd.rope(state, self.layer)
        return layer_projections(
            self.host.layers[self.layer].self_attn, self._normed(state), cos, sin, self.host.head_dim, "k"
        )

    def recompute_scores(self, state: TokenState, rows: Tensor) -> Tensor:
        """``[B, Hq, T]`` column sums of the query ``rows`` over the chunk's keys (what the layer's attention gives
        a prefill chunk on an empty cache)."""
        from reference_impls.models.minimal_lvlm import rows_colsum

        attn = self.host.layers[self.layer].self_attn
        cos, sin = self.fwd.rope(state, self.layer)
        normed = self._normed(state)
        q = layer_projections(attn, normed, cos, sin, self.host.head_dim, "q")
        k = layer_projections(attn, normed, cos, sin, self.host.head_dim, "k")
        T = state.width
        full = torch.full((state.batch_size,), T, dtype=torch.long, device=q.device)
        return rows_colsum(q, k, k, full, rows, self.host.impl)


# --------------------------------------------------------------------------------------------------------------
# one forward call
# --------------------------------------------------------------------------------------------------------------
@dataclass
class _Forward:
    host: "HFHost"
    cache: object
    phase: str  # "prefill" (empty cache) | "extend" (a chunk after a cache) | "decode"
    width: int  # columns of the input chunk
    valid: Tensor  # [B, width] bool, input layout
    visual: Tensor  # [B, width] bool, input layout
    order: Optional[Tensor] = None  # [B, width]: input column of each right-padded slot
    state: Optional[TokenState] = None
    base_rope: object = None  # the model's (cos, sin) of the input columns (M-RoPE hosts)
    layer_rope: object = None  # the model's (cos, sin) given to the layers of this call
    decode_positions: Optional[Tensor] = None  # [B, 1] logical position of a decode step's token
    colsums: dict = field(default_factory=dict)

    def rope(self, state: TokenState, layer: int):
        """(cos, sin) for ``state``'s tokens in ``layer``'s frame."""
        host = self.host
        if self.phase == "decode":
            shift = self.cache.rope_shift[layer]
            if shift is None or host.mrope:
                return self.layer_rope
            return host.lm.rotary_emb(state.hidden, state.positions.clamp(min=0))
        if host.mrope:  # original M-RoPE tables of each token's (representative's) input column
            col = self.order.gather(1, state.source_index.clamp(min=0))
            return gather_seq(self.base_rope[0], col), gather_seq(self.base_rope[1], col)
        return host.lm.rotary_emb(state.hidden, state.positions.clamp(min=0))


class HFHost:
    """A Hugging Face model as a host (see the module docstring)."""

    def __init__(self, model: nn.Module, name: str):
        self.model, self.name = model, name
        self.lm = find_language_model(model)
        self.layers = self.lm.layers
        cfg = self.lm.config
        self.n_layers = len(self.layers)
        self.n_heads = cfg.num_attention_heads
        self.n_kv_heads = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(self.layers[0].self_attn, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.mrope = name in MROPE_HOSTS
        self.visual_ids = visual_token_ids(model)
        self.impl = "auto"
        self.stats = RunStats()
        self.techniques: list = []  # attached token / KV techniques (driven by the hooks below)
        self._detach: dict = {}
        self._handles: list = []
        self.fwd: Optional[_Forward] = None

    # ------------------------------------------------------------------------------------------ attach / detach
    @property
    def attn_impl(self) -> str:
        for cfg in (getattr(self.lm, "config", None), getattr(self.model, "config", None)):
            impl = getattr(cfg, "_attn_implementation", None)
            if impl:
                return impl
        return "eager"

    def cache_spec(self):
        from reference_impls.technique import CacheSpec

        weight = self.lm.get_input_embeddings().weight  # (projections may be quantised modules)
        inv_freq = None if self.mrope else getattr(self.lm.rotary_emb, "inv_freq", None)
        scaling = float(getattr(self.lm.rotary_emb, "attention_scaling", 1.0))
        return CacheSpec(
            self.n_layers, self.n_heads, self.n_kv_heads, self.head_dim, weight.dtype, weight.device, inv_freq, scaling
        )

    def attach(self, technique: Technique) -> None:
        if any(t is technique for t in self.techniques) or id(technique) in self._detach:
            raise RuntimeError(f"{technique.name} is already attached to this model")
        if not self.techniques and not self._detach:
            self.stats = RunStats()
        if technique.stage in ("decoder", "kv"):
            impl = self.attn_impl
            if not any(impl.startswith(s) for s in SUPPORTED_ATTENTION):
                raise UnsupportedModel(
                    f"{technique.name}: attention implementation {impl!r} is not supported; use "
                    f"one of {', '.join(SUPPORTED_ATTENTION)}"
                )
            if technique.stage == "kv" and any(t.stage == "kv" for t in self.techniques):
                raise RuntimeError(f"{technique.name}: another KV technique is already attached")
            self.techniques.append(technique)
            if not self._handles:
                self._install()
        elif technique.stage == "encoder":
            from reference_impls.hosts.hf_vision import vision_adapter

            self._detach[id(technique)] = vision_adapter(self, technique).install()
        else:
            self._detach[id(technique)] = technique.attach(self)

    def detach(self, technique: Technique) -> None:
        undo = self._detach.pop(id(technique), None)
        if undo is not None:
            undo()
        self.techniques = [t for t in self.techniques if t is not technique]
        if not self.techniques:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
            self.fwd = None

    def _install(self) -> None:
        def pre(module, fn):
            self._handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))

        def post(module, fn):
            self._handles.append(module.register_forward_hook(fn, with_kwargs=True))

        self._cache_arg = cache_argument(self.model)
        pre(self.model, self._top_pre)
        pre(self.lm, self._lm_pre)
        post(self.lm, self._lm_post)
        for idx, layer in enumerate(self.layers):
            pre(layer, self._layer_pre(idx))
            post(layer, self._layer_post(idx))

    # ------------------------------------------------------------------------------------------ the driver
    def _hooks(self, fwd: _Forward) -> list:
        """What runs between layers: the token techniques (prefill / extend), then the cache's own hooks."""
        tokens = [t for t in self.techniques if t.stage == "decoder"] if fwd.phase != "decode" else []
        return [*tokens, *getattr(fwd.cache.kv, "model_hooks", list)()]

    def _new_protocol_cache(self, batch_size: int):
        for t in self.techniques:
            if t.stage == "kv":
                return t.make_cache(self.cache_spec(), batch_size)
        from reference_impls.decode.kv.base import CompressedKVCache, KVPolicy

        spec = self.cache_spec()
        return CompressedKVCache(
            KVPolicy(),
            spec.n_layers,
            batch_size,
            spec.n_kv_heads,
            spec.head_dim,
            dtype=spec.dtype,
            device=spec.device,
            impl=self.impl,
        )

    def _top_pre(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        batch = (ids if ids is not None else embeds).shape[0]
        self._input_ids = ids if isinstance(ids, Tensor) and ids.dim() == 2 else None
        mask = kwargs.get("attention_mask")
        self._input_mask = mask if isinstance(mask, Tensor) and mask.dim() == 2 else None
        key = next((k for k in ("cache", "past_key_values") if kwargs.get(k) is not None), self._cache_arg)
        cache = kwargs.get(key)
        if getattr(cache, "host", None) is self:
            return None
        if cache is not None and cache.get_seq_length() > 0:
            raise UnsupportedModel(
                "continuing from a cache filled without the technique is not supported; start the "
                "generation inside the `with` block"
            )
        kwargs = {**kwargs, key: make_reference_cache(self, self._new_protocol_cache(batch)), "use_cache": True}
        return args, kwargs

    def _lm_pre(self, module, args, kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if getattr(cache, "host", None) is not self:
            self.fwd = None  # the language model was called on its own: leave it alone
            return None
        embeds = kwargs.get("inputs_embeds")
        width = (embeds if embeds is not None else kwargs.get("input_ids", args[0] if args else None)).shape[1]
        batch = (embeds if embeds is not None else kwargs.get("input_ids", args[0] if args else None)).shape[0]
        device = self.lm.get_input_embeddings().weight.device
        mask = kwargs.get("attention_mask")
        mask = mask if isinstance(mask, Tensor) and mask.dim() == 2 else self._input_mask
        valid = (
            torch.ones(batch, width, dtype=torch.bool, device=device)
            if mask is None
            else mask[:, -width:].to(device=device, dtype=torch.bool)
        )
        phase = "prefill" if cache.seen == 0 else ("decode" if width == 1 else "extend")
        visual = torch.zeros_like(valid)
        ids = self._input_ids
        if phase != "decode" and ids is not None and ids.shape[1] >= width and self.visual_ids:
            visual = torch.isin(ids[:, -width:].to(device), torch.tensor(self.visual_ids, device=device)) & valid
        self.fwd = _Forward(self, cache, phase, width, valid, visual)
        return None

    def _start_chunk(self, fwd: _Forward, hidden: Tensor, kwargs: dict) -> None:
        """Layer 0: the input chunk as a right-padded TokenState (prefill / extend) or a one-token state (decode)."""
        B, T, _ = hidden.shape
        dev = hidden.device
        cache = fwd.cache
        fwd.layer_rope = kwargs.get("position_embeddings")
        pos_in = kwargs.get("position_ids")
        if fwd.phase == "decode":
            if self.mrope or not isinstance(pos_in, Tensor):
                pos = cache.logical_next[:, None].clone()
            else:
                pos = pos_in.reshape(-1, T).expand(B, T).clone()
            fwd.decode_positions = pos
            fwd.state = TokenState(
                hidden=hidden,
                positions=pos,
                lengths=torch.ones(B, dtype=torch.long, device=dev),
                vis_mask=torch.zeros(B, 1, dtype=torch.bool, device=dev),
                source_index=torch.zeros(B, 1, dtype=torch.long, device=dev),
                sizes=torch.ones(B, 1, device=dev),
                phase="extend",
            )
            cache.logical_next = cache.logical_next + 1
            return
        order = torch.argsort((~fwd.valid).to(torch.int8), dim=1, stable=True)
        lengths = fwd.valid.sum(1)
        slot_valid = torch.arange(T, device=dev)[None, :] < lengths[:, None]
        hidden_r = hidden.gather(1, order[..., None].expand(-1, -1, hidden.shape[-1]))
        if self.mrope or not isinstance(pos_in, Tensor):
            start = torch.zeros(B, dtype=torch.long, device=dev) if cache.logical_next is None else cache.logical_next
            pos = start[:, None] + torch.arange(T, device=dev)[None, :]
        else:
            pos = pos_in.reshape(-1, T).expand(B, T).gather(1, order)
        pos = torch.where(slot_valid, pos, -1)
        fwd.order = order
        fwd.base_rope = fwd.layer_rope
        fwd.state = TokenState(
            hidden=hidden_r,
            positions=pos,
            lengths=lengths,
            vis_mask=fwd.visual.gather(1, order) & slot_valid,
            source_index=torch.where(slot_valid, torch.arange(T, device=dev)[None, :], -1),
            sizes=slot_valid.float(),
            phase="prefill" if fwd.phase == "prefill" else "extend",
        )
        cache.logical_next = torch.gather(pos, 1, (lengths - 1).clamp(min=0)[:, None])[:, 0] + 1

    def _layer_pre(self, idx: int):
        def hook(module, args, kwargs):
            fwd = self.fwd
            if fwd is None:
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            if idx == 0:
                self._start_chunk(fwd, hidden, kwargs)
            state = fwd.state
            if fwd.phase == "decode":  # the token's position in this layer's frame (0 unless renumbered)
                shift = fwd.cache.rope_shift[idx]
                state.positions = fwd.decode_positions + (0 if shift is None else shift[:, None])
            ctx = HFLayerContext(self, idx, fwd)
            techniques = self._hooks(fwd)
            for t in techniques:
                state = t.before_layer(idx, state, ctx)
            fwd.state = state
            state.layer_tokens.append(state.lengths.clone())
            rows = [t.score_rows(idx, state) for t in techniques]
            fwd.colsums[idx] = [None if r is None else ctx.recompute_scores(state, r) for r in rows]
            cos, sin = fwd.rope(state, idx)
            new = {
                **kwargs,
                "attention_mask": self._plan(fwd, idx, state, (cos, sin)),
                "position_embeddings": (cos, sin),
            }
            if not self.mrope and isinstance(kwargs.get("position_ids"), Tensor):
                new["position_ids"] = state.positions.clamp(min=0)
            if args:
                return (state.hidden, *args[1:]), new
            new["hidden_states"] = state.hidden
            return args, new

        return hook

    def _plan(self, fwd: _Forward, idx: int, state: TokenState, rope) -> Tensor:
        """Allocate this layer's attention mask and record what ReferenceCache.update writes."""
        cache, kv = fwd.cache, fwd.cache.kv
        B, T = state.batch_size, state.width
        width = kv.max_length_bound(idx) + T
        old = kv.lengths(idx)
        per_head = (old.dim() == 2 and bool((old != old[:, :1]).any())) or (
            getattr(kv, "per_head_selection", False) and fwd.phase == "decode"
        )
        rows = kv.wants_scores(idx, state.lengths, T)
        queries = None
        if rows is not None:
            attn = self.layers[idx].self_attn
            queries = layer_projections(attn, self.layers[idx].input_layernorm(state.hidden), *rope, self.head_dim, "q")
        impl = self.attn_impl
        device = state.hidden.device
        if impl.startswith("flash"):
            if per_head:
                raise UnsupportedModel(f"{impl} cannot mask per-head cache lengths; use attn_implementation='sdpa'")
            mask = torch.zeros(B, width, dtype=torch.long, device=device)
        elif impl == "sdpa":
            mask = torch.zeros(B, self.n_heads if per_head else 1, T, width, dtype=torch.bool, device=device)
        else:
            mask = torch.zeros(B, self.n_heads if per_head else 1, T, width, dtype=state.hidden.dtype, device=device)
        positions = state.positions
        cache.plans[idx] = _Plan(width, state.lengths, positions, mask, rows, queries)
        return mask

    def _layer_post(self, idx: int):
        def hook(module, args, kwargs, output):
            fwd = self.fwd
            if fwd is None:
                return None
            hidden = output[0] if isinstance(output, tuple) else output
            plan = fwd.cache.plans.pop(idx)
            if plan.rows is not None:
                self._observe(fwd, idx, plan)
            state = fwd.state
            state.hidden = hidden
            if fwd.phase == "prefill" and not self.mrope:  # this layer's RoPE frame, for the tokens decoded later
                last = torch.gather(state.positions, 1, (state.lengths - 1).clamp(min=0)[:, None])[:, 0]
                shift = last + 1 - fwd.cache.logical_next
                fwd.cache.rope_shift[idx] = shift if bool((shift != 0).any()) else None
            ctx = HFLayerContext(self, idx, fwd)
            for t, colsum in zip(self._hooks(fwd), fwd.colsums.pop(idx, [])):
                state = t.after_layer(idx, state, ctx, colsum)
            fwd.state = state
            return (state.hidden, *output[1:]) if isinstance(output, tuple) else state.hidden

        return hook

    def _observe(self, fwd: _Forward, idx: int, plan: _Plan) -> None:
        """The protocol cache's score rows: column sums over the keys this chunk attended (before any eviction)."""
        from reference_impls.models.minimal_lvlm import rows_colsum

        kv = plan.attended
        colsum = rows_colsum(plan.queries, kv.k, kv.v, kv.kv_lengths, plan.rows, self.impl)
        if getattr(fwd.cache.kv, "wants_queries", False):
            fwd.cache.kv.observe_scores(idx, colsum, plan.rows, queries=plan.queries)
        else:
            fwd.cache.kv.observe_scores(idx, colsum, plan.rows)

    def _lm_post(self, module, args, kwargs, output):
        fwd = self.fwd
        if fwd is None:
            return None
        self.fwd = None
        cache, state = fwd.cache, fwd.state
        cache.seen += fwd.width
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        stats = self.stats
        if fwd.phase != "decode":
            B, T = state.batch_size, state.width
            kept = torch.where(state.valid_mask(), fwd.order.gather(1, state.source_index.clamp(min=0)), -1)
            if T == fwd.width and bool((state.lengths == fwd.valid.sum(1)).all()):
                hidden = hidden.gather(1, torch.argsort(fwd.order, dim=1)[..., None].expand(-1, -1, hidden.shape[-1]))
            else:  # pruned: left-padded so that each row's last token is the last column
                slots = left_pad_indices(torch.arange(T, device=hidden.device).expand(B, T), state.lengths)
                hidden = hidden.gather(1, slots.clamp(min=0)[..., None].expand(-1, -1, hidden.shape[-1]))
                hidden = hidden * (slots >= 0)[..., None].to(hidden.dtype)
            stats.layer_tokens = torch.stack(state.layer_tokens)
            stats.kept_indices = kept
            stats.prefills += int(fwd.phase == "prefill")
        kv = cache.kv
        stats.cache_lengths = [kv.lengths(l).clone() for l in range(self.n_layers)]
        stats.kv_bytes = kv.kv_bytes() if hasattr(kv, "kv_bytes") else None
        if hasattr(output, "last_hidden_state"):
            output.last_hidden_state = hidden
            return output
        return (hidden, *output[1:])
