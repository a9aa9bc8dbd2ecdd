"""Dynamic high-resolution tiling under a tile budget: InternVL 1.5's adaptive input resolution (Chen et al., "How
Far Are We to GPT-4V? Closing the Gap to Commercial Multimodal Models with Open-Source Suites", arXiv 2404.16821).

Why this paper: budgeted dynamic tiling is how most open LVLMs adapt the resolution to the image (InternVL, and
LLaVA-NeXT's AnyRes with a fixed grid list); InternVL 1.5's rule is the simplest complete one: pick the tile grid
whose aspect ratio best matches the image among all grids of ``min_tiles .. max_tiles`` tiles.

The method (checked against the official code, github.com/OpenGVLab/InternVL, ``dynamic_preprocess``): candidate
grids ``(cols, rows)`` with ``min_tiles <= cols * rows <= max_tiles``, ordered by tile count; the chosen grid
minimises ``|W / H - cols / rows|``; on a tie the later (larger) grid wins when the image area exceeds half the
grid's pixel area (``W * H > 0.5 * tile^2 * cols * rows``). The image is resized to ``(cols * tile, rows * tile)``
and cut into tiles in row-major order; a ``tile x tile`` thumbnail of the whole image is appended when there is more
than one tile. Each tile then costs the same visual tokens (256 per 448 x 448 tile after pixel shuffle), so
``max_tiles`` is the token budget.

Functions: ``closest_grid`` (the rule), ``dynamic_tiles`` (images ``[3, H, W]`` -> tiles ``[n, 3, tile, tile]``).

Deviations: the resize is ``torch.nn.functional.interpolate`` (bicubic, antialiased) instead of PIL's; the default
``max_tiles = 6`` is the official ``dynamic_preprocess`` default (the released models raise it at inference).

Identity: an image of exactly ``tile x tile`` pixels with ``max_tiles = 1`` comes back unchanged as one tile.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["candidate_grids", "closest_grid", "dynamic_tiles"]


def candidate_grids(min_tiles: int, max_tiles: int) -> list:
    """Every ``(cols, rows)`` with ``min_tiles <= cols * rows <= max_tiles``, by tile count (then as the official
    code's set iteration leaves them: here by ``(cols * rows, cols)``)."""
    if not 1 <= min_tiles <= max_tiles:
        raise ValueError(f"need 1 <= min_tiles <= max_tiles, got {min_tiles}, {max_tiles}")
    grids = {
        (i, j)
        for n in range(min_tiles, max_tiles + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if min_tiles <= i * j <= max_tiles
    }
    return sorted(grids, key=lambda g: (g[0] * g[1], g[0]))


def closest_grid(width: int, height: int, min_tiles: int = 1, max_tiles: int = 6, tile: int = 448) -> tuple:
    """The ``(cols, rows)`` grid for a ``width x height`` image."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width} x {height}")
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(min_tiles, max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * tile * tile * cols * rows:
            best = (cols, rows)
    return best


def dynamic_tiles(
    image: Tensor, min_tiles: int = 1, max_tiles: int = 6, tile: int = 448, thumbnail: bool = True
) -> Tensor:
    """``image [3, H, W]`` -> tiles ``[n, 3, tile, tile]`` (row-major, then the thumbnail if ``n > 1``)."""
    if image.dim() != 3:
        raise ValueError(f"image must be [3, H, W], got {tuple(image.shape)}")
    _, H, W = image.shape
    cols, rows = closest_grid(W, H, min_tiles, max_tiles, tile)

    def resize(img, h, w):
        if (h, w) == tuple(img.shape[-2:]):
            return img
        return F.interpolate(img[None].float(), size=(h, w), mode="bicubic", align_corners=False, antialias=True)[0].to(
            img.dtype
        )

    big = resize(image, rows * tile, cols * tile)
    tiles = [big[:, r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] for r in range(rows) for c in range(cols)]
    if thumbnail and len(tiles) > 1:
        tiles.append(resize(image, tile, tile))
    return torch.stack(tiles)
