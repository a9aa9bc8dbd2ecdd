"""Dynamic high-resolution tiling (InternVL 1.5, arXiv 2404.16821): the grid rule on hand-worked image sizes
(including its tie-break), tile layout, thumbnail and identity."""

import pytest
import torch

from reference_impls.encode.dynamic_tiling import candidate_grids, closest_grid, dynamic_tiles


def test_candidate_grids():
    assert candidate_grids(1, 3) == [(1, 1), (1, 2), (2, 1), (1, 3), (3, 1)]
    assert len(candidate_grids(1, 6)) == 14


def test_hand_worked_grids():
    assert closest_grid(896, 448) == (2, 1)  # 2:1 landscape -> two tiles side by side
    assert closest_grid(448, 1344) == (1, 3)  # 1:3 portrait
    assert closest_grid(1000, 700, max_tiles=6) == (3, 2)  # aspect 1.43: 3/2 = 1.5 beats 1 (diff .07 vs .43)
    # square images tie between (1, 1), (2, 2): the larger grid wins only for large images
    assert closest_grid(448, 448) == (1, 1)  # area 448^2 <= 0.5 * 448^2 * 4
    assert closest_grid(900, 900) == (2, 2)  # area 810000 > 0.5 * 448^2 * 4 = 401408
    assert closest_grid(1400, 1400, max_tiles=12) == (3, 3)  # ties (1,1) (2,2) (3,3): the largest that fits
    assert closest_grid(1400, 1400, max_tiles=3) == (1, 1)


def test_tiles_and_thumbnail():
    image = torch.rand(3, 60, 120, generator=torch.Generator().manual_seed(0))
    tiles = dynamic_tiles(image, max_tiles=6, tile=30)  # aspect 2 -> (2, 1)
    assert tiles.shape == (3, 3, 30, 30)  # two tiles + thumbnail
    resized = torch.nn.functional.interpolate(image[None], size=(30, 60), mode="bicubic", antialias=True)[0]
    assert torch.allclose(tiles[0], resized[:, :, :30]) and torch.allclose(tiles[1], resized[:, :, 30:])
    assert dynamic_tiles(image, max_tiles=6, tile=30, thumbnail=False).shape[0] == 2
    square = torch.rand(3, 30, 30, generator=torch.Generator().manual_seed(1))
    assert torch.equal(dynamic_tiles(square, max_tiles=1, tile=30)[0], square)  # identity
    with pytest.raises(ValueError):
        dynamic_tiles(image, min_tiles=3, max_tiles=2)
