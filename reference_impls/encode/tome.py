"""ToMe: bipartite soft matching for token merging in ViTs (Bolya et al., arXiv 2210.09461).

Per block, between attention and MLP: split the tokens alternately into sets A (even) and B (odd); each A
token finds its most cosine-similar B token (metric = attention keys averaged over heads); the r A tokens with
the highest similarity are merged into their B partner by a size-weighted average; the attention of later
blocks adds log(size) to the key logits ("proportional attention") so a merged token counts as many.

    with ToMe(r=8)(model):       # MinimalLVLM or HF LLaVA-1.5: fewer visual tokens reach the LLM
        model.generate(...)      # prompts hold ToMe(r=8).image_tokens(model) placeholders per image

Functions
- ``ToMe``: the technique, merging inside a host's CLS ViT (hooks for LLaVA in ``reference_impls.hosts.hf_vision``).
- ``naive_tome_merge``: the readable specification (full similarity matrix, Python loops over the batch).
- ``bipartite_soft_matching`` -> (merge, unmerge): the optimised path. The row-wise max/argmax over B comes from
  ``reference_impls.ops.cosine_max_argmax`` (Triton kernel on CUDA: the |A| x |B| matrix is never materialised;
  ``impl="torch"`` is the matmul + max baseline), the merge is one ``scatter_reduce``.
- ``merge_wavg``: size-weighted merge; ``proportional_attention``: SDPA with a +log(size) key bias.
- ``tome_schedule(num_layers, r)``: r per layer from an int or an ``(r, inflect)`` pair; ``clip_tower_schedule``: the
  blocks of a CLIP tower that merge and their r, up to Hugging Face's ``vision_feature_layer``.
- ``ToMeViT``: a minimal pre-norm ViT encoder with ToMe in every block (tests and benchmarks).

Defaults: r tokens merged per layer, ``protect_first=1`` (the class token never merges). As upstream
(``facebookresearch/ToMe``), an ``r`` above half of the mergeable tokens is clamped to ``(T - protect_first) // 2``
and a schedule list shorter than the depth is padded with zeros.
Deviations from the paper / upstream code:
- The unmerged A tokens are always returned in their original order (upstream keeps them in similarity order
  unless a class token is protected); attention is permutation-equivariant, so the result is the same up to order.
- Ties in the similarity ranking go to the lower index (stable sort); ties in argmax go to the lowest B index.
- No distillation-token protection and no source tracking (visualisation) are provided.
- The merge itself is one torch ``scatter_reduce`` (no fused Triton scatter-add merge kernel).
- ``ToMeViT`` is a generic pre-norm ViT with random weights for tests and timing, not a pretrained timm model.
- On LLaVA's CLIP tower the merge happens at block boundaries (before the next block, with the keys of the block
  just run), not between attention and MLP: a block's residual stream cannot change length inside forward hooks;
  the minimal LVLM's ViT merges between attention and MLP as the paper. Proportional attention is applied in every
  later block. Qwen2-VL's windowed ViT and 2x2 merger are not hosts (merging breaks the windows and the merger).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from reference_impls.encode._common import cosine_impl as _cosine_impl
from reference_impls.technique import Technique, UnsupportedModel

__all__ = [
    "ToMe",
    "naive_tome_merge",
    "bipartite_soft_matching",
    "merge_wavg",
    "proportional_attention",
    "naive_proportional_attention",
    "tome_schedule",
    "clip_tower_schedule",
    "ToMeViT",
]

MergeFn = Callable[..., torch.Tensor]


def _check_metric(metric: torch.Tensor, r: int, protect_first: int) -> None:
    if metric.dim() != 3:
        raise ValueError(f"metric must be [B, T, C], got shape {tuple(metric.shape)}")
    if not metric.is_floating_point():
        raise ValueError(f"metric must be a floating tensor, got {metric.dtype}")
    if not isinstance(r, int) or r < 0:
        raise ValueError(f"r must be a non-negative int, got {r!r}")
    if protect_first not in (0, 1):
        raise ValueError(f"protect_first must be 0 or 1, got {protect_first!r}")


def max_merge_count(num_tokens: int, protect_first: int) -> int:
    """Largest r allowed for ``num_tokens`` tokens: ``(T - protect_first) // 2`` (paper: at most half of A)."""
    return max(0, (num_tokens - protect_first) // 2)


# --------------------------------------------------------------------------------------------------------------
# Specification
# --------------------------------------------------------------------------------------------------------------
def naive_tome_merge(
    x: torch.Tensor,
    metric: torch.Tensor,
    r: int,
    size: torch.Tensor | None = None,
    protect_first: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Readable ToMe merge of ``x`` [B,T,C] with sizes [B,T,1]; returns (x' [B,T-r',C], size' [B,T-r',1]) with
    ``r' = min(r, (T - protect_first) // 2)`` (upstream's clamp).

    Output order: the unmerged A tokens (original order), then all B tokens (original order).
    """
    _check_metric(metric, r, protect_first)
    batch, num_tokens, _ = metric.shape
    r = min(r, max_merge_count(num_tokens, protect_first))
    if size is None:
        size = torch.ones(batch, num_tokens, 1, dtype=x.dtype, device=x.device)
    outputs, sizes = [], []
    for b in range(batch):
        a_ids = list(range(0, num_tokens, 2))
        b_ids = list(range(1, num_tokens, 2))
        normed = metric[b].float() / metric[b].float().norm(dim=-1, keepdim=True)
        similarity = normed[a_ids] @ normed[b_ids].T  # [|A|, |B|], materialised on purpose
        best_value, best_partner = [], []
        for row, a in enumerate(a_ids):
            if a < protect_first:
                best_value.append(-math.inf)
                best_partner.append(0)
                continue
            values = similarity[row]
            j = int(torch.argmax(values))  # first maximum = lowest index
            best_value.append(float(values[j]))
            best_partner.append(j)
        # rank A by best similarity, descending; ties -> lower A index
        order = sorted(range(len(a_ids)), key=lambda i: (-best_value[i], i))
        merged_rows = set(order[:r])
        weighted = (x[b].float() * size[b].float()).clone()
        total = size[b].float().clone()
        b_weighted = weighted[b_ids].clone()
        b_total = total[b_ids].clone()
        for row in merged_rows:
            a = a_ids[row]
            j = best_partner[row]
            b_weighted[j] += weighted[a]
            b_total[j] += total[a]
        kept_a = [a_ids[i] for i in range(len(a_ids)) if i not in merged_rows]
        out = torch.cat([weighted[kept_a] / total[kept_a], b_weighted / b_total], dim=0)
        outputs.append(out.to(x.dtype))
        sizes.append(torch.cat([total[kept_a], b_total], dim=0).to(size.dtype))
    return torch.stack(outputs), torch.stack(sizes)


def naive_proportional_attention(q, k, v, size=None, scale=None):
    """softmax(q k^T * scale + log(size_k)) v in fp32; q, k, v [B,H,T,D], size [B,T,1]."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = (q.float() @ k.float().transpose(-1, -2)) * scale
    if size is not None:
        logits = logits + size.float().log()[:, None, None, :, 0]
    return (logits.softmax(-1) @ v.float()).to(q.dtype)


