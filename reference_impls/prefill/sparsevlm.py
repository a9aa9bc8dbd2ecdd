"""SparseVLM (arXiv 2410.04417, v1 inference path): text-rater-guided visual token sparsification with
optional recycling of pruned tokens by DPC-kNN clustering.

1. **Raters** (once, on the decoder input embeddings): ``M = softmax_text(H_vis H_txt^T)``, ``r = mean_vis(M)``;
   raters are the question tokens (non-visual tokens after the last visual token) with ``r_j > mean(r)``.
2. **Sparsify** after each layer in ``layers`` (default ``(2, 6, 15)`` for 32 layers, scaled to other depths):
   score of visual token ``v`` = mean over raters and heads of that layer's attention probability rater -> ``v``
   (``ops.scored_attention`` with the rater rows only); keep the ``keep[stage]`` best visual tokens
   (``RETAIN_SCHEDULES``: 192 -> 300/200/110, 128 -> 303/110/36, 64 -> 66/30/17 for 576 visual tokens;
   ``SparseVLM.from_retain`` scales them to other counts; fractions of the original count are accepted too).
3. **Recycle** (optional): among this stage's pruned visual tokens take the top ``int(0.3 n) + 1`` by score,
   cluster their hidden states with DPC-kNN into ``c = int(n_rec / 10) + 1`` clusters (density
   ``exp(-mean d^2 to the c nearest)``, ``d = ||x_i - x_j|| / sqrt(C)``; ``delta`` = distance to the nearest
   denser token; centres = top-c ``density * delta``; each token joins its nearest centre), mean-merge each
   cluster and insert the merged tokens right after the kept visual tokens. They count as visual tokens
   for the next stage.

Checked against Gumpest/SparseVLMs (``score.py``, ``utils.py``: ``cluster_and_merge``, ``modelling_sparse_llama.py``).

* ``naive_select_raters`` / ``select_raters`` -- per-row loop vs batched masked softmax.
* ``naive_dpc_knn_merge`` / ``dpc_knn_merge`` -- per-token loops vs matrix form.
* ``SparseVLM`` -- the technique: ``with SparseVLM.from_retain(64)(model): model.generate(...)``.

Deviations: ragged batches (upstream asserts batch size 1); score = attention *probabilities* of the rater
rows from ``ops.scored_attention`` (fp32); DPC density ties are broken by index (upstream adds 1e-6
random noise); merged tokens get the **mean position** of their members with ``position_mode="keep"``
(upstream truncates the position ids, i.e. ``"contiguous"``, also offered) -- slot order and RoPE order
may then disagree inside the image span (masking follows slot order); if a row has no question token
after its last visual token, the last token is the only rater, and if no question token exceeds the
mean rating (e.g. a one-token question) all question tokens rate; a budget is clamped to the current
visual count, so a budget covering it keeps every token (upstream clamps to ``n_vis - 1`` and therefore
always drops at least one); on M-RoPE hosts (Qwen2-VL) a merged token takes the 3-D position of its
cluster centre (positions there cannot be averaged into a new RoPE table); no v2 options (RoPE-bias
normalisation, head selection).
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
    contiguous_positions,
    head_mean,
    insert_tokens,
    keep_text_and_top_visual,
    prune_state,
)
from reference_impls.technique import TokenTechnique, UnsupportedModel

__all__ = [
    "RETAIN_SCHEDULES",
    "naive_select_raters",
    "select_raters",
    "naive_dpc_knn_merge",
    "dpc_knn_merge",
    "recycle_count",
    "default_layers",
    "SparseVLM",
]

RETAIN_SCHEDULES = {192: (300, 200, 110), 128: (303, 110, 36), 64: (66, 30, 17)}  # for 576 visual tokens


def _question_mask(vis_mask: Tensor, lengths: Tensor) -> Tensor:
    """Valid non-visual tokens after each row's last visual token (the question)."""
    B, L = vis_mask.shape
    ar = torch.arange(L, device=vis_mask.device)[None, :]
    last_vis = torch.where(vis_mask, ar, -1).amax(dim=1)
    q = (ar > last_vis[:, None]) & (ar < lengths[:, None]) & ~vis_mask
    # fallback: the last token rates alone when a row has no question (or no visual token)
    lonely = ~q.any(dim=1) | (last_vis < 0)
    last = torch.zeros_like(q)
    last[torch.arange(B, device=q.device), lengths - 1] = True
    return torch.where(lonely[:, None], last, q), lonely


