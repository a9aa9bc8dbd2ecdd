"""Pixel-shuffle projector: InternVL 1.5's adapter, which folds each ``r x r`` block of ViT patch features into one
token before the MLP (Chen et al., "How Far Are We to GPT-4V? Closing the Gap to Commercial Multimodal Models with
Open-Source Suites", arXiv 2404.16821).

Why this paper: pixel shuffle (space-to-depth) is the most used compressing adapter of current open LVLMs -- every
InternVL release since 1.5, NVILA's spatial-to-channel, Idefics3 / SmolVLM, and (as a 2 x 2 merger) Qwen2-VL; it cuts
the visual tokens by ``r^2`` (1024 -> 256 per 448 x 448 tile at ``downsample_ratio = 0.5``) at no compute cost.

The method (checked against the official code, github.com/OpenGVLab/InternVL, ``modeling_internvl_chat.py``):
ViT patch features (CLS dropped) are laid out on their ``H x W`` grid; output token ``(i, j)`` concatenates, in the
order ``(0, 0), (0, 1), .., (r-1, r-1)`` (row offset outer, column offset inner; the official ``ps_version="v2"``),
the features of patches ``(r i + di, r j + dj)``; then ``LayerNorm -> Linear -> GELU -> Linear`` maps the
``r^2 C`` channels to the LLM width (``mlp1``).

Functions and classes
- ``naive_pixel_shuffle``: the specification, one output token at a time.
- ``pixel_shuffle``: a reshape/permute, tested equal (the official code reaches the same layout with two
  view/permute rounds).
- ``PixelShuffleProjector``: the adapter module; ``PixelShuffle``: swaps a ``MinimalLVLM``'s projector for it while
  active (prompts then carry ``n_patches / r^2`` image placeholders per image).

Deviations: the projector's weights are freshly initialised (the adapter is trained in InternVL; this reference
checks shapes, token counts and the rearrangement); the ``ps_version="v1"`` transposed layout is not offered. The
minimal LVLM's ``patch_merger`` projector (Qwen2.5-VL's) uses the same rearrangement with the norm applied per
patch before it (tested).

Identity: ``downsample_ratio = 1`` leaves the patch features unchanged (``pixel_shuffle(x, 1) == x``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["naive_pixel_shuffle", "pixel_shuffle", "PixelShuffleProjector", "PixelShuffle"]


def _factor(downsample_ratio: float) -> int:
    r = round(1 / downsample_ratio) if downsample_ratio > 0 else 0
    if r < 1 or abs(r * downsample_ratio - 1) > 1e-9:
        raise ValueError(f"downsample_ratio must be 1 / r for a positive integer r, got {downsample_ratio}")
    return r


def naive_pixel_shuffle(x: Tensor, downsample_ratio: float = 0.5) -> Tensor:
    """``x [N, H, W, C]`` -> ``[N, H / r, W / r, r^2 C]`` with ``r = 1 / downsample_ratio``."""
    r = _factor(downsample_ratio)
    N, H, W, C = x.shape
    if H % r or W % r:
        raise ValueError(f"the {H} x {W} grid is not divisible by r = {r}")
    out = x.new_empty(N, H // r, W // r, r * r * C)
    for i in range(H // r):
        for j in range(W // r):
            out[:, i, j] = torch.cat([x[:, r * i + di, r * j + dj] for di in range(r) for dj in range(r)], dim=-1)
    return out


def pixel_shuffle(x: Tensor, downsample_ratio: float = 0.5) -> Tensor:
    """Vectorised ``naive_pixel_shuffle``."""
    r = _factor(downsample_ratio)
    N, H, W, C = x.shape
    if H % r or W % r:
        raise ValueError(f"the {H} x {W} grid is not divisible by r = {r}")
    return x.reshape(N, H // r, r, W // r, r, C).permute(0, 1, 3, 2, 4, 5).reshape(N, H // r, W // r, r * r * C)


class PixelShuffleProjector(nn.Module):
    """``[N, P, C]`` patch features (square grid, raster order) -> ``[N, P / r^2, hidden]``."""

    def __init__(self, vision_width: int, hidden: int, downsample_ratio: float = 0.5, seed: int = 0):
        super().__init__()
        self.downsample_ratio = downsample_ratio
        r = _factor(downsample_ratio)
        self.norm = nn.LayerNorm(vision_width * r * r)
        self.fc1 = nn.Linear(vision_width * r * r, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for lin in (self.fc1, self.fc2):
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.02)
                lin.bias.zero_()

    def forward(self, patches: Tensor) -> Tensor:
        N, P, C = patches.shape
        side = int(round(P**0.5))
        if side * side != P:
            raise ValueError(f"{P} patches are not a square grid")
        x = pixel_shuffle(patches.reshape(N, side, side, C), self.downsample_ratio)
        x = x.reshape(N, -1, x.shape[-1])
        return self.fc2(nn.functional.gelu(self.fc1(self.norm(x))))


@dataclass
class PixelShuffle:
    """``with PixelShuffle(0.5)(model): model.prefill(ids_with_fewer_placeholders, pixels)``."""

    downsample_ratio: float = 0.5
    seed: int = 0

    def tokens_per_image(self, model) -> int:
        return model.cfg.vision.n_patches // _factor(self.downsample_ratio) ** 2

    @contextlib.contextmanager
    def __call__(self, model):
        original = model.projector
        projector = PixelShuffleProjector(model.cfg.vision.width, model.cfg.hidden, self.downsample_ratio, self.seed)
        model.projector = projector.to(device=model.device, dtype=model.dtype)
        try:
            yield model
        finally:
            model.projector = original
