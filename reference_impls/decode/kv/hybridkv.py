"""HybridKV (arXiv 2604.05887) [paper-abs]: static/dynamic head classification, top-down budgets, text-prior
pruning for static heads and chunk-wise retrieval for dynamic heads -- on a real per-head ragged cache.

The paper states three stages (abstract + first page, the only parts reachable with our look-up tools; the full
method section could not be read, so every concrete choice below is ours and is listed as a deviation; a
third-party summary describes static heads as stably focused and dynamic heads as depending on the visual content
of each step, which our statistic follows in spirit):

1. **Head classification** at the end of prefill, per layer and KV head, from *text-centric attention*: the
   attention that the instruction tokens (valid non-visual prompt tokens after the last visual token; the last
   prompt token when there are none) put on the visual keys, summed over those queries and averaged over the
   GQA group (``ops.scored_attention`` on those rows only). Statistic: the share of that mass held by the top
   ``top_frac`` (10%) of the visual keys. ``>= tau`` -> **static** (a stable, concentrated focus that a one-shot
   prune can keep); otherwise **dynamic** (diffuse: which keys matter depends on each decode query).
2. **Top-down budgets**: a global average budget per KV head (``budget`` rows or ``budget_ratio`` x prompt
   length) -> every layer gets ``Hkv x budget`` (uniform across layers) -> inside a layer, AdaKV-style: each
   head gets ``alpha x budget`` (safeguard, alpha = 0.2) plus its share of the layer's top
   ``(1 - alpha) x Hkv x budget`` text-prior scores (heads compared on the same probability scale).
3. **Static heads -- text-prior pruning**: keep the head's budget of keys with the largest text-prior scores,
   always keeping non-visual prompt tokens, the first ``n_sink`` and the last ``n_recent`` tokens (counted inside
   the budget; if they alone exceed it they all stay), then compact in place (``ops.kv_compact``): the head
   physically holds fewer rows. **Dynamic heads -- chunk-wise retrieval**: the head keeps its full KV, split into
   chunks of ``chunk_size`` rows with Quest-style element-wise min/max key summaries. At each decode step the
   real query (given by :class:`HybridQueryHook`, which projects it with the layer's own weights) scores every
   chunk by the upper bound ``sum_d max(q_d kmin_d, q_d kmax_d)`` (max over the GQA group;
   ``ops.decode_attention.chunk_scores``) and the head attends only to its top ``ceil(budget_h / chunk_size)``
   prompt chunks, always including the first chunk (sinks) and every chunk holding tokens generated after the
   prompt (recent text, incl. the current token; at least ``n_recent_chunks``).

Identities (tested): all heads dynamic with a chunk budget covering every chunk == full attention; all heads
static with budget >= prompt length == full attention. ``retrieval_steps`` counts decode steps that really used
chunk retrieval. Serving path: ``ops.decode_attention.sparse_decode_attention`` runs the block-sparse split-K
kernel over the selected chunk list (benchmarks); the model path gathers the selected rows for SDPA.

    with HybridKV(budget_ratio=0.1)(model):     # a VLM: the text prior ranks visual keys
        model.generate(...)

Deviations / unverified: the classification statistic, ``tau``, the text-query definition, uniform layer
budgets and the AdaKV head split are our choices (the paper's exact formulas were not available); dynamic heads
keep their full KV on the device (no offloading), so KV memory is saved on static heads only -- use
``layout="packed"`` so a layer mixing static and dynamic heads stores each head's own rows (with the default
padded layout a mixed layer allocates the dynamic heads' length for every head); the query hook
recomputes the layer's q projection (one extra small GEMM per layer and step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Union

import torch
from torch import Tensor

from reference_impls.decode.kv.base import CompressedKVCache, KVPolicy, LayerView
from reference_impls.models.kv_cache import AttendKV
from reference_impls.ops import select_topk
from reference_impls.ops.decode_attention import (
    chunk_scores,
    chunk_summaries,
    dequantize_kv,
    select_chunks,
    sparse_decode_attention,
    unpack_rows,
)
from reference_impls.technique import CacheTechnique

__all__ = ["HybridKV", "HybridKVCache", "HybridQueryHook", "classify_heads", "allocate_head_budgets", "text_query_rows"]


def text_query_rows(vis: Optional[Tensor], n_new: Tensor, chunk_len: int) -> Tensor:
    """Bool ``[B, T]``: valid non-visual rows after the last visual token (the instruction); the last valid row
    where there is none (or no visual mask)."""
    ar = torch.arange(chunk_len, device=n_new.device)[None, :]
    valid = ar < n_new[:, None]
    last = valid & (ar == (n_new - 1)[:, None])
    if vis is None:
        return last
    last_vis = torch.where(vis, ar, -1).amax(dim=1)
    rows = valid & ~vis & (ar > last_vis[:, None])
    return torch.where(rows.any(1, keepdim=True), rows, last)


def classify_heads(text_scores: Tensor, visual: Tensor, lengths: Tensor, *, top_frac: float, tau: float) -> Tensor:
    """Bool ``[B, Hkv]`` (True = static): share of the text->visual attention mass held by the top ``top_frac``
    visual keys is ``>= tau``. Rows without visual keys use all keys."""
    B, H, L = text_scores.shape
    live = torch.arange(L, device=text_scores.device)[None, None, :] < lengths[..., None]
    vis = visual[..., :L] & live
    has_vis = vis.any(-1, keepdim=True)
    pool = torch.where(has_vis, vis, live)
    s = torch.where(pool, text_scores.clamp(min=0), torch.zeros_like(text_scores))
    n = pool.sum(-1)
    k = torch.clamp((n.float() * top_frac).ceil().long(), min=1)
    srt = torch.sort(s, dim=-1, descending=True).values
    top = torch.where(torch.arange(L, device=s.device)[None, None, :] < k[..., None], srt, 0.0).sum(-1)
    share = top / s.sum(-1).clamp_min(1e-30)
    return share >= tau


def allocate_head_budgets(scores: Tensor, lengths: Tensor, budget: Tensor, alpha: float) -> Tensor:
    """AdaKV-style split of a layer budget ``Hkv x budget[b]`` over its heads ``[B, Hkv]``: ``alpha x budget``
    each plus the count of the head's entries in the layer-wide top ``(1 - alpha) x Hkv x budget`` scores."""
    B, H, L = scores.shape
    floor = (alpha * budget.float()).floor().long()  # [B]
    extra = (H * budget - H * floor).clamp(min=0)  # [B]
    live = torch.arange(L, device=scores.device)[None, None, :] < lengths[..., None]
    flat = torch.where(live, scores, torch.full_like(scores, float("-inf"))).reshape(B, H * L)
    avail = live.reshape(B, -1).sum(-1)
    k = torch.minimum(extra, avail)
    idx = select_topk(flat, k)  # [B, K] ascending, -1 padded
    head = torch.where(idx >= 0, idx // L, H)
    counts = torch.zeros(B, H + 1, dtype=torch.long, device=scores.device)
    counts.scatter_add_(1, head, torch.ones_like(head))
    return torch.minimum(floor[:, None] + counts[:, :H], lengths)


class _HybridPolicy(KVPolicy):
    """Prefill-time decisions of HybridKV (classification, budgets, static pruning)."""

    evicts_during_decode = False

    def __init__(self, owner: "HybridKVCache"):
        self.owner = owner

    def wants_scores(self, layer, phase, n_new, chunk_len):
        if phase != "prefill":
            return None
        return text_query_rows(self.owner._pending_vis(n_new.shape[0], chunk_len), n_new, chunk_len)

    def keep(self, view: LayerView):
        return self.owner._prefill_keep(view)


class HybridKVCache(CompressedKVCache):
    per_head_selection = True  # decode steps attend to a per-head selection of rows (hosts mask per head)

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        head_dim: int,
        *,
        budget: Optional[int] = None,
        budget_ratio: float = 0.1,
        tau: float = 0.5,
        top_frac: float = 0.1,
        alpha: float = 0.2,
        chunk_size: int = 16,
        n_sink: int = 4,
        n_recent: int = 8,
        n_recent_chunks: int = 1,
        force: Optional[str] = None,
        **kw,
    ):
        if budget is not None and (not isinstance(budget, int) or budget < 1):
            raise ValueError(f"budget must be a positive int, got {budget!r}")
        if not 0.0 < budget_ratio <= 1.0:
            raise ValueError(f"budget_ratio must lie in (0, 1], got {budget_ratio}")
        if not 0.0 <= alpha <= 1.0 or not 0.0 < top_frac <= 1.0:
            raise ValueError("alpha must lie in [0, 1] and top_frac in (0, 1]")
        if not (
            force is None
            or (isinstance(force, str) and force in ("static", "dynamic"))
            or (isinstance(force, torch.Tensor) and force.dtype == torch.bool)
        ):
            raise ValueError(
                f"force must be None, 'static', 'dynamic' or a bool tensor [Hkv] / [B, Hkv] "
                f"(True = static), got {force!r}"
            )
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        super().__init__(_HybridPolicy(self), n_layers, batch_size, n_kv_heads, head_dim, **kw)
        self.budget_abs, self.budget_ratio, self.tau, self.top_frac, self.alpha = (
            budget,
            budget_ratio,
            tau,
            top_frac,
            alpha,
        )
        self.chunk_size, self.n_sink, self.n_recent, self.n_recent_chunks = (
            chunk_size,
            n_sink,
            n_recent,
            n_recent_chunks,
        )
        self.force = force
        L = n_layers
        self.static = [None] * L  # [B, Hkv] bool per layer
        self.head_budget = [None] * L  # [B, Hkv] rows (static) / retrieved prompt rows (dynamic)
        self.prompt_len = [None] * L  # [B, Hkv] rows per head right after prefill
        self._query = [None] * L  # decode query [B, Hq, 1, D] from the hook
        self.retrieval_steps = 0
        self.last_selection = [None] * L  # selected chunk ids of the last decode step

    def model_hooks(self) -> list:
        """The prefill's visual mask and, at every decode step, each layer's real query."""
        return [*super().model_hooks(), HybridQueryHook(self)]

    def set_query(self, layer: int, q: Tensor) -> None:
        self._query[layer] = q

    def _pending_vis(self, B: int, T: int) -> Optional[Tensor]:
        vm = self._visual_mask
        return vm if vm is not None and vm.shape == (B, T) else None

    # ---------------------------------------------------------------- prefill: classify, budget, prune
    def _budget_rows(self, prompt_len: Tensor) -> Tensor:
        if self.budget_abs is not None:
            return torch.full_like(prompt_len, self.budget_abs)
        return torch.clamp((prompt_len.float() * self.budget_ratio).ceil().long(), min=1)

    def _prefill_keep(self, view: LayerView) -> Optional[Tensor]:
        l = view.layer
        lengths = view.lengths
        B, H = lengths.shape
        text = view.last_scores  # [B, Hkv, cap]
        static = classify_heads(text, view.visual, lengths, top_frac=self.top_frac, tau=self.tau)
        if isinstance(self.force, torch.Tensor):
            static = self.force.to(static.device).expand(B, H).clone()
        elif self.force is not None:
            static = torch.full_like(static, self.force == "static")
        budget = self._budget_rows(view.n_new)
        head_budget = allocate_head_budgets(text, lengths, budget, self.alpha)
        self.static[l], self.head_budget[l] = static, head_budget
        cap = text.shape[-1]
        ar = torch.arange(cap, device=text.device)[None, None, :]
        live = ar < lengths[..., None]
        protect = live & (~view.visual | (ar < self.n_sink) | (ar >= (lengths - self.n_recent)[..., None]))
        k = torch.where(static, torch.maximum(head_budget, protect.sum(-1)), lengths)
        k = torch.minimum(k, lengths)
        self.prompt_len[l] = k.clone()
        if bool((k >= lengths).all()):
            return None
        # dynamic heads: protect everything (kept in full)
        protect = protect | (live & ~static[..., None])
        return select_topk(text.float(), k, lengths=lengths, protect_mask=protect)

    # ---------------------------------------------------------------- decode: chunk-wise retrieval
    def update(self, layer: int, k_new: Tensor, v_new: Tensor, positions: Tensor, n_new: Tensor) -> AttendKV:
        kv = super().update(layer, k_new, v_new, positions, n_new)
        q = self._query[layer]
        self._query[layer] = None
        if self.static[layer] is None or q is None or k_new.shape[2] != 1:
            return kv  # prefill / no query: full
        static = self.static[layer]
        if bool(static.all()):
            return kv
        lengths = kv.kv_lengths  # [B, Hkv] (written)
        c = self.chunk_size
        sel = self.chunk_selection(layer, q, kv.k, lengths)
        # rows of the selected chunks (static heads select every chunk -> all their rows)
        S = sel.shape[-1]
        rows = sel[..., None] * c + torch.arange(c, device=sel.device)  # [B, Hkv, S, c]
        ok = (sel[..., None] >= 0) & (rows < lengths[..., None, None])
        rows = torch.where(ok, rows, torch.full_like(rows, -1)).reshape(*sel.shape[:2], S * c)
        rows = torch.sort(torch.where(rows >= 0, rows, torch.iinfo(torch.long).max), dim=-1).values
        n_sel = ok.reshape(*sel.shape[:2], -1).sum(-1)
        Lmax = int(n_sel.max().item())
        rows = rows[..., :Lmax]
        valid = torch.arange(Lmax, device=rows.device)[None, None, :] < n_sel[..., None]
        rows = torch.where(valid, rows, 0)
        D = kv.k.shape[-1]
        gi = rows[..., None].expand(*rows.shape, D)
        k_sel = torch.gather(kv.k, 2, gi)
        v_sel = torch.gather(kv.v, 2, gi)
        p_sel = torch.where(valid, torch.gather(kv.key_positions, 2, rows), -1)
        self.retrieval_steps += 1
        return AttendKV(k_sel, v_sel, n_sel, p_sel)

    def chunk_selection(self, layer: int, q: Tensor, k: Tensor, lengths: Tensor) -> Tensor:
        """Chunk ids ``[B, Hkv, S]`` (ascending, -1 padded) each head attends to for decode query ``q [B, Hq, D]``:
        every chunk for static heads; for dynamic heads the first chunk, the chunks of generated rows and the top
        ``ceil(budget / chunk_size)`` prompt chunks by the Quest bound."""
        static = self.static[layer]
        c = self.chunk_size
        kmin, kmax, n_ch = chunk_summaries(k, lengths, c)
        scores = chunk_scores(q, kmin, kmax, n_ch, impl=self.impl)  # [B, Hkv, C]
        # forced: the first chunk (sinks) and every chunk holding rows written after the prompt (generated text,
        # incl. the current token), at least ``n_recent_chunks``; plus ceil(budget / c) retrieved prompt chunks
        n_last = torch.clamp(n_ch - self.prompt_len[layer] // c, min=self.n_recent_chunks)
        want = (self.head_budget[layer] + c - 1) // c + n_last + 1
        want = torch.where(static, n_ch, torch.minimum(want, n_ch))
        sel = select_chunks(scores, want, n_chunks=n_ch, n_first=1, n_last=n_last)
        self.last_selection[layer] = sel
        return sel

    def attend(self, layer: int, q: Tensor, *, impl: str = "auto") -> Tensor:
        """Serving path: decode attention of ``q [B, Hq, D]`` over this layer's stored rows (the current token
        already written by ``update``) with the block-sparse split-K kernel over the selected chunks."""
        lengths = self._len[layer]
        pk = self._packed[layer]
        if pk is not None:  # packed store: summaries from a transient unpacked copy, kernel reads in place
            k_pad = unpack_rows(pk.k, pk.row0, lengths)
            if self.kv_format:
                k_pad = dequantize_kv(k_pad, unpack_rows(pk.k_scale, pk.row0, lengths, fill=1))
            sel = self.chunk_selection(layer, q, k_pad, lengths)
            o, _ = sparse_decode_attention(
                q,
                pk.k,
                pk.v,
                lengths,
                sel,
                self.chunk_size,
                k_scale=pk.k_scale,
                v_scale=pk.v_scale,
                row0=pk.row0,
                impl=impl,
            )
            return o
        lk = self._bound[layer]
        k, v = self.keys[layer][:, :, :lk], self.values[layer][:, :, :lk]
        ks = vs = None
        if self.kv_format:  # quantised storage: dequantise in the kernel
            ks, vs = self.k_scale[layer][:, :, :lk], self.v_scale[layer][:, :, :lk]
            sel = self.chunk_selection(layer, q, dequantize_kv(k, ks), lengths)
        else:
            sel = self.chunk_selection(layer, q, k, lengths)
        o, _ = sparse_decode_attention(q, k, v, lengths, sel, self.chunk_size, k_scale=ks, v_scale=vs, impl=impl)
        return o

    def summary(self) -> dict:
        """Per-layer head types and budgets (after prefill), for reports and tests."""
        return {
            "static": [None if s is None else s.tolist() for s in self.static],
            "head_budget": [None if b is None else b.tolist() for b in self.head_budget],
        }


class HybridQueryHook:
    """Decode-time model hook: gives each layer's real query (its own norm + q projection + RoPE) to the cache
    before the layer's attention, so dynamic heads can select chunks with it. Does nothing during prefill."""

    def __init__(self, cache: HybridKVCache):
        self.cache = cache

    def before_layer(self, layer, state, ctx):
        if state.phase != "prefill" and state.width == 1:
            self.cache.set_query(layer, ctx.queries(state)[:, :, 0])
        return state

    def score_rows(self, layer, state):
        return None

    def after_layer(self, layer, state, ctx, colsum):
        return state


@dataclass
class HybridKV(CacheTechnique):
    """HybridKV on a model: the parameters of :class:`HybridKVCache` (see the module docstring)."""

    name: ClassVar[str] = "hybridkv"
    budget: Optional[int] = None
    budget_ratio: float = 0.1
    tau: float = 0.5
    top_frac: float = 0.1
    alpha: float = 0.2
    chunk_size: int = 16
    n_sink: int = 4
    n_recent: int = 8
    n_recent_chunks: int = 1
    force: Union[None, str, Tensor] = None
    layout: str = "padded"
    impl: str = "auto"

    def __post_init__(self):
        self.make_cache_args(check_only=True)

    def make_cache_args(self, check_only: bool = False) -> dict:
        kw = dict(
            budget=self.budget,
            budget_ratio=self.budget_ratio,
            tau=self.tau,
            top_frac=self.top_frac,
            alpha=self.alpha,
            chunk_size=self.chunk_size,
            n_sink=self.n_sink,
            n_recent=self.n_recent,
            n_recent_chunks=self.n_recent_chunks,
            force=self.force,
            layout=self.layout,
            impl=self.impl,
        )
        if check_only:  # the cache validates its arguments: build a one-layer one-row instance
            HybridKVCache(1, 1, 1, 1, **kw)
        return kw

    def make_cache(self, spec, batch_size: int) -> HybridKVCache:
        return HybridKVCache(
            spec.n_layers,
            batch_size,
            spec.n_kv_heads,
            spec.head_dim,
            dtype=spec.dtype,
            device=spec.device,
            **self.make_cache_args(),
        )
