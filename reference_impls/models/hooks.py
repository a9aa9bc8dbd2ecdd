"""The hook protocol of token techniques (pruning / merging between decoder layers), no monkeypatching.

A hook is an object passed to a forward call (``model.prefill(..., hooks=[FastV(...)])``) or attached with
``with FastV(...)(model):``; every token technique (``reference_impls.technique.TokenTechnique``) is one. The minimal
LVLM's decoder calls these methods, and so does the Hugging Face host (``reference_impls.hosts.hf``), which gives
hooks the same ``TokenState`` and a context with the same methods. For every decoder layer ``l``, in hook order:

1. ``state = hook.before_layer(l, state, ctx)`` -- may prune/merge the chunk's tokens before layer ``l``
   (PyramidDrop). ``ctx.recompute_scores(state, rows)`` gives the attention probabilities of chosen
   query rows under layer ``l``'s own input norm, q/k projections and RoPE (single-row recomputation,
   ``ops.scored_attention``; the full ``L x L`` matrix is never formed).
2. ``rows = hook.score_rows(l, state)`` -- optional bool ``[B, T]``: query rows whose attention
   probabilities layer ``l``'s attention should sum per key. The decoder computes them with
   ``ops.scored_attention`` on those rows only (the main attention output stays SDPA's, so a hook that
   then keeps everything leaves the logits bit-identical).
3. ``state = hook.after_layer(l, state, ctx, colsum)`` with ``colsum [B, Hq, T]`` fp32 (chunk token
   space, or None) -- may prune/merge before layer ``l + 1`` (FastV, SparseVLM, LightVLM).

Pruning happens on the *chunk*: layers already run keep their full cache rows, later layers are
simply written from the shorter state (so FastV's "pruned cache for layers >= K" is automatic).
Positions travel with tokens (``position_mode="keep"`` preserves gaps) or are re-numbered
(``"contiguous"``); in the latter case the decoder records a per-layer RoPE shift in the cache so that
decoding continues the numbering of each layer.

Hooks see a ``TokenState`` (ragged, right-padded) and use the helpers below, which are built on
``reference_impls.ops`` (``select_topk``, ``gather_tokens``): ``last_token_rows``, ``head_mean``,
``keep_text_and_top_visual`` / ``select_visual`` (protect text, top-k visual), ``prune_state`` (keep indices,
``position_mode``), ``insert_tokens`` (add merged tokens at a slot), ``contiguous_positions``. Hooks act on
the *chunk* only; with ``state.phase == "extend"`` (a chunk after a non-empty cache) the built-in techniques
do nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import List, Optional

import torch
from torch import Tensor

from reference_impls.ops import gather_tokens, select_topk

POSITION_MODES = ("keep", "contiguous")


@dataclass
class TokenState:
    """The chunk's tokens between decoder layers (right padded; ``lengths`` valid per row)."""

    hidden: Tensor  # [B, T, C]
    positions: Tensor  # [B, T] int64 RoPE positions in the current layer's frame, -1 on padding
    lengths: Tensor  # [B] int64 valid tokens
    vis_mask: Tensor  # [B, T] bool: visual tokens (False on padding)
    source_index: Tensor  # [B, T] int64 index in the original chunk (-1 padding; merged: representative)
    sizes: Tensor  # [B, T] fp32 original tokens represented by each token (token merging)
    phase: str = "prefill"  # "prefill" (cache empty before this call) or "extend" (chunk after a cache)
    layer_tokens: List[Tensor] = field(default_factory=list)  # lengths seen by each layer (trace)

    @property
    def batch_size(self) -> int:
        return self.hidden.shape[0]

    @property
    def width(self) -> int:
        return self.hidden.shape[1]

    def valid_mask(self) -> Tensor:
        return torch.arange(self.width, device=self.lengths.device)[None, :] < self.lengths[:, None]

    def last_index(self) -> Tensor:
        return self.lengths - 1

    def n_visual(self) -> Tensor:
        return self.vis_mask.sum(dim=1)


class Hook:
    """Base class: the default methods do nothing (see the module docstring for the call order)."""

    def before_layer(self, layer: int, state: TokenState, ctx: "LayerContext") -> TokenState:
        return state

    def score_rows(self, layer: int, state: TokenState) -> Optional[Tensor]:
        return None

    def after_layer(self, layer: int, state: TokenState, ctx: "LayerContext", colsum: Optional[Tensor]) -> TokenState:
        return state