def naive_select_raters(hidden: Tensor, vis_mask: Tensor, lengths: Tensor) -> Tensor:
    """Spec: bool ``[B, L]`` rater mask, one row at a time."""
    B, L, _ = hidden.shape
    qmask, lonely = _question_mask(vis_mask, lengths)
    out = torch.zeros(B, L, dtype=torch.bool)
    for b in range(B):
        if bool(lonely[b]):
            out[b, int(lengths[b]) - 1] = True
            continue
        vis_idx = vis_mask[b].nonzero().flatten().tolist()
        txt_idx = qmask[b].nonzero().flatten().tolist()
        hv, ht = hidden[b, vis_idx].double(), hidden[b, txt_idx].double()
        r = (hv @ ht.T).softmax(dim=1).mean(dim=0)  # [n_txt]
        above = [i for j, i in enumerate(txt_idx) if bool(r[j] > r.mean())]
        for i in above or txt_idx:  # all equal (e.g. one question token): every question token rates
            out[b, i] = True
    return out


def select_raters(hidden: Tensor, vis_mask: Tensor, lengths: Tensor) -> Tensor:
    """Batched ``naive_select_raters`` (masked softmax over question tokens, masked mean over visual tokens)."""
    qmask, lonely = _question_mask(vis_mask, lengths)
    h = hidden.float()
    logits = torch.einsum("bvc,btc->bvt", h, h)  # [B, L(vis), L(txt)]
    logits = logits.masked_fill(~qmask[:, None, :], float("-inf"))
    m = torch.softmax(logits, dim=-1).nan_to_num(0.0)
    vis = vis_mask.float()[..., None]
    r = (m * vis).sum(1) / vis.sum(1).clamp(min=1)  # [B, L(txt)]
    mean_r = (r * qmask).sum(1, keepdim=True) / qmask.sum(1, keepdim=True).clamp(min=1)
    raters = qmask & (r > mean_r)
    raters = torch.where(raters.any(dim=1, keepdim=True), raters, qmask)
    return torch.where(lonely[:, None], qmask, raters)


def recycle_count(n_pruned: int) -> int:
    """Upstream: the top 30% (+1) of this stage's pruned tokens are recycled (0 if nothing was pruned)."""
    return 0 if n_pruned == 0 else min(n_pruned, int(n_pruned * 0.3) + 1)


def _cluster_count(n: int) -> int:
    return min(n, int(n / 10) + 1)


def naive_dpc_knn_merge(x: Tensor, n_clusters: int):
    """Spec of DPC-kNN clustering + mean merge on ``x [N, C]`` with per-token loops.

    Returns ``(merged [c, C], assign [N] cluster id, centers [c] token indices in score order)``."""
    N, C = x.shape
    if not 1 <= n_clusters <= N:
        raise ValueError(f"n_clusters must be in [1, {N}]")
    xd = x.double()
    dist = [[float((xd[i] - xd[j]).norm()) / math.sqrt(C) for j in range(N)] for i in range(N)]
    density = []
    for i in range(N):
        nearest = sorted(dist[i])[:n_clusters]
        density.append(math.exp(-sum(d * d for d in nearest) / n_clusters))

    def denser(j, i):  # is token j "denser" than token i (ties: lower index wins)
        return density[j] > density[i] or (density[j] == density[i] and j < i)

    max_d = max(max(row) for row in dist)
    delta = [min([dist[i][j] for j in range(N) if denser(j, i)], default=max_d) for i in range(N)]
    score = [delta[i] * density[i] for i in range(N)]
    centers = sorted(range(N), key=lambda i: (-score[i], i))[:n_clusters]
    assign = []
    for i in range(N):
        if i in centers:
            assign.append(centers.index(i))
        else:
            assign.append(min(range(n_clusters), key=lambda c: (dist[i][centers[c]], c)))
    merged = torch.stack([xd[[i for i in range(N) if assign[i] == c]].mean(0) for c in range(n_clusters)])
    return merged.to(x.dtype), torch.tensor(assign), torch.tensor(centers)


