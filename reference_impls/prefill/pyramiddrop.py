"""PyramidDrop (arXiv 2410.17247): drop visual tokens stage by stage with a growing rate.

At each stage boundary ``l`` (default ``[8, 16, 24]`` for 32 layers, scaled to other depths as
``round(n_layers * j / 4)``), before layer ``l`` runs: the last instruction token's query and all keys
are recomputed with layer ``l``'s input RMSNorm, q/k projections and RoPE (a single-row attention --
FlashAttention-compatible, upstream issue #17), softmax over all keys, mean over heads, and the
``int(N_vis_orig * ratio_list[stage])`` best visual tokens are kept (default ratios
``0.5, 0.25, 0.125``, lambda = 0.5). Positions are then re-indexed contiguously; the host records a
per-layer RoPE shift so decoding continues the contiguous numbering (upstream subtracts the dropped
count from decode positions at each boundary -- the same thing).

    with PyramidDrop(ratio_list=(0.5, 0.25, 0.125))(model):
        model.generate(...)

Checked against the upstream code (Cooperx521/PyramidDrop ``modeling_llama_pdrop.py``): ranking uses
the *next* layer's projections on the hidden states after layer ``l - 1`` and keep counts are floors of
the original visual count times the stage ratio -- as here.

* ``naive_pyramiddrop_keep(h_norm, wq, wk, ...)`` -- spec on plain tensors (eager single-row softmax,
  Python loops).
* ``pyramiddrop_select`` -- the optimised selection from ``ops.scored_attention``'s single-row column sums
  (``ops.select_topk``); ``PyramidDrop`` -- the technique.

Deviations: ragged batches with any image position (upstream: one contiguous image span per row,
bs loop); ties go to the lower index (upstream ``torch.topk`` order is unspecified); scores in fp32
(upstream casts the softmax to the model dtype); ``position_mode="auto"`` (the default) renumbers
positions where the host's RoPE is 1-D and keeps them on M-RoPE hosts (Qwen2-VL / Qwen2.5-VL), whose
3-D positions cannot be renumbered -- a deviation there; ``"keep"`` is offered everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Optional, Sequence

import torch
from torch import Tensor

from reference_impls.models.hooks import (
    POSITION_MODES,
    LayerContext,
    TokenState,
    head_mean,
    keep_text_and_top_visual,
    last_token_rows,
    prune_state,
)
from reference_impls.technique import TokenTechnique, UnsupportedModel

__all__ = ["default_layer_list", "stage_keep_counts", "naive_pyramiddrop_keep", "pyramiddrop_select", "PyramidDrop"]


def default_layer_list(n_layers: int) -> list[int]:
    """``[8, 16, 24]`` for 32 layers; ``round(n_layers * j / 4)`` for j = 1..3 otherwise (deduplicated)."""
    layers = sorted({int(math.floor(n_layers * j / 4 + 0.5)) for j in (1, 2, 3)})
    return [l for l in layers if 1 <= l < n_layers]


def check_schedule(layer_list: Sequence[int], ratio_list: Sequence[float], n_layers: Optional[int] = None) -> None:
    if len(layer_list) != len(ratio_list) or len(layer_list) == 0:
        raise ValueError("layer_list and ratio_list must be non-empty and of equal length")
    if any(not isinstance(l, int) for l in layer_list) or list(layer_list) != sorted(set(layer_list)):
        raise ValueError(f"layer_list must be strictly increasing ints, got {layer_list}")
    if layer_list[0] < 1 or (n_layers is not None and layer_list[-1] >= n_layers):
        raise ValueError(f"layer_list entries must lie in [1, n_layers), got {layer_list}")
    prev = 1.0
    for r in ratio_list:
        if not 0.0 <= float(r) <= prev:
            raise ValueError(f"ratio_list must be non-increasing retain fractions in [0, 1], got {ratio_list}")
        prev = float(r)


def stage_keep_counts(n_visual_orig: Tensor, ratio: float) -> Tensor:
    """``int(N_vis_orig * ratio)`` per row (floor, as upstream)."""
    return torch.floor(n_visual_orig.double() * float(ratio) + 1e-9).long()


def naive_pyramiddrop_keep(
    h_norm: Tensor,
    wq: Tensor,
    wk: Tensor,
    positions: Tensor,
    vis_mask: Tensor,
    lengths: Tensor,
    n_keep: Tensor,
    *,
    n_heads: int,
    n_kv_heads: int,
    rope_theta: float = 10000.0,
    bq: Optional[Tensor] = None,
    bk: Optional[Tensor] = None,
) -> Tensor:
    """Spec of one boundary. ``h_norm [B, L, C]``: layer-``l`` normalised hidden states; ``wq [Hq*D, C]``,
    ``wk [Hkv*D, C]`` (nn.Linear layout); returns kept indices ``[B, K]`` (ascending, -1 padded)."""
    B, L, C = h_norm.shape
    D = wq.shape[0] // n_heads
    G = n_heads // n_kv_heads
    inv = 1.0 / (rope_theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    rows = []
    for b in range(B):
        n = int(lengths[b])
        h = h_norm[b, :n].double()
        q = h[n - 1] @ wq.double().T + (0 if bq is None else bq.double())  # last token only
        k = h @ wk.double().T + (0 if bk is None else bk.double())
        q, k = q.view(n_heads, D), k.view(n, n_kv_heads, D)

        def rope(x, pos):
            ang = pos.double()[..., None] * inv
            cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)
            return x * cos + torch.cat([-x[..., D // 2 :], x[..., : D // 2]], -1) * sin

        q = rope(q, positions[b, n - 1].expand(n_heads))
        k = rope(k, positions[b, :n, None].expand(n, n_kv_heads))
        probs = torch.stack([((k[:, hq // G] @ q[hq]) / math.sqrt(D)).softmax(0) for hq in range(n_heads)])
        score = probs.mean(0)
        vis = [i for i in range(n) if bool(vis_mask[b, i])]
        ranked = sorted(vis, key=lambda i: (-float(score[i]), i))
        kept = sorted(set(range(n)) - set(vis) | set(ranked[: int(n_keep[b])]))
        rows.append(kept)
    width = max(len(r) for r in rows)
    return torch.tensor([r + [-1] * (width - len(r)) for r in rows], dtype=torch.long)


def pyramiddrop_select(colsum: Tensor, vis_mask: Tensor, lengths: Tensor, n_keep: Tensor, impl: str = "auto") -> Tensor:
    """Optimised selection from the single-row ``colsum [B, Hq, L]`` (``ops.scored_attention``)."""
    return keep_text_and_top_visual(head_mean(colsum), vis_mask, lengths, n_keep, impl)


class PyramidSchedule(TokenTechnique):
    """Base of the pyramid techniques (PyramidDrop, LightVLM): stage layers ``layer_list`` (None: the default for the
    model's depth) with retain fractions ``ratio_list`` of the original visual tokens, validated here."""

    def _check_schedule(self) -> None:
        if self.layer_list is not None:
            self.layer_list = list(self.layer_list)
            check_schedule(self.layer_list, list(self.ratio_list))
        elif not all(0 <= float(r) <= 1 for r in self.ratio_list):
            raise ValueError(f"ratio_list must be retain fractions in [0, 1], got {self.ratio_list}")
        self.ratio_list = tuple(float(r) for r in self.ratio_list)

    def check_host(self, host) -> None:
        try:
            self.resolved_layers(host.n_layers)
        except ValueError as exc:
            raise UnsupportedModel(f"{self.name}: {exc}") from None

    def resolved_layers(self, n_layers: int) -> list[int]:
        layers = self.layer_list if self.layer_list is not None else default_layer_list(n_layers)
        check_schedule(layers, self.ratio_list, n_layers)
        return layers

    def stage_keep_count(self, layer: int, state: TokenState, ctx: LayerContext) -> Optional[Tensor]:
        """Visual tokens to keep per row ``[B]`` before ``layer`` if it is a stage layer of a prefill, else None
        (nothing to do). Records the original visual counts at layer 0."""
        if state.phase != "prefill":
            return None
        layers = self.resolved_layers(ctx.n_layers)
        if layer == 0:
            self._n_vis_orig = state.n_visual()
        if layer not in layers:
            return None
        n_keep = stage_keep_counts(self._n_vis_orig, self.ratio_list[layers.index(layer)])
        return torch.minimum(n_keep, state.n_visual())


@dataclass
class PyramidDrop(PyramidSchedule):
    """PyramidDrop: drop visual tokens before each layer of ``layer_list`` (prefill only)."""

    name: ClassVar[str] = "pyramiddrop"
    layer_list: Optional[Sequence[int]] = None
    ratio_list: Sequence[float] = (0.5, 0.25, 0.125)
    position_mode: str = "auto"
    impl: str = "auto"
    _n_vis_orig: Optional[Tensor] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.position_mode not in (*POSITION_MODES, "auto"):
            raise ValueError(f"position_mode must be 'auto' or one of {POSITION_MODES}, got {self.position_mode!r}")
        self._check_schedule()

    def check_host(self, host) -> None:
        super().check_host(host)
        if self.position_mode == "contiguous" and getattr(host, "mrope", False):
            raise UnsupportedModel(
                "pyramiddrop: position_mode='contiguous' needs 1-D RoPE; use 'auto' or 'keep' on "
                "M-RoPE models (Qwen2-VL)"
            )

    def before_layer(self, layer: int, state: TokenState, ctx: LayerContext) -> TokenState:
        n_keep = self.stage_keep_count(layer, state, ctx)
        if n_keep is None:
            return state
        colsum = ctx.recompute_scores(state, last_token_rows(state))
        keep = pyramiddrop_select(colsum, state.vis_mask, state.lengths, n_keep, self.impl)
        mode = self.position_mode
        if mode == "auto":
            mode = "contiguous" if ctx.renumber_positions else "keep"
        return prune_state(state, keep, mode)
