"""Palu: KV-cache compression with low-rank projection (Chang et al., arXiv 2407.21118).

Why this paper: Palu is the post-training low-rank KV method of the catalogue with public code, applicable to any
existing checkpoint (DeepSeek-V2's latent attention needs pre-training; Eigen Attention, LoRC and MatryoshkaKV use
related low-rank projections).

The method (checked against the official code, github.com/shadowpa0327/Palu): factor the key and value projections
``W [Hkv * D, C]`` group by group -- a group is ``group_size`` consecutive KV heads ("G-LRD"; 1 head = M-LRD, all
heads = J-LRD) -- with a truncated SVD, ``W_g ~ L_g R_g`` with ``L_g = U_r sqrt(S_r)`` and ``R_g = sqrt(S_r) V_r^T``.
The cache stores the **latent** ``h = x R^T`` (``r`` numbers per group and token instead of ``group_size * D``) and
attention reconstructs ``k = h_g L_g^T`` on the fly, then applies RoPE at the key's position (RoPE sits between
the projection and the dot product, so keys must be reconstructed). For values the reconstruction matrix is moved
after the attention sum (``sum_j p_j h_j L^T = (sum_j p_j h_j) L^T``, the paper's matrix fusion into the output
projection). With calibration activations the SVD is *whitened* (SVD-LLM, as Palu's default): decompose ``W S``
with ``S S^T = X^T X`` (Cholesky) and fold ``S^-1`` into ``R``, which minimises the error on the activations rather
than on the weights.

Functions and classes
- ``naive_low_rank_factors``: the specification of one factorisation (plain or whitened SVD).
- ``group_low_rank``: G-LRD of a projection weight into per-group factors (``GroupLowRank``).
- ``naive_palu_attention``: reconstruct every key and value from the latents, rotate the keys, attend (loops over
  tokens); ``palu_attention``: vectorised, values attended in latent space. Tested equal.
- ``gram_of_projection_inputs``: ``X^T X`` of the inputs of every layer's key/value projection on calibration ids.
- ``Palu``: applied to a ``MinimalLVLM`` as a context manager, swaps each layer's ``k_proj`` / ``v_proj`` for the
  factored projection -- numerically what a latent cache reconstructs -- and restores them on exit.

Deviations
- Ranks are uniform: ``rank_ratio`` of each group's output width (rounded, at least 1); Palu's Fisher-information
  rank search and its rounding to multiples of 32 are not implemented.
- No latent quantisation / Hadamard transform (Palu's optional quantisation integration) and no fused GPU kernel;
  applied to the model the reconstruction happens in the projection, so the model's cache stores full keys and
  values (``palu_attention`` is the latent-cache path; ``latent_bytes_ratio`` the size it would take).
- Whitening falls back, as the official code, to adding ``(1e-3 - smallest eigenvalue) I`` when ``X^T X`` is not
  positive definite.

Identity: ``rank_ratio = 1`` keeps the projections unchanged (no factorisation); a full-rank factorisation
reproduces them up to SVD rounding (tested to 1e-5).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

__all__ = [
    "naive_low_rank_factors",
    "GroupLowRank",
    "group_low_rank",
    "naive_palu_attention",
    "palu_attention",
    "gram_of_projection_inputs",
    "Palu",
]


def _whitening(gram: Tensor) -> Tensor:
    """Cholesky factor S (lower) of ``X^T X``; not positive definite -> add (1e-3 - min eigenvalue) I first."""
    g = gram.double()
    try:
        return torch.linalg.cholesky(g)
    except RuntimeError:
        smallest = torch.linalg.eigvalsh(g)[0]
        return torch.linalg.cholesky(g + (1e-3 - smallest) * torch.eye(g.shape[0], dtype=g.dtype, device=g.device))


def naive_low_rank_factors(weight: Tensor, rank: int, gram: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """``weight [out, in] ~ L [out, rank] @ R [rank, in]`` by truncated SVD, split as ``U sqrt(S)`` and
    ``sqrt(S) V^T``; with ``gram = X^T X [in, in]`` the SVD is whitened (``W S = U S V^T``, ``R = sqrt(S) V^T S^-1``).
    Computed in fp64, returned in the weight's dtype."""
    out_features, in_features = weight.shape
    if not 1 <= rank <= min(out_features, in_features):
        raise ValueError(f"rank must lie in [1, {min(out_features, in_features)}], got {rank}")
    w = weight.double()
    if gram is None:
        U, S, Vt = torch.linalg.svd(w, full_matrices=False)
        right = Vt[:rank]
    else:
        if gram.shape != (in_features, in_features):
            raise ValueError(f"gram must be [{in_features}, {in_features}], got {tuple(gram.shape)}")
        scale = _whitening(gram)
        U, S, Vt = torch.linalg.svd(w @ scale, full_matrices=False)
        right = Vt[:rank] @ torch.linalg.inv(scale)
    root = S[:rank].sqrt()
    return (U[:, :rank] * root).to(weight.dtype), (root[:, None] * right).to(weight.dtype)


