"""Shared machinery of the Hugging Face adapters: hook bookkeeping, model introspection, and LLM-side visual-token
pruning inside a decoder stack (FastV / PyramidDrop style) driven only by forward pre-hooks.

Design (the kvpress pattern): an adapter is a context manager; ``__enter__`` registers forward hooks / pre-hooks
on modules of an existing model, ``__exit__`` removes them. Nothing is monkeypatched, so leaving the context
restores the original model exactly.

How the pruning works without touching the model code. HF decoder stacks call every layer with the same keyword
arguments (``attention_mask``, ``position_embeddings``, ``position_ids`` ...). A pre-hook on layer ``K - 1``
recomputes, for one query row (the last valid token) the attention probabilities of that layer (input layer-norm,
q/k projections and RoPE of that layer, then ``reference_impls.ops.scored_attention`` with one score row): the
model itself keeps running SDPA / FlashAttention and never returns attention weights. A pre-hook on layer ``K``
gathers the kept tokens of the hidden states and of the rotary tables, and replaces the attention mask by one built
for the pruned layout; pre-hooks on the later layers pass the same replacements. The KV cache of layers >= K
therefore holds only the kept tokens; decoding steps attend to them through a replaced mask (positions keep their
original values: FastV's "keep" position mode).

Batches: each sample keeps its own number of tokens; the pruned sequence is left-padded to the longest sample
(``kept_indices`` maps every pruned slot to its original position, -1 for padding), so the last valid token of every
sample is the last column (what ``generate`` reads). Input may be left- or right-padded.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
from torch import nn

SUPPORTED_ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")
SUPPORTED_MODELS = "a Hugging Face LLaVA, Qwen2-VL or Qwen2.5-VL model"
# transformers hands the KV cache to the language model and its decoder layers as ``cache`` (5.25 does) or
# ``past_key_values`` (5.17 does); model outputs carry it under the same names.
CACHE_NAMES = ("cache", "past_key_values")


class CompressionError(RuntimeError):
    """Raised when an adapter was asked to compress but the sequence / cache did not get shorter."""


# --------------------------------------------------------------------------------------------------------------
# hook bookkeeping
# --------------------------------------------------------------------------------------------------------------
class HookAdapter:
    """Base context manager: subclasses implement ``_install`` (calling ``_pre``/``_post``) and ``_check_on_exit``."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._handles: list = []
        self._entered = False

    def _pre(self, module: nn.Module, fn) -> None:
        self._handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))

    def _post(self, module: nn.Module, fn) -> None:
        self._handles.append(module.register_forward_hook(fn, with_kwargs=True))

    def _install(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_on_exit(self) -> None:
        return None

    def __enter__(self):
        if self._entered:
            raise RuntimeError(f"{type(self).__name__} is already active")
        self._entered = True
        try:
            self._install()
        except BaseException:
            self._remove()
            raise
        return self

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._entered = False

    def __exit__(self, exc_type, exc, tb):
        self._remove()
        if exc_type is None:
            self._check_on_exit()
        return False


# --------------------------------------------------------------------------------------------------------------
# model introspection (public module / class names; guards for older transformers layouts)
# --------------------------------------------------------------------------------------------------------------
def passed_cache(kwargs: dict, caller: str):
    """The KV cache that transformers passed to ``caller`` (None when the forward runs without one).

    transformers always passes the argument, even as None; a call with neither name means a release that hands the
    cache over some other way, and the adapter would lose track of its pruned layout: that is an error.
    """
    for name in CACHE_NAMES:
        if name in kwargs:
            return kwargs[name]
    raise CompressionError(f"{caller} was called with neither a 'cache' nor a 'past_key_values' argument: this "
                           "transformers release passes the KV cache in a way the adapter does not support")


def returned_cache(output):
    """The KV cache a model output carries (attribute ``cache`` or ``past_key_values``), else None."""
    for name in CACHE_NAMES:
        cache = getattr(output, name, None)
        if cache is not None:
            return cache
    return None


def cached_length(cache, layer: int = 0) -> int:
    return cache.get_seq_length(layer) if cache is not None and hasattr(cache, "get_seq_length") else 0


def check_visionzip_counts(dominant, contextual) -> None:
    """VisionZip adapters: ``dominant`` and ``contextual`` must be non-negative ints (upper bounds are per model)."""
    for name, value in (("dominant", dominant), ("contextual", contextual)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")


def find_submodule(model: nn.Module, attr: str) -> nn.Module:
    """``model.model.<attr>`` or ``model.<attr>`` (transformers moved the towers into ``.model`` in 4.52)."""
    for holder in (getattr(model, "model", None), model):
        sub = getattr(holder, attr, None) if holder is not None else None
        if sub is not None:
            return sub
    raise ValueError(f"{type(model).__name__} has no {attr} module: expected {SUPPORTED_MODELS}")


def find_language_model(model: nn.Module) -> nn.Module:
    """The decoder stack (module with ``.layers``) of a LLaVA / Qwen2-VL style model, across transformers versions."""
    candidates = []
    inner = getattr(model, "model", None)
    if inner is not None:
        candidates += [getattr(inner, "language_model", None), inner]
    lm = getattr(model, "language_model", None)
    if lm is not None:
        candidates += [getattr(lm, "model", None), lm]
    for cand in candidates:
        if cand is not None and isinstance(getattr(cand, "layers", None), nn.ModuleList):
            return cand
    raise ValueError(f"{type(model).__name__} has no language model with decoder layers: expected {SUPPORTED_MODELS}")


def attention_implementation(model: nn.Module, lm: nn.Module) -> str:
    for cfg in (getattr(lm, "config", None), getattr(model, "config", None)):
        impl = getattr(cfg, "_attn_implementation", None)
        if impl:
            return impl
    return "eager"


def config_value(model: nn.Module, *names, default=None):
    cfg = getattr(model, "config", None)
    if cfg is None:
        raise ValueError(f"{type(model).__name__} has no config: expected {SUPPORTED_MODELS}")
    for name in names:
        value = getattr(cfg, name, None)
        if value is not None:
            return value
    return default


def _rope_fn(attn: nn.Module):
    return sys.modules[type(attn).__module__]


def apply_layer_rope(attn: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE of ``attn``'s own modeling module applied to x [B,H,L,D] (cos/sin [B,L,D], or [3,B,L,D] in older
    Qwen2-VL releases, which use ``apply_multimodal_rotary_pos_emb`` with the M-RoPE sections)."""
    module = _rope_fn(attn)
    if cos.dim() == 4 and hasattr(module, "apply_multimodal_rotary_pos_emb"):
        sections = None
        for holder in (attn, getattr(attn, "config", None)):
            scaling = getattr(holder, "rope_scaling", None) or getattr(holder, "rope_parameters", None)
            if isinstance(scaling, dict) and "mrope_section" in scaling:
                sections = scaling["mrope_section"]
                break
        out, _ = module.apply_multimodal_rotary_pos_emb(x, x, cos, sin, sections)
        return out
    out, _ = module.apply_rotary_pos_emb(x, x, cos, sin)
    return out


def gather_seq(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather along the sequence dim (-2) with idx [B, K] (-1 -> row 0); x is [B, L, D] or [S, B, L, D]."""
    safe = idx.clamp(min=0)
    if x.dim() == 3:
        if x.shape[0] != idx.shape[0]:
            x = x.expand(idx.shape[0], -1, -1)
        return x.gather(1, safe[..., None].expand(-1, -1, x.shape[-1]))
    if x.dim() == 4:
        if x.shape[1] != idx.shape[0]:
            x = x.expand(-1, idx.shape[0], -1, -1)
        return x.gather(2, safe[None, ..., None].expand(x.shape[0], -1, -1, x.shape[-1]))
    raise ValueError(f"cannot gather a tensor of shape {tuple(x.shape)} along the sequence")


def gather_rows(hidden: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """hidden [B, L, C] -> [B, K, C]; rows with idx == -1 are zero."""
    out = gather_seq(hidden, idx)
    return out * (idx >= 0)[..., None].to(out.dtype)


def build_attention_mask(key_valid: torch.Tensor, q_len: int, impl: str, dtype: torch.dtype):
    """Mask for the pruned layout: query i (at key index Lk - Lq + i) sees valid keys j <= its index, and itself."""
    if impl.startswith("flash_attention"):
        return key_valid.long()
    num_keys = key_valid.shape[1]
    device = key_valid.device
    key_pos = torch.arange(num_keys, device=device)
    query_pos = torch.arange(num_keys - q_len, num_keys, device=device)
    allowed = (key_pos[None, :] <= query_pos[:, None])[None] & key_valid[:, None, :]
    allowed |= (key_pos[None, :] == query_pos[:, None])[None]
    allowed = allowed[:, None]  # [B, 1, Lq, Lk]
    if impl == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)


def left_pad_indices(idx: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Turn right-padded kept indices [B, K] (first counts[b] valid) into a left-padded [B, max counts] layout."""
    width = int(counts.max()) if counts.numel() else 0
    slot = torch.arange(width, device=idx.device)[None, :] - (width - counts)[:, None]
    out = idx.gather(1, slot.clamp(min=0))
    return torch.where(slot >= 0, out, torch.full_like(out, -1))


# --------------------------------------------------------------------------------------------------------------
# scores: one query row recomputed with the layer's own projections
# --------------------------------------------------------------------------------------------------------------
def last_token_attention(layer: nn.Module, hidden: torch.Tensor, position_embeddings, key_valid: torch.Tensor,
                         num_heads: int, num_kv_heads: int, impl: str = "auto") -> torch.Tensor:
    """Head-averaged attention probabilities of each sample's last valid token over the valid keys of ``layer``,
    recomputed for that single query row: returns [B, L] fp32 (0 on invalid keys)."""
    from reference_impls.ops import scored_attention

    attn = layer.self_attn
    batch, length, _ = hidden.shape
    normed = layer.input_layernorm(hidden)
    head_dim = getattr(attn, "head_dim", normed.shape[-1] // num_heads)
    positions = torch.arange(length, device=hidden.device)
    last = torch.where(key_valid, positions, -1).amax(1)  # last valid index per sample
    # compact the valid keys to the front (right padding), so scored_attention can use kv_lengths
    order = torch.argsort((~key_valid).to(torch.int8), dim=1, stable=True)
    kv_lengths = key_valid.sum(1)
    cos, sin = position_embeddings
    q_in = normed.gather(1, last[:, None, None].expand(-1, 1, normed.shape[-1]))
    q = attn.q_proj(q_in).view(batch, 1, num_heads, head_dim).transpose(1, 2)
    k = attn.k_proj(normed).view(batch, length, num_kv_heads, head_dim).transpose(1, 2)
    if hasattr(attn, "q_norm"):
        q, k = attn.q_norm(q), attn.k_norm(k)
    q = apply_layer_rope(attn, q, gather_seq(cos, last[:, None]), gather_seq(sin, last[:, None]))
    k = apply_layer_rope(attn, k, cos, sin)
    k = k.gather(2, order[:, None, :, None].expand(-1, k.shape[1], -1, head_dim))
    scale = getattr(attn, "scaling", head_dim**-0.5)
    _, _, colsum = scored_attention(q, k, k, causal=False, scale=scale, kv_lengths=kv_lengths,
                                    score_q_range=(0, 1), impl=impl)
    compact = colsum.mean(1)  # mean over query heads
    scores = torch.zeros(batch, length, dtype=torch.float32, device=hidden.device)
    scores.scatter_(1, order, compact)
    return scores * key_valid


def select_kept_tokens(scores: torch.Tensor, visual: torch.Tensor, valid: torch.Tensor, keep_visual: torch.Tensor,
                       impl: str = "auto") -> torch.Tensor:
    """Every valid non-visual token plus the ``keep_visual[b]`` best-scored visual tokens, in any padding layout:
    the valid tokens are compacted to the front and the MODEL helper's ``keep_text_and_top_visual`` (right padding)
    does the ragged selection. Returns right-padded ascending indices [B, K] (-1 beyond each count)."""
    from reference_impls.models.hooks import keep_text_and_top_visual

    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)  # valid first, original order
    lengths = valid.sum(1)
    kept = keep_text_and_top_visual(scores.gather(1, order), visual.gather(1, order) & valid.gather(1, order),
                                    lengths, keep_visual, impl)
    return torch.where(kept >= 0, order.gather(1, kept.clamp(min=0)), -1)


# --------------------------------------------------------------------------------------------------------------
# the generic LLM-side pruner
# --------------------------------------------------------------------------------------------------------------
@dataclass
class PruneStage:
    """Prune before decoder layer ``layer``; scores come from layer ``score_layer`` (``layer - 1`` for FastV, ``layer``
    for PyramidDrop); ``keep(n_visual_now, n_visual_orig) -> [B]`` visual tokens kept."""

    layer: int
    score_layer: int
    keep: object


@dataclass
class _Segment:
    """A run of layers sharing one token layout (segment 0 = the unpruned input)."""

    first_layer: int
    kept: torch.Tensor | None = None  # [B, Ls] original positions, -1 = padding (None for segment 0)
    key_valid: torch.Tensor | None = None  # [B, Ls (+ decoded tokens)] valid keys of this segment's cache
    overrides: dict = field(default_factory=dict)  # kwargs replaced for this segment's layers in this forward
    next_position: torch.Tensor | None = None  # [B] next position id ("contiguous" mode only)


class DecoderTokenPruner(HookAdapter):
    """Prune visual tokens inside the LLM at the given ``PruneStage``s (strictly increasing layers).

    After each pruning prefill: ``kept_indices`` [B, L'] (original positions in the last segment, -1 = padding)
    and ``token_counts`` (valid tokens per sample, one entry per segment).
    """

    def __init__(self, model: nn.Module, stages: list[PruneStage], *, visual_token_ids,
                 require_compression: bool = True, impl: str = "auto", position_mode: str = "keep"):
        super().__init__(model)
        self.lm = find_language_model(model)
        if position_mode not in ("keep", "contiguous"):
            raise ValueError(f"position_mode must be 'keep' or 'contiguous', got {position_mode!r}")
        if position_mode == "contiguous" and not supports_contiguous_positions(model, self.lm):
            raise ValueError("position_mode='contiguous' needs 1-D RoPE (a Llama-style rotary_emb); multimodal "
                             "RoPE (Qwen2-VL) positions cannot be renumbered")
        self.position_mode = position_mode
        self.visual_token_ids = [int(t) for t in visual_token_ids if t is not None]
        if not self.visual_token_ids:
            raise ValueError(f"{type(model).__name__}'s config has no image token id: expected {SUPPORTED_MODELS}")
        num_layers = len(self.lm.layers)
        if not stages:
            raise ValueError("at least one pruning stage is needed")
        if num_layers < 2:
            raise ValueError(f"the language model has {num_layers} decoder layer(s): pruning needs at least 2")
        previous = 0
        for stage in stages:
            if not 1 <= stage.layer < num_layers or not 0 <= stage.score_layer <= stage.layer:
                raise ValueError(f"cannot prune before decoder layer {stage.layer}: the language model has "
                                 f"{num_layers} decoder layers; prune before a layer from 1 to {num_layers - 1}")
            if stage.layer <= previous:
                raise ValueError(f"pruning layers must be strictly increasing, got {[s.layer for s in stages]}")
            previous = stage.layer
        self.stages = stages
        self.attn_impl = attention_implementation(model, self.lm)
        if not any(self.attn_impl.startswith(s) for s in SUPPORTED_ATTENTION):
            raise ValueError(f"attention implementation {self.attn_impl!r} is not supported; use one of "
                             f"{SUPPORTED_ATTENTION}")
        cfg = self.lm.config
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = getattr(cfg, "num_key_value_heads", None) or self.num_heads
        self.require_compression = require_compression
        self.impl = impl
        self.kept_indices: torch.Tensor | None = None
        self.token_counts: list[torch.Tensor] = []
        self.num_pruned_prefills = 0
        self._reset()

    # ---- state ------------------------------------------------------------------------------------------------
    def _reset(self):
        self._mode = "off"  # "off" | "prefill" | "decode"
        self._input_ids = None
        self._input_mask = None
        self._segments: list[_Segment] = []
        self._pending: dict[int, torch.Tensor] = {}
        self._base_kwargs: dict = {}
        self._extended: set[int] = set()
        self._step_len = 0
        self._visual = None

    def _segment_index(self, layer_idx: int) -> int:
        index = 0
        for i, seg in enumerate(self._segments):
            if seg.first_layer <= layer_idx:
                index = i
        return index

    def expected_visual_counts(self, num_visual: torch.Tensor) -> torch.Tensor:
        """Visual tokens per sample left after all stages (what the adapter must achieve)."""
        remaining = num_visual
        for stage in self.stages:
            remaining = torch.minimum(stage.keep(remaining, num_visual), remaining)
        return remaining

    # ---- hooks ------------------------------------------------------------------------------------------------
    def _install(self) -> None:
        self._reset()
        self._pre(self.model, self._top_pre)
        self._pre(self.lm, self._lm_pre)
        self._post(self.lm, self._lm_post)
        for idx, layer in enumerate(self.lm.layers):
            self._pre(layer, self._make_layer_hook(idx))

    def _top_pre(self, module, args, kwargs):
        self._input_ids = kwargs.get("input_ids", args[0] if args else None)
        self._input_mask = kwargs.get("attention_mask")
        return None

    def _lm_pre(self, module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            embeds = kwargs.get("input_ids", args[0] if args else None)
        length = embeds.shape[1]
        past = cached_length(passed_cache(kwargs, "the language model"))
        ids = self._input_ids
        has_visual = isinstance(ids, torch.Tensor) and ids.dim() == 2 and ids.shape[1] == length and bool(
            torch.isin(ids, torch.tensor(self.visual_token_ids, device=ids.device)).any())
        if has_visual and past == 0:
            self._start_prefill(ids, length)
        elif self._mode == "decode" and past > 0:
            # a generated token may equal a placeholder id: it is plain text here (no new image in this step)
            self._extended = set()
            self._step_len = length
        else:
            self._mode = "off"
        return None

    def _start_prefill(self, ids, length):
        self._mode = "prefill"
        visual = torch.isin(ids, torch.tensor(self.visual_token_ids, device=ids.device))
        mask = self._input_mask
        valid = torch.ones_like(visual) if mask is None else mask[:, -length:].to(torch.bool)
        self._visual = visual & valid
        self._first_valid = torch.where(valid, torch.arange(length, device=valid.device), length).amin(1)
        self._segments = [_Segment(0, None, valid)]
        self._pending = {}
        self._base_kwargs = {}
        self.token_counts = [valid.sum(1)]
        self.kept_indices = None

    def _make_layer_hook(self, layer_idx: int):
        def hook(module, args, kwargs):
            if self._mode == "off":
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            if self._mode == "prefill":
                hidden, kwargs = self._prefill_layer(layer_idx, module, hidden, kwargs)
            else:
                kwargs = self._decode_layer(layer_idx, kwargs)
            if args:
                return (hidden, *args[1:]), kwargs
            kwargs["hidden_states"] = hidden
            return args, kwargs

        return hook

    def _prefill_layer(self, layer_idx, layer, hidden, kwargs):
        if layer_idx == 0:
            self._base_kwargs = {k: kwargs.get(k) for k in ("position_embeddings", "position_ids")}
        for s, stage in enumerate(self.stages):
            if stage.score_layer == layer_idx:
                current = {**kwargs, **self._segments[-1].overrides}
                self._score(s, layer, hidden, current)
            if stage.layer == layer_idx and s in self._pending:
                hidden = self._apply_prune(s, hidden, kwargs)
        return hidden, {**kwargs, **self._segments[-1].overrides}

    def _score(self, s, layer, hidden, kwargs):
        seg = self._segments[-1]
        if hidden.shape[1] != seg.key_valid.shape[1]:
            raise CompressionError(f"layer input has {hidden.shape[1]} tokens, expected {seg.key_valid.shape[1]}: "
                                   "another hook changed the sequence")
        visual = self._visual if seg.kept is None else self._visual_in(seg.kept)
        num_visual = visual.sum(1)
        keep = torch.minimum(self.stages[s].keep(num_visual, self._visual.sum(1)), num_visual)
        if bool((keep == num_visual).all()):
            return  # nothing to drop in any sample: leave the model untouched (exact identity)
        scores = last_token_attention(layer, hidden, kwargs["position_embeddings"], seg.key_valid,
                                      self.num_heads, self.num_kv_heads, impl=self.impl)
        kept = select_kept_tokens(scores, visual, seg.key_valid, keep, impl=self.impl)
        self._pending[s] = left_pad_indices(kept, (kept >= 0).sum(1))

    def _visual_in(self, kept):
        return self._visual.gather(1, kept.clamp(min=0)) & (kept >= 0)

    def _apply_prune(self, s, hidden, kwargs):
        local = self._pending.pop(s)
        prev = self._segments[-1]
        original = local if prev.kept is None else torch.where(local >= 0, prev.kept.gather(1, local.clamp(min=0)), -1)
        key_valid = original >= 0
        overrides = {}
        cos, sin = self._base_kwargs["position_embeddings"]
        pos = self._base_kwargs.get("position_ids")
        next_position = None
        if self.position_mode == "contiguous":  # renumber the kept tokens 0, 1, 2, ... from the first valid one
            base = pos if isinstance(pos, torch.Tensor) and pos.dim() == 2 else \
                torch.arange(self._segments[0].key_valid.shape[1], device=hidden.device)[None]
            first = gather_seq(base.expand(hidden.shape[0], -1)[..., None],
                               self._first_valid[:, None])[:, 0, 0]
            rank = key_valid.long().cumsum(1) - 1
            new_pos = torch.where(key_valid, first[:, None] + rank, 0)
            overrides["position_embeddings"] = self.lm.rotary_emb(cos, new_pos)
            overrides["position_ids"] = new_pos
            next_position = first + key_valid.sum(1)
        else:
            overrides["position_embeddings"] = (gather_seq(cos, original), gather_seq(sin, original))
            if isinstance(pos, torch.Tensor) and pos.dim() == 2:
                overrides["position_ids"] = gather_seq(pos[..., None], original)[..., 0]
        overrides["attention_mask"] = build_attention_mask(key_valid, key_valid.shape[1], self.attn_impl, hidden.dtype)
        if kwargs.get("cache_position") is not None:
            overrides["cache_position"] = torch.arange(key_valid.shape[1], device=hidden.device)
        self._segments.append(_Segment(self.stages[s].layer, original, key_valid, overrides, next_position))
        self.token_counts.append(key_valid.sum(1))
        return gather_rows(hidden, local)

    def _decode_layer(self, layer_idx, kwargs):
        seg_idx = self._segment_index(layer_idx)
        if seg_idx == 0:
            return kwargs
        seg = self._segments[seg_idx]
        if seg_idx not in self._extended:
            self._extended.add(seg_idx)
            cache = passed_cache(kwargs, f"decoder layer {layer_idx}")
            if cache is not None and hasattr(cache, "get_seq_length"):
                stored = cache.get_seq_length(layer_idx)
                if stored != seg.key_valid.shape[1]:
                    raise CompressionError(f"layer {layer_idx} cache holds {stored} tokens, the pruned layout "
                                           f"expects {seg.key_valid.shape[1]}")
            new = torch.ones(seg.key_valid.shape[0], self._step_len, dtype=torch.bool, device=seg.key_valid.device)
            seg.key_valid = torch.cat([seg.key_valid, new], 1)
            dtype = kwargs["position_embeddings"][0].dtype if kwargs.get("position_embeddings") else torch.float32
            seg.overrides = {"attention_mask": build_attention_mask(seg.key_valid, self._step_len, self.attn_impl,
                                                                    dtype)}
            if seg.next_position is not None:  # contiguous positions continue per sample
                new_pos = seg.next_position[:, None] + torch.arange(self._step_len, device=seg.key_valid.device)
                seg.next_position = seg.next_position + self._step_len
                seg.overrides["position_embeddings"] = self.lm.rotary_emb(kwargs["position_embeddings"][0], new_pos)
                seg.overrides["position_ids"] = new_pos
            if kwargs.get("cache_position") is not None:
                start = seg.key_valid.shape[1] - self._step_len
                seg.overrides["cache_position"] = torch.arange(start, start + self._step_len,
                                                               device=seg.key_valid.device)
        return {**kwargs, **seg.overrides}

    def _lm_post(self, module, args, kwargs, output):
        if self._mode != "prefill":
            return None
        pruned = len(self._segments) > 1
        self.num_pruned_prefills += int(pruned)
        self.kept_indices = self._segments[-1].kept if pruned else None
        self._verify(output, kwargs)
        self._mode = "decode" if pruned else "off"
        return None

    def _verify(self, output, kwargs):
        """Raise CompressionError unless every sample that should lose tokens did, and the cache got shorter."""
        num_visual = self._visual.sum(1)
        should_shrink = self.expected_visual_counts(num_visual) < num_visual
        shrunk = self.token_counts[-1] < self.token_counts[0]
        if bool((should_shrink & ~shrunk).any()):
            bad = torch.nonzero(should_shrink & ~shrunk).flatten().tolist()
            raise CompressionError(f"samples {bad} kept all their tokens although pruning was requested")
        if not bool(should_shrink.any()):
            return
        hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state
        if hidden.shape[1] >= self._segments[0].key_valid.shape[1]:
            raise CompressionError(f"the LLM output still has {hidden.shape[1]} tokens: no pruning happened")
        cache = passed_cache(kwargs, "the language model")
        cache = cache if cache is not None else returned_cache(output)
        if cache is not None and hasattr(cache, "get_seq_length"):
            last = len(self.lm.layers) - 1
            if cache.get_seq_length(last) >= cache.get_seq_length(0):
                raise CompressionError("the KV cache of the pruned layers is not shorter than layer 0's")

    def _check_on_exit(self):
        if self.require_compression and self.num_pruned_prefills == 0 and self._may_compress():
            raise CompressionError(
                f"{type(self).__name__} was active but never pruned: no forward with visual tokens "
                f"(token ids {self.visual_token_ids}) reached the model. Pass require_compression=False to allow this.")

    def _may_compress(self) -> bool:
        probe = torch.tensor([1000])
        return bool(self.expected_visual_counts(probe) < probe)


# --------------------------------------------------------------------------------------------------------------
# public adapters (model-agnostic: LLaVA, Qwen2-VL, Qwen2.5-VL share the decoder-layer calling convention)
# --------------------------------------------------------------------------------------------------------------
def supports_contiguous_positions(model: nn.Module, lm: nn.Module) -> bool:
    """True for decoders with 1-D RoPE (``lm.rotary_emb(x, position_ids [B, L])``), False for multimodal RoPE."""
    rotary = getattr(lm, "rotary_emb", None)
    return rotary is not None and not hasattr(rotary, "mrope_section") and \
        "mrope" not in str(getattr(rotary, "rope_type", "")) and config_value(model, "video_token_id") is None


def visual_token_ids(model: nn.Module) -> list[int]:
    """Placeholder token ids whose positions hold visual embeddings (image, and video for Qwen2-VL)."""
    ids = [config_value(model, "image_token_id", "image_token_index")]
    video = config_value(model, "video_token_id")
    if video is not None:
        ids.append(video)
    ids = [int(i) for i in ids if i is not None]
    if not ids:
        raise ValueError(f"{type(model).__name__}'s config has no image token id: expected {SUPPORTED_MODELS}")
    return ids


class FastVAdapter(DecoderTokenPruner):
    """FastV (arXiv 2403.06764) on a Hugging Face LVLM: ``with FastVAdapter(model, k=2, ratio=0.5): model.generate(...)``.

    Layers >= k see (and cache) every non-visual token plus the ``round_half_up(N_vis (1 - ratio))`` visual tokens
    that the last valid token attends to most at layer k - 1 (head mean). Selection core:
    ``reference_impls.prefill.fastv.n_keep_visual`` and ``reference_impls.models.hooks.keep_text_and_top_visual``.
    Deviations: positions keep their original values (FastV's default); the KV-cache variant (not mask simulation);
    ragged per-sample keep counts; the score is a one-row recomputation, not ``output_attentions``.
    """

    def __init__(self, model: nn.Module, k: int = 2, ratio: float = 0.5, *, require_compression: bool = True,
                 impl: str = "auto"):
        from reference_impls.prefill.fastv import n_keep_visual

        if not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) < 1.0:
            raise ValueError(f"ratio must be in [0, 1), got {ratio!r}")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        keep_fraction = 1.0 - float(ratio)
        stage = PruneStage(k, k - 1, lambda now, orig: n_keep_visual(now, keep_fraction))
        super().__init__(model, [stage], visual_token_ids=visual_token_ids(model),
                         require_compression=require_compression, impl=impl)
        self.k, self.ratio = k, float(ratio)


class PyramidDropAdapter(DecoderTokenPruner):
    """PyramidDrop (arXiv 2410.17247): before each layer of ``layer_list`` keep ``int(N_vis_orig * ratio_list[s])``
    visual tokens ranked by the last token's attention recomputed with that layer's own projections.
    Defaults: ``reference_impls.prefill.pyramiddrop.default_layer_list`` (8/16/24 of 32) and (0.5, 0.25, 0.125).
    ``position_mode="auto"``: "contiguous" (upstream: the kept tokens are renumbered 0, 1, 2, ... after every stage,
    and decoding continues that numbering per stage and per sample) on 1-D RoPE decoders (LLaVA); "keep" (original
    positions, a declared deviation) on multimodal-RoPE decoders (Qwen2-VL / Qwen2.5-VL), whose 3-D positions
    cannot be renumbered.
    """

    def __init__(self, model: nn.Module, layer_list=None, ratio_list=(0.5, 0.25, 0.125), *,
                 position_mode: str = "auto", require_compression: bool = True, impl: str = "auto"):
        from reference_impls.prefill.pyramiddrop import check_schedule, default_layer_list, stage_keep_counts

        ids = visual_token_ids(model)
        num_layers = len(find_language_model(model).layers)
        layers = list(layer_list) if layer_list is not None else default_layer_list(num_layers)
        if layer_list is None and len(layers) != len(ratio_list):
            raise ValueError(f"the default schedule prunes at 1/4, 1/2 and 3/4 of the depth, which needs at least 4 "
                             f"decoder layers; this language model has {num_layers}: pass layer_list and ratio_list")
        check_schedule(layers, list(ratio_list), num_layers)
        stages = [PruneStage(layer, layer, (lambda r: lambda now, orig: stage_keep_counts(orig, r))(float(ratio)))
                  for layer, ratio in zip(layers, ratio_list)]
        if position_mode == "auto":
            lm = find_language_model(model)
            position_mode = "contiguous" if supports_contiguous_positions(model, lm) else "keep"
        super().__init__(model, stages, visual_token_ids=ids,
                         require_compression=require_compression, impl=impl, position_mode=position_mode)
        self.layer_list, self.ratio_list = layers, [float(r) for r in ratio_list]
