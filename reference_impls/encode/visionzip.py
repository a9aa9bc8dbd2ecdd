"""VisionZip: dominant + contextual visual tokens before the LLM (Yang et al., arXiv 2412.04467).

At the ViT layer whose output the projector reads (CLIP: the penultimate one):
1. Dominant tokens: the CLS token plus the (d - 1) patches receiving the most CLS attention (summed over heads).
2. Contextual tokens: of the n = N - d remaining tokens (original order) take c targets at stride max(1, n // c);
   every other remaining token joins the target whose key (keys averaged over heads) is the most cosine-similar;
   contextual token = hidden[target] + mean(hidden[members]) (an empty group adds 0).
Output: [B, d + c, C] = dominant tokens (original order) followed by contextual tokens (target order).
Defaults (d, c): (54, 10), (108, 20), (162, 30) = 64 / 128 / 192 tokens.

    with VisionZip(dominant=54, contextual=10)(model):     # MinimalLVLM, HF LLaVA-1.5, Qwen2-VL, Qwen2.5-VL
        model.generate(...)          # LLaVA / minimal: prompts with dominant + contextual placeholders per image

Functions
- ``VisionZip``: the technique (host-specific hooks in ``reference_impls.hosts.hf_vision``).
- ``naive_visionzip``: the readable specification (per-sample loops, full similarity matrix).
- ``visionzip``: batched path; top-k via ``reference_impls.ops.select_topk``, assignment via
  ``reference_impls.ops.cosine_max_argmax`` (never materialises remaining x targets), sums via ``scatter_add``.
- ``cls_attention_scores``: the CLS row of the attention from ``reference_impls.ops.scored_attention`` with one
  score row, so the ViT keeps FlashAttention / SDPA (upstream uses ``output_attentions``, which forces eager
  attention and stores all B x H x N x N probabilities: VisionZip issues #24, #25, #29).
- ``mean_received_attention``: score for ViTs without CLS (below).

Deviations
- ViTs without a CLS token (Qwen2-VL / Qwen2.5-VL) are not covered by the paper. Declared deviation, following the
  discussion in VisionZip-Qwen2VL #3: the dominance score is the attention each patch *receives*, averaged over
  all queries of its image and over heads, and the method is applied *after* the 2x2 patch merger, on merged tokens
  (scores and keys of the four patches of a merged token are averaged: ``group_mean``).
- LLaVA (and the minimal LVLM, which reads patch features the same way): with LLaVA's default feature strategy the
  CLS token is cropped before the projector, so the dominant set is the top-``dominant`` patches (the CLS token only
  scores); with ``"full"`` the CLS token is kept and counted among the dominant tokens, as in the paper.
- A budget ``dominant + contextual`` at least an image's token count leaves the image whole (the identity).
- LLaVA-NeXT is not a host: its anyres crops are packed into a grid that the reduced tokens no longer fill.
- Ties in top-k go to the lower index; ties in the assignment go to the lower target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from reference_impls.encode._common import cosine_impl as _cosine_impl
from reference_impls.technique import Technique, UnsupportedModel

__all__ = [
    "VisionZip",
    "VisionZipResult",
    "naive_visionzip",
    "visionzip",
    "naive_cls_attention_scores",
    "cls_attention_scores",
    "naive_mean_received_attention",
    "mean_received_attention",
    "group_mean",
    "visionzip_token_count",
    "VISIONZIP_DEFAULTS",
]

VISIONZIP_DEFAULTS = ((54, 10), (108, 20), (162, 30))


@dataclass
class VisionZipResult:
    """tokens [B,d+c,C]; dominant_idx [B,d] and target_idx [B,c] (original indices, ascending); member_idx [B,n-c]
    (original indices of merged tokens); assignment [B,n-c] (target slot 0..c-1 of each member); counts [B,c]."""

    tokens: torch.Tensor
    dominant_idx: torch.Tensor
    target_idx: torch.Tensor
    member_idx: torch.Tensor
    assignment: torch.Tensor
    counts: torch.Tensor


def visionzip_token_count(dominant: int, contextual: int) -> int:
    return dominant + contextual


def _check(hidden, scores, metric, dominant, contextual, has_cls):
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [B, N, C], got {tuple(hidden.shape)}")
    batch, num_tokens, _ = hidden.shape
    if scores.shape != (batch, num_tokens):
        raise ValueError(f"scores must be [B, N] = {(batch, num_tokens)}, got {tuple(scores.shape)}")
    if metric.dim() != 3 or metric.shape[:2] != (batch, num_tokens):
        raise ValueError(f"metric must be [B, N, D] with B, N = {(batch, num_tokens)}, got {tuple(metric.shape)}")
    for name, value in (("dominant", dominant), ("contextual", contextual)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if has_cls and dominant < 1:
        raise ValueError("with a CLS token, dominant must be >= 1 (the CLS token is always dominant)")
    if dominant + contextual > num_tokens:
        raise ValueError(f"dominant + contextual = {dominant + contextual} exceeds the {num_tokens} input tokens")
    if dominant + contextual == 0:
        raise ValueError("dominant + contextual must be > 0")


def _target_positions(num_remaining: int, contextual: int) -> list[int]:
    if contextual == 0:
        return []
    step = max(1, num_remaining // contextual)
    return list(range(0, num_remaining, step))[:contextual]


# --------------------------------------------------------------------------------------------------------------
# Specification
# --------------------------------------------------------------------------------------------------------------
def naive_visionzip(hidden, scores, metric, dominant: int, contextual: int, has_cls: bool = True) -> VisionZipResult:
    """Readable VisionZip on hidden [B,N,C], scores [B,N] (CLS-attention; index 0 = CLS if has_cls), metric [B,N,D]."""
    _check(hidden, scores, metric, dominant, contextual, has_cls)
    batch, num_tokens, _ = hidden.shape
    outs, dom_all, tgt_all, mem_all, asg_all, cnt_all = [], [], [], [], [], []
    for b in range(batch):
        candidates = list(range(1, num_tokens)) if has_cls else list(range(num_tokens))
        quota = dominant - 1 if has_cls else dominant
        ranked = sorted(candidates, key=lambda i: (-float(scores[b, i]), i))
        dominant_ids = sorted(([0] if has_cls else []) + ranked[:quota])
        remaining = [i for i in range(num_tokens) if i not in set(dominant_ids)]
        target_slots = _target_positions(len(remaining), contextual)
        target_ids = [remaining[s] for s in target_slots]
        member_ids = [i for i in remaining if i not in set(target_ids)]
        rows = [hidden[b, i] for i in dominant_ids]
        assignment, counts = [], [0] * len(target_ids)
        if target_ids:
            unit = metric[b].float() / metric[b].float().norm(dim=-1, keepdim=True)
            similarity = unit[member_ids] @ unit[target_ids].T if member_ids else None
            sums = [torch.zeros_like(hidden[b, 0], dtype=torch.float32) for _ in target_ids]
            for row, i in enumerate(member_ids):
                slot = int(torch.argmax(similarity[row]))
                assignment.append(slot)
                counts[slot] += 1
                sums[slot] += hidden[b, i].float()
            for slot, t in enumerate(target_ids):
                mean = sums[slot] / max(counts[slot], 1)
                rows.append((hidden[b, t].float() + mean).to(hidden.dtype))
        outs.append(torch.stack(rows))
        dom_all.append(dominant_ids)
        tgt_all.append(target_ids)
        mem_all.append(member_ids if target_ids else [])
        asg_all.append(assignment)
        cnt_all.append(counts)
    device = hidden.device

    def as_long(rows):
        return torch.tensor(rows, dtype=torch.long, device=device).reshape(batch, -1)

    return VisionZipResult(
        torch.stack(outs), as_long(dom_all), as_long(tgt_all), as_long(mem_all), as_long(asg_all), as_long(cnt_all)
    )


def naive_cls_attention_scores(q_cls: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Softmax row of the CLS query over all keys, summed over heads: q_cls [B,H,1,D], k [B,H,N,D] -> [B,N]."""
    scale = q_cls.shape[-1] ** -0.5 if scale is None else scale
    probs = ((q_cls.float() @ k.float().transpose(-1, -2)) * scale).softmax(-1)
    return probs[:, :, 0].sum(1)