def dpc_knn_merge(x: Tensor, n_clusters: int):
    """Matrix form of ``naive_dpc_knn_merge`` (same outputs)."""
    N, C = x.shape
    if not 1 <= n_clusters <= N:
        raise ValueError(f"n_clusters must be in [1, {N}]")
    xd = x.double()
    dist = torch.cdist(xd, xd) / math.sqrt(C)
    nearest = dist.sort(dim=1).values[:, :n_clusters]
    density = torch.exp(-(nearest**2).mean(dim=1))
    idx = torch.arange(N, device=x.device)
    denser = (density[None, :] > density[:, None]) | (
        (density[None, :] == density[:, None]) & (idx[None, :] < idx[:, None])
    )
    delta = torch.where(denser, dist, dist.max()).amin(dim=1)
    score = delta * density
    # top-c by score, ties -> lower index (stable sort on -score)
    centers = torch.sort(-score, stable=True).indices[:n_clusters]
    to_centre = dist[:, centers]  # [N, c]
    assign = torch.sort(to_centre, dim=1, stable=True).indices[:, 0]
    assign[centers] = torch.arange(n_clusters, device=x.device)
    merged = torch.zeros(n_clusters, C, dtype=torch.float64, device=x.device).index_add_(0, assign, xd)
    merged = merged / torch.bincount(assign, minlength=n_clusters)[:, None]
    return merged.to(x.dtype), assign, centers


def default_layers(n_layers: int) -> list[int]:
    """Upstream's stage layers ``(2, 6, 15)`` of 32-layer LLaVA, scaled to ``n_layers`` (rounded, deduplicated,
    below ``n_layers - 1``)."""
    layers = sorted({int(math.floor(l * n_layers / 32 + 0.5)) for l in (2, 6, 15)})
    return [l for l in layers if l < n_layers - 1] or [0]