@dataclass
class GroupLowRank:
    """G-LRD factors of one projection: group g covers output rows ``g * width .. (g + 1) * width`` (``width =
    group_size * head_dim``); ``down [sum(ranks), in]`` stacks the ``R_g`` (latent = ``x @ down.T``), ``up[g]``
    is ``L_g [width, rank_g]``; ``bias`` (or None) is added after the reconstruction."""

    down: Tensor
    up: list
    ranks: list
    head_dim: int
    group_size: int
    bias: Optional[Tensor] = None

    def latent(self, x: Tensor) -> Tensor:
        return x @ self.down.T

    def reconstruct(self, h: Tensor) -> Tensor:
        """Latents ``[..., sum(ranks)]`` -> projection outputs ``[..., n_groups * width]``."""
        parts, start = [], 0
        for r, up in zip(self.ranks, self.up):
            parts.append(h[..., start : start + r] @ up.T.to(h.dtype))
            start += r
        out = torch.cat(parts, dim=-1)
        return out if self.bias is None else out + self.bias.to(h.dtype)

    def latent_bytes_ratio(self) -> float:
        """Latent numbers per token over the full projection's outputs (the cache-size ratio)."""
        return sum(self.ranks) / (len(self.ranks) * self.group_size * self.head_dim)


def group_low_rank(
    weight: Tensor,
    head_dim: int,
    group_size: int,
    rank_ratio: float,
    gram: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
) -> GroupLowRank:
    """G-LRD: factor ``weight [n_heads * head_dim, in]`` per group of ``group_size`` heads, rank
    ``max(1, round(rank_ratio * group_size * head_dim))`` each (capped by the input width)."""
    out_features, in_features = weight.shape
    if out_features % head_dim or (out_features // head_dim) % group_size:
        raise ValueError(
            f"{out_features} output rows are not a whole number of groups of {group_size} heads of {head_dim}"
        )
    if not 0.0 < rank_ratio <= 1.0:
        raise ValueError(f"rank_ratio must lie in (0, 1], got {rank_ratio}")
    width = group_size * head_dim
    rank = min(in_features, width, max(1, round(rank_ratio * width)))
    downs, ups = [], []
    for g in range(out_features // width):
        up, down = naive_low_rank_factors(weight[g * width : (g + 1) * width], rank, gram)
        ups.append(up)
        downs.append(down)
    return GroupLowRank(torch.cat(downs), ups, [rank] * len(ups), head_dim, group_size, bias)


# --------------------------------------------------------------------------------------------------------------
# Attention over latents
# --------------------------------------------------------------------------------------------------------------
def naive_palu_attention(
    q: Tensor,
    latent_k: Tensor,
    latent_v: Tensor,
    proj_k: GroupLowRank,
    proj_v: GroupLowRank,
    key_positions: Tensor,
    rope_base: float,
    lengths: Tensor,
    scale: Optional[float] = None,
) -> Tensor:
    """One decode query per row over a latent cache: ``q [B, Hq, D]`` (already rotated), latents
    ``[B, L, sum(ranks)]``, ``key_positions [B, L]``, ``lengths [B]`` valid tokens. Reconstructs every key and
    value token by token, rotates the keys (half layout, ``rope_base``), softmax attention in fp64 with GQA.
    Returns ``[B, Hq, D]``."""
    from reference_impls.ops.rope import rope

    B, Hq, D = q.shape
    out = torch.zeros(B, Hq, D, dtype=torch.float64, device=q.device)
    scale = D**-0.5 if scale is None else scale
    for b in range(B):
        n = int(lengths[b])
        keys = torch.stack([proj_k.reconstruct(latent_k[b, j].double()) for j in range(n)])  # [n, Hkv * D]
        vals = torch.stack([proj_v.reconstruct(latent_v[b, j].double()) for j in range(n)])
        Hkv = keys.shape[-1] // D
        keys = keys.reshape(n, Hkv, D).transpose(0, 1)  # [Hkv, n, D]
        vals = vals.reshape(n, Hkv, D).transpose(0, 1)
        keys = rope(keys, key_positions[b, :n], base=rope_base, layout="half").double()
        for h in range(Hq):
            kv = h // (Hq // Hkv)
            p = torch.softmax(keys[kv] @ q[b, h].double() * scale, dim=0)
            out[b, h] = p @ vals[kv]
    return out


def palu_attention(
    q: Tensor,
    latent_k: Tensor,
    latent_v: Tensor,
    proj_k: GroupLowRank,
    proj_v: GroupLowRank,
    key_positions: Tensor,
    rope_base: float,
    lengths: Tensor,
    scale: Optional[float] = None,
) -> Tensor:
    """Vectorised ``naive_palu_attention``: keys reconstructed and rotated in one batch, values attended in latent
    space (``(sum_j p_j h_j) L_g^T`` per group). fp32."""
    from reference_impls.ops.rope import rope

    B, Hq, D = q.shape
    L = latent_k.shape[1]
    scale = D**-0.5 if scale is None else scale
    keys = proj_k.reconstruct(latent_k.float())  # [B, L, Hkv * D]
    Hkv = keys.shape[-1] // D
    keys = rope(
        keys.reshape(B, L, Hkv, D).transpose(1, 2), key_positions[:, None, :], base=rope_base, layout="half"
    )  # [B, Hkv, L, D]
    G = Hq // Hkv
    scores = torch.einsum("bkgd,bkld->bkgl", q.float().reshape(B, Hkv, G, D), keys) * scale
    valid = torch.arange(L, device=q.device)[None, :] < lengths[:, None]
    probs = torch.softmax(scores.masked_fill(~valid[:, None, None, :], float("-inf")), dim=-1)  # [B, Hkv, G, L]
    out = torch.empty(B, Hkv, G, D, device=q.device)
    start = 0
    size = proj_v.group_size
    for g, (r, up) in enumerate(zip(proj_v.ranks, proj_v.up)):
        h_g = latent_v[..., start : start + r].float()  # [B, L, r]
        for i in range(size):  # KV head g * size + i: its rows of L_g after the latent sum
            head = g * size + i
            mixed = torch.einsum("bgl,blr->bgr", probs[:, head], h_g)
            out[:, head] = mixed @ up[i * D : (i + 1) * D].float().T
        start += r
    if proj_v.bias is not None:
        out = out + proj_v.bias.float().reshape(Hkv, 1, D)
    return out.reshape(B, Hq, D)


# --------------------------------------------------------------------------------------------------------------
# Calibration and the model
# --------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def gram_of_projection_inputs(model, calibration_ids: list) -> list[Tensor]:
    """``X^T X`` (fp64) of the normalised hidden states entering each decoder layer's key/value projections,
    accumulated over the calibration prompts (``[1, T]`` id tensors, text only)."""
    grams = [None] * len(model.layers)

    def hook(layer):
        def fn(module, inputs, output):
            x = inputs[0].reshape(-1, inputs[0].shape[-1]).double()
            grams[layer] = x.T @ x if grams[layer] is None else grams[layer] + x.T @ x

        return fn

    handles = [layer.attn.k_proj.register_forward_hook(hook(i)) for i, layer in enumerate(model.layers)]
    try:
        for ids in calibration_ids:
            model.forward_tokens(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    return grams


class _FactoredLinear(nn.Module):
    def __init__(self, factors: GroupLowRank):
        super().__init__()
        self.factors = factors

    def forward(self, x):
        return self.factors.reconstruct(self.factors.latent(x))


@dataclass
class Palu:
    """``with Palu(rank_ratio=0.5, group_size=1)(model): ...`` -- factored key/value projections on every decoder
    layer of a ``MinimalLVLM`` while active. ``grams`` (from ``gram_of_projection_inputs``) whitens the SVD."""

    rank_ratio: float = 0.5
    group_size: int = 4
    grams: Optional[list] = None

    def factors(self, model) -> list[tuple[GroupLowRank, GroupLowRank]]:
        cfg = model.cfg
        group = min(self.group_size, cfg.n_kv_heads)
        out = []
        for i, layer in enumerate(model.layers):
            gram = None if self.grams is None else self.grams[i]
            attn = layer.attn
            out.append(
                tuple(
                    group_low_rank(
                        lin.weight.detach(),
                        cfg.head_dim,
                        group,
                        self.rank_ratio,
                        gram,
                        None if lin.bias is None else lin.bias.detach(),
                    )
                    for lin in (attn.k_proj, attn.v_proj)
                )
            )
        return out

    @contextlib.contextmanager
    def __call__(self, model):
        if self.rank_ratio == 1.0:
            yield model
            return
        originals = [(layer.attn.k_proj, layer.attn.v_proj) for layer in model.layers]
        for layer, (fk, fv) in zip(model.layers, self.factors(model)):
            layer.attn.k_proj, layer.attn.v_proj = _FactoredLinear(fk), _FactoredLinear(fv)
        try:
            yield model
        finally:
            for layer, (k_proj, v_proj) in zip(model.layers, originals):
                layer.attn.k_proj, layer.attn.v_proj = k_proj, v_proj
