"""LongVU (arXiv 2410.17434): temporal reduction and query-guided resolution against their loop specifications,
hand-worked budgets, spatial token compression, and the composed budgeted pipeline."""

import pytest
import torch

from reference_impls.encode import longvu
from reference_impls.encode.longvu import LongVU
from tests.reference_impls._utils import randn


def test_hand_worked_temporal_reduction():
    # one window of 5 frames: frames 0-3 identical, frame 4 orthogonal to them
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    feats = torch.stack([e0, e0, e0, e0, e1])[:, None]  # [5, 1, 2]
    # mean similarities: frames 0-3: 4/5 = 0.8, frame 4: 1/5; threshold 0.75 drops 0, 1, 3; the middle (2) stays
    for fn in (longvu.naive_temporal_reduction, longvu.temporal_reduction):
        assert fn(feats, window=5, threshold=0.75) == [2, 4]
        assert fn(feats, window=5, threshold=0.85) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("frames,window", [(37, 16), (9, 4), (16, 16)])
def test_temporal_reduction_matches_spec(frames, window):
    base = randn(1, 6, 8, seed=frames)
    feats = base + 0.4 * randn(frames, 6, 8, seed=frames + 1)  # similar frames, some redundant
    ref = longvu.naive_temporal_reduction(feats, window, 0.83)
    assert longvu.temporal_reduction(feats, window, 0.83) == ref
    assert all(start + min(window, frames - start) // 2 in ref for start in range(0, frames, window))


def test_hand_worked_resolution_budget():
    # 4 frames, 4 low / 9 high tokens: budget 30 -> floor((30 - 16) / 5) = 2 high-resolution frames
    low = torch.zeros(4, 4, 2)
    low[:, :, 0] = torch.tensor([1.0, 3.0, 2.0, 5.0])[:, None]  # relevance to the text (1, 0): 1, 3, 2, 5
    high = torch.ones(4, 9, 2)
    text = torch.tensor([[1.0, 0.0]])
    for fn in (longvu.naive_query_guided_resolution, longvu.query_guided_resolution):
        tokens, chosen = fn(low, high, text, 30)
        assert chosen == [1, 3] and [t.shape[0] for t in tokens] == [4, 9, 4, 9]
        assert fn(low, high, text, 15)[1] == []  # not even the low tokens: no high frame
        assert fn(low, high, text, 36)[1] == [0, 1, 2, 3]  # identity: everything fits high


@pytest.mark.parametrize("frames,budget", [(11, 200), (6, 90), (20, 1000)])
def test_resolution_matches_spec(frames, budget):
    low, high, text = randn(frames, 4, 6, seed=1), randn(frames, 9, 6, seed=2), randn(3, 6, seed=3)
    ref_tokens, ref_chosen = longvu.naive_query_guided_resolution(low, high, text, budget)
    tokens, chosen = longvu.query_guided_resolution(low, high, text, budget)
    assert chosen == ref_chosen and all(torch.equal(a, b) for a, b in zip(tokens, ref_tokens))
    assert sum(t.shape[0] for t in tokens) <= max(budget, frames * 4)


def test_spatial_token_compression():
    # one chunk of 3 frames, 2 tokens each, compared position by position with frame 0 = [(1, 0), (0, 1)]:
    # frame 1 token 0 (1, 0): cosine 1 -> dropped; token 1 (1, 0): 0 -> kept;
    # frame 2 token 0 (0, 1): 0 -> kept; token 1 (1, 1) vs (0, 1): 0.707 >= 0.6 -> dropped
    frames = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]])
    out = longvu.spatial_token_compression(frames, budget=5, chunk=3, threshold=0.6)
    assert out.tolist() == [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]
    out = longvu.spatial_token_compression(frames, budget=3, chunk=3, threshold=0.6)
    assert out.tolist() == [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]  # ceil(1 / 1 chunk) token cut from its end
    assert torch.equal(longvu.spatial_token_compression(frames, budget=6), frames.reshape(-1, 2))


def test_pipeline_respects_the_budget():
    g = randn(1, 16 * 16, 8, seed=4)
    grid = g + 0.3 * randn(40, 16 * 16, 8, seed=5)  # 40 frames of 16 x 16 tokens
    dino = g[:, :4] + 0.3 * randn(40, 4, 8, seed=6)
    text = randn(5, 8, seed=7)
    tokens, frames, high = LongVU().compress(dino, grid, text, budget=40 * 144)
    assert frames == list(range(40)) and high == frames and tokens.shape[0] == 40 * 144  # identity
    tokens, frames, high = LongVU().compress(dino, grid, text, budget=40 * 64 + 3 * 80)
    assert len(high) == 3 and tokens.shape[0] == 40 * 64 + 3 * 80
    tokens, frames, high = LongVU().compress(dino, grid, text, budget=1000)  # 40 frames do not fit at 64
    assert len(frames) < 40 and frames == longvu.temporal_reduction(dino)  # redundant frames dropped first
    assert tokens.shape[0] == len(frames) * 64 + len(high) * 80 <= 1000
    with pytest.raises(ValueError):
        LongVU().compress(dino, grid, text, budget=0)


def test_pipeline_falls_back_to_spatial_compression():
    grid, dino, text = randn(40, 256, 8, seed=8), randn(40, 4, 8, seed=9), randn(5, 8, seed=10)  # no redundancy
    tokens, frames, high = LongVU().compress(dino, grid, text, budget=1000)
    assert len(frames) == 40 and high == [] and 1000 - 5 < tokens.shape[0] <= 1000  # ceil cut per chunk of 8
    assert torch.equal(tokens, longvu.spatial_token_compression(longvu.resize_grid(grid, 8), 1000))