@dataclass
class SparseVLM(TokenTechnique):
    """SparseVLM v1 (prefill only). ``keep[s]`` visual tokens survive stage ``s``: an int is a count, a float in
    ``(0, 1]`` a fraction of the row's original visual tokens; a budget at least the current visual count keeps
    them all (the identity). ``layers=None``: upstream's ``(2, 6, 15)`` scaled to the model's depth."""

    name: ClassVar[str] = "sparsevlm"
    layers: Optional[Sequence[int]] = None
    keep: Sequence = RETAIN_SCHEDULES[192]
    recycle: bool = True
    position_mode: str = "keep"
    impl: str = "auto"
    _raters: Optional[Tensor] = field(default=None, init=False, repr=False, compare=False)  # [B, T_orig]
    _n_vis_orig: Optional[Tensor] = field(default=None, init=False, repr=False, compare=False)
    _stages: list = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self):
        keep = list(self.keep)
        if not keep or any(isinstance(k, bool) or not isinstance(k, (int, float)) for k in keep):
            raise ValueError(f"keep must be a non-empty list of counts (int) or fractions (float), got {self.keep}")
        if any(isinstance(k, float) and not 0.0 < k <= 1.0 for k in keep) or any(k < 0 for k in keep):
            raise ValueError(f"keep counts must be >= 0 and fractions in (0, 1], got {self.keep}")
        if all(isinstance(k, int) for k in keep) and keep != sorted(keep, reverse=True):
            raise ValueError(f"keep must be non-increasing, got {self.keep}")
        if all(isinstance(k, float) for k in keep) and keep != sorted(keep, reverse=True):
            raise ValueError(f"keep must be non-increasing, got {self.keep}")
        self.keep = tuple(keep)
        if self.layers is not None:
            layers = list(self.layers)
            if len(layers) != len(keep) or layers != sorted(set(layers)) or min(layers) < 0:
                raise ValueError(f"layers must be strictly increasing, >= 0 and as many as keep, got {self.layers}")
            self.layers = tuple(layers)
        if self.position_mode not in POSITION_MODES:
            raise ValueError(f"position_mode must be one of {POSITION_MODES}, got {self.position_mode!r}")

    @classmethod
    def from_retain(cls, retain: int, n_visual: int = 576, layers: Sequence[int] = (2, 6, 15), **kw):
        """Upstream schedule for ``retain`` in {192, 128, 64}, scaled from 576 to ``n_visual`` tokens."""
        if retain not in RETAIN_SCHEDULES:
            raise ValueError(f"retain must be one of {sorted(RETAIN_SCHEDULES)}")
        keep = [min(n_visual, int(math.floor(k * n_visual / 576 + 0.5))) for k in RETAIN_SCHEDULES[retain]]
        return cls(layers=layers, keep=keep, **kw)

    def stage_layers(self, n_layers: int) -> list[int]:
        layers = list(self.layers) if self.layers is not None else default_layers(n_layers)
        if self.layers is None and len(layers) < len(self.keep):
            raise ValueError(f"{n_layers} layers are too few for {len(self.keep)} stages; pass layers=")
        if layers[-1] >= n_layers - 1:
            raise ValueError(f"layers must be < n_layers - 1 = {n_layers - 1}, got {layers}")
        return layers[: len(self.keep)]

    def check_host(self, host) -> None:
        try:
            self.stage_layers(host.n_layers)
        except ValueError as exc:
            raise UnsupportedModel(f"sparsevlm: {exc}") from None
        if self.position_mode == "contiguous" and getattr(host, "mrope", False):
            raise UnsupportedModel("sparsevlm: position_mode='contiguous' needs 1-D RoPE (not Qwen2-VL's M-RoPE)")

    def before_layer(self, layer: int, state: TokenState, ctx: LayerContext) -> TokenState:
        if state.phase == "prefill" and layer == 0:
            self._stages = self.stage_layers(ctx.n_layers)
            self._raters = select_raters(state.hidden, state.vis_mask, state.lengths)
            self._n_vis_orig = state.n_visual()
        return state

    def stage_budget(self, stage: int, state: TokenState) -> Tensor:
        """Visual tokens kept per row at ``stage``, clamped to the current visual count."""
        k = self.keep[stage]
        n_keep = (
            torch.floor(self._n_vis_orig.double() * k + 1e-9).long()
            if isinstance(k, float)
            else torch.full_like(state.lengths, int(k))
        )
        return torch.minimum(n_keep, state.n_visual())

    def _rows(self, state: TokenState) -> Tensor:
        src = state.source_index.clamp(min=0)
        return torch.gather(self._raters, 1, src) & (state.source_index >= 0) & ~state.vis_mask

    def score_rows(self, layer: int, state: TokenState):
        if state.phase == "prefill" and layer in self._stages:
            return self._rows(state)
        return None

    def after_layer(self, layer: int, state: TokenState, ctx: LayerContext, colsum) -> TokenState:
        if state.phase != "prefill" or layer not in self._stages:
            return state
        n_raters = self._rows(state).sum(dim=1).clamp(min=1)
        scores = head_mean(colsum) / n_raters[:, None]
        n_keep = self.stage_budget(self._stages.index(layer), state)
        keep = keep_text_and_top_visual(scores, state.vis_mask, state.lengths, n_keep, self.impl)
        kept_mask = torch.zeros_like(state.vis_mask).scatter_(1, keep.clamp(min=0), keep >= 0)
        pruned = state.vis_mask & ~kept_mask
        new = prune_state(state, keep, "keep")
        if self.recycle and bool(pruned.any()):
            new = self._recycle(state, new, scores, pruned)
        if self.position_mode == "contiguous":
            new.positions = contiguous_positions(state.positions[:, 0], new.valid_mask())
        return new

    def _recycle(self, old: TokenState, new: TokenState, scores: Tensor, pruned: Tensor) -> TokenState:
        B, C = old.batch_size, old.hidden.shape[-1]
        groups = []
        for b in range(B):
            idx = pruned[b].nonzero().flatten()
            n_rec = recycle_count(len(idx))
            if n_rec == 0:  # this row lost no token at this stage
                empty = torch.zeros(0, dtype=torch.long, device=idx.device)
                groups.append((old.hidden.new_zeros(0, C), empty, old.sizes.new_zeros(0), empty))
                continue
            order = torch.sort(-scores[b, idx].float(), stable=True).indices[:n_rec]
            rec = idx[order].sort().values
            merged, assign, centers = dpc_knn_merge(old.hidden[b, rec], _cluster_count(n_rec))
            pos = torch.stack([old.positions[b, rec][assign == c].double().mean() for c in range(len(centers))])
            size = torch.stack([old.sizes[b, rec][assign == c].sum() for c in range(len(centers))])
            groups.append((merged, pos.floor().long(), size, old.source_index[b, rec[centers]]))
        M = max(len(g[0]) for g in groups)
        hid = old.hidden.new_zeros(B, M, C)
        pos = torch.full((B, M), -1, dtype=torch.long, device=hid.device)
        size = torch.zeros(B, M, dtype=old.sizes.dtype, device=hid.device)
        src = torch.full((B, M), -1, dtype=torch.long, device=hid.device)
        counts = torch.zeros(B, dtype=torch.long, device=hid.device)
        for b, (m, p, s, sr) in enumerate(groups):
            n = len(m)
            hid[b, :n], pos[b, :n], size[b, :n], src[b, :n], counts[b] = m, p, s, sr, n
        # insert after the last slot that belongs to the image span (by original chunk index)
        ar = torch.arange(new.width, device=hid.device)[None, :]
        last_vis_src = torch.where(old.vis_mask, old.source_index, -1).amax(dim=1)
        in_span = new.valid_mask() & (new.source_index <= last_vis_src[:, None])
        after = torch.where(in_span, ar, -1).amax(dim=1)
        return insert_tokens(new, hid, pos, size, src, counts, after)