def naive_mean_received_attention(q, k, scale=None) -> torch.Tensor:
    """Attention received by each key, averaged over all queries and heads: q, k [B,H,N,D] -> [B,N]."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    probs = ((q.float() @ k.float().transpose(-1, -2)) * scale).softmax(-1)
    return probs.mean(dim=(1, 2))


# --------------------------------------------------------------------------------------------------------------
# Optimised path
# --------------------------------------------------------------------------------------------------------------
def visionzip(
    hidden, scores, metric, dominant: int, contextual: int, has_cls: bool = True, *, impl: str = "auto"
) -> VisionZipResult:
    """Batched VisionZip (same contract as ``naive_visionzip``); ``impl`` goes to the ops kernels."""
    from reference_impls.ops import cosine_max_argmax, select_topk

    _check(hidden, scores, metric, dominant, contextual, has_cls)
    batch, num_tokens, channels = hidden.shape
    device = hidden.device
    protect = None
    if has_cls:
        protect = torch.zeros(batch, num_tokens, dtype=torch.bool, device=device)
        protect[:, 0] = True
    dominant_idx = select_topk(scores.float(), dominant, protect_mask=protect, impl=impl)
    dominant_tokens = hidden.gather(1, dominant_idx[..., None].expand(-1, -1, channels))

    is_dominant = torch.zeros(batch, num_tokens, dtype=torch.bool, device=device)
    is_dominant.scatter_(1, dominant_idx, True)
    num_remaining = num_tokens - dominant
    # remaining indices in original order: stable sort puts the non-dominant (key 0) first
    remaining_idx = torch.argsort(is_dominant.to(torch.int8), dim=1, stable=True)[:, :num_remaining]
    slots = torch.tensor(_target_positions(num_remaining, contextual), dtype=torch.long, device=device)
    empty = torch.zeros(batch, 0, dtype=torch.long, device=device)
    if contextual == 0:
        return VisionZipResult(dominant_tokens, dominant_idx, empty, empty, empty, empty)

    is_target_slot = torch.zeros(num_remaining, dtype=torch.bool, device=device)
    is_target_slot[slots] = True
    target_idx = remaining_idx[:, slots]
    member_idx = remaining_idx[:, ~is_target_slot]

    def rows(x, idx):
        return x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))

    if member_idx.shape[1] > 0:
        _, assignment = cosine_max_argmax(rows(metric, member_idx), rows(metric, target_idx), impl=_cosine_impl(impl))
    else:
        assignment = empty
    sums = torch.zeros(batch, contextual, channels, dtype=torch.float32, device=device)
    sums.scatter_add_(1, assignment[..., None].expand(-1, -1, channels), rows(hidden, member_idx).float())
    counts = torch.zeros(batch, contextual, dtype=torch.long, device=device)
    counts.scatter_add_(1, assignment, torch.ones_like(assignment))
    contextual_tokens = rows(hidden, target_idx).float() + sums / counts.clamp(min=1)[..., None]
    tokens = torch.cat([dominant_tokens, contextual_tokens.to(hidden.dtype)], dim=1)
    return VisionZipResult(tokens, dominant_idx, target_idx, member_idx, assignment, counts)


def cls_attention_scores(q_cls, k, scale: float | None = None, *, impl: str = "auto") -> torch.Tensor:
    """CLS-row attention summed over heads via ``scored_attention`` (one score row, no N x N matrix):
    q_cls [B,H,1,D], k [B,H,N,D] -> [B,N] fp32."""
    from reference_impls.ops import scored_attention

    if q_cls.dim() != 4 or q_cls.shape[2] != 1:
        raise ValueError(f"q_cls must be [B, H, 1, D], got {tuple(q_cls.shape)}")
    _, _, colsum = scored_attention(q_cls, k, k, causal=False, scale=scale, score_q_range=(0, 1), impl=impl)
    return colsum.sum(1)


def mean_received_attention(q, k, scale: float | None = None, *, impl: str = "auto") -> torch.Tensor:
    """Attention received per key, averaged over queries and heads (no-CLS deviation): q, k [B,H,N,D] -> [B,N].
    Uses the column sums of ``scored_attention`` over every query row (memory O(N), not O(N^2))."""
    from reference_impls.ops import scored_attention

    num_queries = q.shape[2]
    _, _, colsum = scored_attention(q, k, k, causal=False, scale=scale, score_q_range=(0, num_queries), impl=impl)
    return colsum.mean(1) / num_queries


def group_mean(x: torch.Tensor, group: int, dim: int = 0) -> torch.Tensor:
    """Average consecutive groups of ``group`` entries along ``dim``. Maps per-patch scores / keys onto Qwen2-VL
    merged tokens, whose spatial_merge_size ** 2 patches are stored consecutively."""
    length = x.shape[dim]
    if group < 1 or length % group:
        raise ValueError(f"length {length} along dim {dim} is not divisible by the group size {group}")
    dim = dim % x.dim()
    return x.unflatten(dim, (length // group, group)).mean(dim + 1)


@dataclass
class VisionZip(Technique):
    """VisionZip: ``dominant + contextual`` visual tokens per image reach the LLM."""

    name: ClassVar[str] = "visionzip"
    stage: ClassVar[str] = "encoder"
    dominant: int = 54
    contextual: int = 10
    impl: str = "auto"

    def __post_init__(self):
        for name, value in (("dominant", self.dominant), ("contextual", self.contextual)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if self.dominant + self.contextual == 0:
            raise ValueError("dominant + contextual must be >= 1")

    def tokens_per_image(self, n_tokens: int) -> int:
        """Visual tokens an image of ``n_tokens`` keeps (all of them when the budget covers the image)."""
        return min(n_tokens, self.dominant + self.contextual)

    def check_host(self, host) -> None:
        if host.name == "minimal":
            cfg = host.model.cfg
            if not cfg.vision.use_cls or cfg.projector != "mlp2x_gelu":
                raise UnsupportedModel(
                    "visionzip: the minimal LVLM needs a CLS ViT and the MLP projector (LLaVA layout)"
                )

    def minimal_image_features(self, model, pixel_values):
        """The minimal LVLM's visual tokens ``[N, tokens_per_image, hidden]``: the feature layer's CLS attention row
        ranks the patches (``cls_attention_scores``), VisionZip keeps dominant + contextual patches."""
        vc = model.cfg.vision
        n_run = vc.n_layers_run
        x = model.vision(pixel_values, n_blocks=n_run - 1)  # input of the feature-layer block
        block = model.vision.blocks[n_run - 1]
        q, k, _ = block.attn.project_qkv(block.norm1(x))
        patches = block(x)[:, 1:]  # the feature layer without CLS
        if self.dominant + self.contextual >= patches.shape[1]:
            return model.project(patches)
        scores = cls_attention_scores(q[:, :, :1], k, impl=self.impl)
        result = visionzip(
            patches, scores[:, 1:], k.mean(dim=1)[:, 1:], self.dominant, self.contextual, has_cls=False, impl=self.impl
        )
        return model.project(result.tokens)

    @staticmethod
    def shrink_image_placeholders(
        input_ids: torch.Tensor,
        full: int,
        short: int,
        image_token_id: int,
        attention_mask: torch.Tensor | None = None,
        pad_token_id: int = 0,
    ):
        """Rewrite prompts with ``full`` placeholders per image to ``short`` each (LLaVA prompts from a processor);
        rows come back left-padded. Returns ``(input_ids, attention_mask)``."""
        rows = []
        for b in range(input_ids.shape[0]):
            ids = input_ids[b]
            valid = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else attention_mask[b].bool()
            out, run = [], 0
            for token in ids[valid].tolist() + [None]:
                if token == image_token_id:
                    run += 1
                    continue
                if run:
                    if run % full:
                        raise ValueError(f"found a run of {run} image tokens, not a multiple of {full}")
                    out += [image_token_id] * (short * (run // full))
                    run = 0
                if token is not None:
                    out.append(token)
            rows.append(out)
        width = max(len(r) for r in rows)
        new_ids = torch.full((len(rows), width), pad_token_id, dtype=input_ids.dtype, device=input_ids.device)
        new_mask = torch.zeros(len(rows), width, dtype=torch.long, device=input_ids.device)
        for b, r in enumerate(rows):
            new_ids[b, width - len(r) :] = torch.tensor(r, dtype=input_ids.dtype)
            new_mask[b, width - len(r) :] = 1
        return new_ids, new_mask