class LayerContext:
    """What a hook may use at layer ``layer`` of the minimal LVLM: the layer count, the cache, and scores, keys and
    queries recomputed under this layer's own projections. Hugging Face hosts give hooks the same methods
    (``reference_impls.hosts.hf.HFLayerContext``)."""

    def __init__(self, model, layer: int, cache):
        self.model = model
        self.layer = layer
        self.cache = cache
        self.n_layers = len(model.layers)
        self.renumber_positions = True  # 1-D RoPE: positions may be renumbered (position_mode="contiguous")

    def recompute_scores(self, state: TokenState, rows: Tensor) -> Tensor:
        """Attention probabilities of query ``rows`` ([B, T] bool) summed per key, ``[B, Hq, T]`` fp32,
        under layer ``self.layer``'s input norm + q/k projections + RoPE applied to ``state`` (the
        chunk's tokens only; identical to the layer's own attention when the cache was empty)."""
        layer = self.model.layers[self.layer]
        return layer.attn_scores_before(
            layer.input_norm(state.hidden), state.positions, rows, score_impl=self.model.score_impl
        )

    def keys(self, state: TokenState) -> Tensor:
        """Post-RoPE keys of the chunk under this layer's projections, ``[B, Hkv, T, D]``."""
        layer = self.model.layers[self.layer]
        return layer.attn.project_k(layer.input_norm(state.hidden), state.positions)

    def queries(self, state: TokenState) -> Tensor:
        """Post-RoPE queries of the chunk under this layer's projections, ``[B, Hq, T, D]``."""
        layer = self.model.layers[self.layer]
        return layer.attn.project_q(layer.input_norm(state.hidden), state.positions)


# --------------------------------------------------------------------------- helpers for hooks
def last_token_rows(state: TokenState) -> Tensor:
    """Bool ``[B, T]``: the last valid token of each row (the last instruction token)."""
    rows = torch.zeros(state.batch_size, state.width, dtype=torch.bool, device=state.hidden.device)
    rows[torch.arange(state.batch_size, device=rows.device), state.last_index()] = True
    return rows


def head_mean(colsum: Tensor) -> Tensor:
    """``[B, Hq, T] -> [B, T]`` mean over query heads (FastV / PDrop / SparseVLM use the head mean)."""
    return colsum.mean(dim=1)


def keep_text_and_top_visual(
    scores: Tensor, vis_mask: Tensor, lengths: Tensor, n_keep_visual, impl: str = "auto"
) -> Tensor:
    """Kept indices ``[B, K]`` (ascending, -1 padded): every valid non-visual token plus the
    ``n_keep_visual[b]`` best-scoring visual tokens of row ``b`` (ties -> lower index)."""
    B, L = vis_mask.shape
    valid = torch.arange(L, device=vis_mask.device)[None, :] < lengths[:, None]
    vis = vis_mask & valid
    text = valid & ~vis
    n_keep_visual = torch.as_tensor(n_keep_visual, device=vis.device, dtype=torch.long).expand(B)
    if bool((n_keep_visual > vis.sum(dim=1)).any()) or bool((n_keep_visual < 0).any()):
        raise ValueError("visual budget must be in [0, number of visual tokens]")
    k = text.sum(dim=1) + n_keep_visual  # non-visual tokens are protected and counted inside k
    masked = torch.where(vis, scores.float(), torch.zeros((), device=scores.device))
    return select_topk(masked, k, lengths=lengths, protect_mask=text, impl=impl)


def select_visual(state: TokenState, scores: Tensor, n_keep_visual, impl: str = "auto") -> Tensor:
    """``keep_text_and_top_visual`` on a ``TokenState``."""
    return keep_text_and_top_visual(scores, state.vis_mask, state.lengths, n_keep_visual, impl)


