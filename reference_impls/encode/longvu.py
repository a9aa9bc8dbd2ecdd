"""LongVU's spatiotemporal adaptive compression: query-guided resolution under a context budget (Shen et al.,
"LongVU: Spatiotemporal Adaptive Compression for Long Video-Language Understanding", arXiv 2410.17434).

Why this paper: of the catalogue's adaptive-resolution papers LongVU is the one whose resolution choice is
training-free and budget-driven (ViCO and VisionThink learn it; the catalogue lists no code for Q-Frame): each frame
gets high or
low resolution according to its relevance to the query, so as many frames as possible fit the LLM's context.

The method (checked against the official code, github.com/Vision-CAIR/LongVU, ``cambrian_arch.py``), per video:
1. **Temporal reduction** (``temporal_reduction``): in windows of ``window`` frames (16), each frame's mean cosine
   similarity (DINOv2 features, flattened) to the window's frames; frames at or above ``dino_threshold`` (0.83) are
   redundant and dropped; the middle frame of each window is always kept. Applied only when the video has more
   frames than the context can hold at low resolution.
2. **Query-guided resolution** (``query_guided_resolution``): every frame is encoded at low resolution (``low_side``
   = 8 -> 64 tokens, bilinear down-sampling of the encoder grid) and at high resolution (``high_side`` = 12 -> 144).
   With ``budget`` visual tokens, ``floor((budget - frames * low) / (high - low))`` frames can be high-resolution:
   the frames whose low-resolution tokens have the largest mean dot product with the query's text embeddings.
3. **Spatial token compression** (``spatial_token_compression``): if the low-resolution tokens still exceed the
   budget, in chunks of 8 frames keep the first frame and drop every token of the others whose cosine similarity to
   the same position of the chunk's first frame is at least ``drop_threshold``; then remove the last
   ``ceil(excess / chunks)`` tokens of every chunk, and cut to the budget.

Functions: ``naive_*`` loop specifications and vectorised versions for steps 1 and 2 (tested equal), step 3, the
grid down-sampling ``resize_grid``, and ``LongVU`` composing them (``compress(features, text, budget)``).

Deviations
- The encoders are not part of this module: it takes the DINOv2 features and the (SigLIP) frame token grid as
  inputs; LongVU fuses DINOv2 and SigLIP features in its vision tower.
- ``drop_threshold`` defaults to 0.6 (the value ``initialize_vision_modules`` stores in the model config; the code
  falls back to 0.7 when the config lacks it); the official 400-frame cap after temporal reduction is not applied.
- Token order: frames in time order, each frame's tokens in raster order (no newline/separator tokens).

Identity: a ``budget`` of at least ``frames * high_side^2`` tokens keeps every frame at high resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "resize_grid",
    "naive_temporal_reduction",
    "temporal_reduction",
    "naive_query_guided_resolution",
    "query_guided_resolution",
    "spatial_token_compression",
    "LongVU",
]


def resize_grid(tokens: Tensor, side: int) -> Tensor:
    """Square token grids ``[F, S*S, C]`` -> ``[F, side*side, C]`` (bilinear, ``align_corners=False``, fp32)."""
    n, count, channels = tokens.shape
    src = int(round(math.sqrt(count)))
    if src * src != count:
        raise ValueError(f"{count} tokens per frame are not a square grid")
    grid = tokens.float().transpose(1, 2).reshape(n, channels, src, src)
    out = F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(n, side * side, channels)


# --------------------------------------------------------------------------------------------------------------
# 1. temporal reduction
# --------------------------------------------------------------------------------------------------------------
def naive_temporal_reduction(features: Tensor, window: int = 16, threshold: float = 0.83) -> list:
    """Kept frame indices from DINO features ``[F, ...]`` (each frame flattened)."""
    frames = features.shape[0]
    kept = []
    for start in range(0, frames, window):
        seg = features[start : start + window].reshape(min(window, frames - start), -1).double()
        unit = [f / f.norm() for f in seg]
        for i in range(len(unit)):
            mean_sim = sum(float(unit[i] @ u) for u in unit) / len(unit)
            if i == len(unit) // 2 or mean_sim < threshold:
                kept.append(start + i)
    return kept


def temporal_reduction(features: Tensor, window: int = 16, threshold: float = 0.83) -> list:
    """Vectorised ``naive_temporal_reduction`` (windows padded to ``window`` frames)."""
    frames = features.shape[0]
    flat = F.normalize(features.reshape(frames, -1).double(), dim=-1)
    n_win = -(-frames // window)
    pad = n_win * window - frames
    padded = torch.cat([flat, flat.new_zeros(pad, flat.shape[1])]).view(n_win, window, -1)
    valid = (torch.arange(n_win * window) < frames).view(n_win, window)
    sims = (padded @ padded.transpose(1, 2)).sum(-1) / valid.sum(1, keepdim=True)  # [n_win, window]
    middle = torch.zeros_like(valid)
    middle[torch.arange(n_win), valid.sum(1) // 2] = True
    keep = valid & (middle | (sims < threshold))
    return keep.flatten().nonzero().flatten().tolist()


# --------------------------------------------------------------------------------------------------------------
# 2. query-guided resolution
# --------------------------------------------------------------------------------------------------------------
def _n_high(frames: int, low: int, high: int, budget: int) -> int:
    if high <= low:
        raise ValueError(f"high-resolution frames must have more tokens than low-resolution ones ({high} <= {low})")
    return max(0, min(frames, (budget - frames * low) // (high - low)))


def naive_query_guided_resolution(low: Tensor, high: Tensor, text: Tensor, budget: int) -> tuple[list, list]:
    """``low [F, l, C]``, ``high [F, h, C]``, query embeddings ``text [T, C]`` -> (per-frame token tensors, indices
    of the high-resolution frames). Relevance of a frame = mean over its low-resolution tokens and the text tokens
    of the dot products."""
    frames = low.shape[0]
    n = _n_high(frames, low.shape[1], high.shape[1], budget)
    relevance = [float((low[f].double() @ text.double().T).mean()) for f in range(frames)]
    chosen = sorted(sorted(range(frames), key=lambda f: (-relevance[f], f))[:n])
    return [high[f] if f in chosen else low[f] for f in range(frames)], chosen


def query_guided_resolution(low: Tensor, high: Tensor, text: Tensor, budget: int) -> tuple[list, list]:
    """Vectorised ``naive_query_guided_resolution``."""
    frames = low.shape[0]
    n = _n_high(frames, low.shape[1], high.shape[1], budget)
    relevance = torch.einsum("flc,tc->f", low.double(), text.double()) / (low.shape[1] * text.shape[0])
    order = torch.sort(-relevance, stable=True).indices[:n]
    chosen = sorted(order.tolist())
    is_high = set(chosen)
    return [high[f] if f in is_high else low[f] for f in range(frames)], chosen


# --------------------------------------------------------------------------------------------------------------
# 3. spatial token compression
# --------------------------------------------------------------------------------------------------------------
def spatial_token_compression(frames: Tensor, budget: int, chunk: int = 8, threshold: float = 0.6) -> Tensor:
    """Low-resolution tokens ``[F, n, C]`` -> at most ``budget`` tokens ``[m, C]`` (time-major)."""
    if frames.shape[0] * frames.shape[1] <= budget:
        return frames.reshape(-1, frames.shape[-1])
    pieces = []
    for start in range(0, frames.shape[0], chunk):
        part = frames[start : start + chunk]
        if part.shape[0] == 1:
            pieces.append(part[0])
            continue
        sim = F.cosine_similarity(part[:1].float().expand_as(part[1:]), part[1:].float(), dim=-1)
        pieces.append(torch.cat([part[0], part[1:].reshape(-1, part.shape[-1])[sim.flatten() < threshold]]))
    total = sum(p.shape[0] for p in pieces)
    if total > budget:
        cut = math.ceil((total - budget) / len(pieces))
        pieces = [p[: max(0, p.shape[0] - cut)] for p in pieces]
    return torch.cat(pieces)[:budget]


@dataclass
class LongVU:
    """``LongVU().compress(dino, grid, text, budget)`` -> (visual tokens ``[m, C]``, kept frames, high-resolution
    frames). ``dino [F, ...]`` DINO features, ``grid [F, S*S, C]`` the frame token grids, ``text [T, C]``."""

    window: int = 16
    dino_threshold: float = 0.83
    drop_threshold: float = 0.6
    low_side: int = 8
    high_side: int = 12
    chunk: int = 8

    def compress(self, dino: Tensor, grid: Tensor, text: Tensor, budget: int):
        if budget < 1:
            raise ValueError(f"budget must be positive, got {budget}")
        frames = list(range(grid.shape[0]))
        low_tokens = self.low_side**2
        if grid.shape[0] >= budget // low_tokens:  # as many frames as fit at low resolution
            frames = temporal_reduction(dino, self.window, self.dino_threshold)
        low = resize_grid(grid[frames], self.low_side)
        high = resize_grid(grid[frames], self.high_side)
        tokens, chosen = query_guided_resolution(low, high, text.float(), budget)
        if chosen or len(frames) * low_tokens <= budget:
            return torch.cat(tokens), frames, [frames[i] for i in chosen]
        return spatial_token_compression(low, budget, self.chunk, self.drop_threshold), frames, []