# --------------------------------------------------------------------------------------------------------------
# Optimised path
# --------------------------------------------------------------------------------------------------------------
def _identity(x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    return x


def bipartite_soft_matching(
    metric: torch.Tensor,
    r: int,
    protect_first: int = 1,
    *,
    impl: str = "auto",
) -> tuple[MergeFn, MergeFn]:
    """Return ``(merge, unmerge)`` for ``metric`` [B,T,C] (arXiv 2210.09461, Alg. "bipartite soft matching").

    ``merge(x [B,T,C], mode="mean"|"sum") -> [B,T-r,C]``; ``unmerge(y [B,T-r,C]) -> [B,T,C]`` copies each merged
    token back to every position it absorbed. ``impl`` is passed to ``cosine_max_argmax`` ("naive" | "torch" |
    "triton" | "auto"). ``r`` is clamped to ``(T - protect_first) // 2`` as upstream; r = 0 returns identity functions.
    """
    _check_metric(metric, r, protect_first)
    num_tokens = metric.shape[1]
    r = min(r, max_merge_count(num_tokens, protect_first))
    if r == 0:
        return _identity, _identity

    from reference_impls.ops import cosine_max_argmax

    with torch.no_grad():
        set_a, set_b = metric[:, ::2], metric[:, 1::2]
        best_value, best_partner = cosine_max_argmax(set_a, set_b, impl=_cosine_impl(impl))
        best_value = best_value.clone()
        if protect_first:
            best_value[:, 0] = -math.inf
        ranking = torch.argsort(best_value, dim=-1, descending=True, stable=True)
        merged_a = ranking[:, :r]  # A rows merged away
        kept_a = ranking[:, r:].sort(dim=-1).values  # A rows kept, original order
        partner = best_partner.gather(1, merged_a)  # their B destinations

    num_kept_a = kept_a.shape[1]

    def merge(x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        if mode not in ("mean", "sum"):
            raise ValueError(f"mode must be 'mean' or 'sum', got {mode!r}")
        src, dst = x[:, ::2], x[:, 1::2]
        channels = x.shape[-1]
        kept = src.gather(1, kept_a[..., None].expand(-1, -1, channels))
        moving = src.gather(1, merged_a[..., None].expand(-1, -1, channels))
        dst = dst.scatter_reduce(1, partner[..., None].expand(-1, -1, channels), moving, reduce=mode)
        return torch.cat([kept, dst], dim=1)

    def unmerge(y: torch.Tensor) -> torch.Tensor:
        channels = y.shape[-1]
        kept, dst = y[:, :num_kept_a], y[:, num_kept_a:]
        moved = dst.gather(1, partner[..., None].expand(-1, -1, channels))
        out = y.new_zeros(y.shape[0], num_tokens, channels)
        out[:, 1::2] = dst
        out.scatter_(1, (2 * kept_a)[..., None].expand(-1, -1, channels), kept)
        out.scatter_(1, (2 * merged_a)[..., None].expand(-1, -1, channels), moved)
        return out

    return merge, unmerge


def merge_wavg(merge: MergeFn, x: torch.Tensor, size: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted average merge: returns (x' [B,T-r,C], size' [B,T-r,1]); size defaults to ones."""
    if size is None:
        size = torch.ones_like(x[..., :1])
    total = merge(size, mode="sum")
    merged = merge(x * size, mode="sum") / total
    return merged, total


def proportional_attention(q, k, v, size=None, scale=None):
    """Attention with +log(size) on the key logits, through SDPA (FlashAttention cannot take a float bias, so
    SDPA picks the memory-efficient or math backend when ``size`` is given)."""
    if size is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    bias = size.log().to(q.dtype)[:, None, None, :, 0]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.expand(-1, 1, q.shape[2], -1), scale=scale)


def tome_schedule(num_layers: int, r: int | tuple[int, float] | Sequence[int]) -> list[int]:
    """Tokens merged per layer. ``r`` int: constant; ``(r, inflect)``: linear from ``int(r (1 - inflect))`` to
    ``2 r - that`` over the layers (inflect > 0: increasing, < 0: decreasing, mean r); a list is used as is, padded
    with zeros to ``num_layers`` (upstream ``parse_r``; entries beyond the depth are never used)."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if isinstance(r, (list,)):
        if any((not isinstance(v, int)) or isinstance(v, bool) or v < 0 for v in r):
            raise ValueError(f"an explicit schedule needs non-negative ints, got {r}")
        return list(r[:num_layers]) + [0] * (num_layers - len(r))
    inflect = 0.0
    if isinstance(r, tuple):
        if len(r) != 2:
            raise ValueError(f"(r, inflect) expected, got {r}")
        r, inflect = r
    if not isinstance(r, int) or r < 0:
        raise ValueError(f"r must be a non-negative int, got {r!r}")
    low = int(r * (1.0 - inflect))
    high = 2 * r - low
    if num_layers == 1:
        return [r]
    step = (high - low) / (num_layers - 1)
    return [max(0, int(low + step * i)) for i in range(num_layers)]


# --------------------------------------------------------------------------------------------------------------
# Minimal ViT with ToMe (tests and benchmarks)
# --------------------------------------------------------------------------------------------------------------
class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def attention(self, x, size, naive: bool):
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attend = naive_proportional_attention if naive else proportional_attention
        out = attend(q, k, v, size).transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj(out), k.mean(dim=1)  # metric: keys averaged over heads

    def forward(self, x, size, r: int, protect_first: int, impl: str):
        naive = impl == "naive"
        attended, metric = self.attention(self.norm1(x), size, naive)
        x = x + attended
        if r > 0:
            if naive:
                x, size = naive_tome_merge(x, metric, r, size, protect_first)
            else:
                merge, _ = bipartite_soft_matching(metric, r, protect_first, impl=impl)
                x, size = merge_wavg(merge, x, size)
        return x + self.mlp(self.norm2(x)), size


class ToMeViT(nn.Module):
    """Pre-norm ViT encoder (tokens in, tokens out) with ToMe in every block; ``r`` as in ``tome_schedule``.

    ``forward(tokens [B,T,C], r=0, impl="auto") -> (tokens [B,T',C], size [B,T',1])``; the first token is
    treated as the class token (``protect_first=1``). ``impl="naive"`` uses the specification everywhere.
    """

    def __init__(self, dim: int = 64, depth: int = 4, heads: int = 4, mlp_ratio: float = 4.0, protect_first: int = 1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.protect_first = protect_first
        self.blocks = nn.ModuleList(_Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, r=0, impl: str = "auto"):
        schedule = tome_schedule(len(self.blocks), r)
        size = None
        x = tokens
        for block, r_layer in zip(self.blocks, schedule):
            x, size = block(x, size, r_layer, self.protect_first, impl)
        if size is None:
            size = torch.ones_like(x[..., :1])
        return self.norm(x), size


def clip_tower_schedule(n_layers: int, feature_layer, r) -> tuple[list[int], list[int]]:
    """ToMe in a CLS ViT of ``n_layers`` blocks read at ``feature_layer`` (Hugging Face's ``vision_feature_layer``:
    an index into the hidden states, negative from the end; None: LLaVA's default -2): ``(blocks whose input is
    merged, tokens merged there)``. Merging happens before blocks 1 .. the one whose output is the feature layer (see
    the module's deviations)."""
    feature_layer = -2 if feature_layer is None else feature_layer
    if not isinstance(feature_layer, int):
        raise ValueError(f"tome: a list of vision_feature_layer ({feature_layer}) is not supported")
    feature_index = n_layers + feature_layer if feature_layer < 0 else feature_layer - 1
    merge_layers = list(range(1, feature_index + 1))
    return merge_layers, tome_schedule(max(1, len(merge_layers)), r)[: len(merge_layers)]


def tokens_after(num_tokens: int, schedule: Sequence[int], protect_first: int = 1) -> int:
    """Tokens left after merging ``schedule[i]`` tokens at each of its steps (each clamped as upstream)."""
    for r in schedule:
        num_tokens -= min(r, max_merge_count(num_tokens, protect_first))
    return num_tokens


@dataclass
class ToMe(Technique):
    """ToMe inside a host's CLS ViT: ``r`` tokens merged per block (an int, ``(r, inflect)`` or a list), the CLS
    token protected; fewer visual tokens reach the LLM (prompts need ``image_tokens(model)`` placeholders)."""

    name: ClassVar[str] = "tome"
    stage: ClassVar[str] = "encoder"
    r: object = 8
    impl: str = "auto"

    def __post_init__(self):
        tome_schedule(4, self.r)  # validates the form of r

    def check_host(self, host) -> None:
        if host.name == "minimal":
            cfg = host.model.cfg
            if not cfg.vision.use_cls or cfg.projector != "mlp2x_gelu":
                raise UnsupportedModel("tome: the minimal LVLM needs a CLS ViT and the MLP projector (LLaVA layout)")

    def image_tokens(self, model) -> int:
        """Visual tokens per image reaching the LLM of ``model`` (MinimalLVLM or HF LLaVA) with this technique."""
        from reference_impls.models.minimal_lvlm import MinimalLVLM

        if isinstance(model, MinimalLVLM):
            vc = model.cfg.vision
            return tokens_after(vc.n_encoder_tokens, tome_schedule(vc.n_layers_run, self.r)) - 1
        config = getattr(model, "config", None)
        vision = getattr(config, "vision_config", None)
        if vision is None:
            raise UnsupportedModel(f"tome: {type(model).__name__} has no vision tower config")
        feature_layer = getattr(config, "vision_feature_layer", None)
        _, schedule = clip_tower_schedule(vision.num_hidden_layers, feature_layer, self.r)
        keeps_cls = (getattr(config, "vision_feature_select_strategy", None) or "default") == "full"
        num_tokens = (vision.image_size // vision.patch_size) ** 2 + 1
        return tokens_after(num_tokens, schedule) - (0 if keeps_cls else 1)

    def minimal_image_features(self, model, pixel_values):
        """The minimal LVLM's ViT with ToMe between attention and MLP of every block up to the feature layer (the
        paper's placement) and proportional attention, then the projector on the patch tokens."""
        vc = model.cfg.vision
        x = model.vision.embed(pixel_values)
        blocks = model.vision.blocks[: vc.n_layers_run]
        size = None
        for block, r in zip(blocks, tome_schedule(len(blocks), self.r)):
            q, k, v = block.attn.project_qkv(block.norm1(x))
            out = proportional_attention(q, k, v, size)
            x = x + block.attn.proj(out.transpose(1, 2).reshape(x.shape))
            if r > 0:
                merge, _ = bipartite_soft_matching(k.mean(dim=1), r, protect_first=1, impl=self.impl)
                x, size = merge_wavg(merge, x, size)
            x = x + block.mlp(block.norm2(x))
        return model.project(x[:, 1:])