def prune_state(state: TokenState, keep: Tensor, position_mode: str = "keep") -> TokenState:
    """Keep tokens ``keep [B, K]`` (ascending, -1 padded) of every per-token field of ``state``."""
    if position_mode not in POSITION_MODES:
        raise ValueError(f"position_mode must be one of {POSITION_MODES}, got {position_mode!r}")
    hidden, positions = gather_tokens(state.hidden, keep, state.positions)
    valid = keep >= 0
    lengths = valid.sum(dim=1)
    safe = keep.clamp(min=0)
    vis = torch.gather(state.vis_mask, 1, safe) & valid
    src = torch.where(valid, torch.gather(state.source_index, 1, safe), -1)
    sizes = torch.where(valid, torch.gather(state.sizes, 1, safe), 0.0)
    if position_mode == "contiguous":
        positions = contiguous_positions(state.positions[:, 0], valid)
    return replace(
        state, hidden=hidden, positions=positions, lengths=lengths, vis_mask=vis, source_index=src, sizes=sizes
    )


def insert_tokens(
    state: TokenState,
    hidden: Tensor,
    positions: Tensor,
    sizes: Tensor,
    source_index: Tensor,
    counts: Tensor,
    after: Tensor,
) -> TokenState:
    """Insert ``counts[b]`` new visual tokens (``hidden [B, M, C]``, ``positions/sizes/source_index [B, M]``,
    right padded) into row ``b`` right after slot ``after[b]`` (``-1`` = at the front)."""
    B, T, C = state.hidden.shape
    M = hidden.shape[1]
    dev = state.hidden.device
    ar_t = torch.arange(T, device=dev)[None, :]
    ar_m = torch.arange(M, device=dev)[None, :]
    dest_old = ar_t + torch.where(ar_t > after[:, None], counts[:, None], 0)  # [B, T]
    dest_new = after[:, None] + 1 + ar_m  # [B, M]
    new_valid = ar_m < counts[:, None]
    width = T + (int(counts.max().item()) if M else 0)
    lengths = state.lengths + counts
    out_h = state.hidden.new_zeros(B, width + 1, C)  # one spare slot swallows padding writes
    out_pos = torch.full((B, width + 1), -1, dtype=torch.long, device=dev)
    out_vis = torch.zeros(B, width + 1, dtype=torch.bool, device=dev)
    out_src = torch.full((B, width + 1), -1, dtype=torch.long, device=dev)
    out_size = torch.zeros(B, width + 1, dtype=state.sizes.dtype, device=dev)
    old_valid = ar_t < state.lengths[:, None]
    d_old = torch.where(old_valid, dest_old, width)
    d_new = torch.where(new_valid, dest_new, width)
    for d, h, p, v, sr, sz in (
        (d_old, state.hidden, state.positions, state.vis_mask, state.source_index, state.sizes),
        (d_new, hidden, positions, new_valid, source_index, sizes),
    ):
        out_h.scatter_(1, d[..., None].expand(*d.shape, C), h.to(out_h.dtype))
        out_pos.scatter_(1, d, p)
        out_vis.scatter_(1, d, v)
        out_src.scatter_(1, d, sr)
        out_size.scatter_(1, d, sz.to(out_size.dtype))
    valid = torch.arange(width, device=dev)[None, :] < lengths[:, None]
    return replace(
        state,
        hidden=out_h[:, :width],
        positions=torch.where(valid, out_pos[:, :width], -1),
        lengths=lengths,
        vis_mask=out_vis[:, :width] & valid,
        source_index=torch.where(valid, out_src[:, :width], -1),
        sizes=torch.where(valid, out_size[:, :width], 0.0),
    )


def contiguous_positions(start: Tensor, valid: Tensor) -> Tensor:
    """``start[b] + 0, 1, 2, ...`` on valid slots, -1 elsewhere."""
    ar = torch.arange(valid.shape[1], device=valid.device)[None, :]
    return torch.where(valid, start[:, None] + ar, -1)


def check_layer(name: str, layer: int, n_layers: int, *, low: int = 0) -> None:
    if not isinstance(layer, int) or not low <= layer < n_layers:
        raise ValueError(f"{name}={layer} out of range [{low}, {n_layers})")


def check_ratio(name: str, ratio: float) -> None:
    if not (isinstance(ratio, (int, float)) and 0.0 <= float(ratio) < 1.0):
        raise ValueError(f"{name} must be in [0, 1), got {ratio!r}")
