"""FOCUS keyframe selection (arXiv 2510.27280): the optimistic arm score on hand-worked numbers, the arm partition,
and a synthetic long video where the relevant scene is found while scoring under 2% of the frames."""

import math

import pytest
import torch

from reference_impls.encode.focus import FOCUS, focus_score


def test_hand_worked_score():
    # mean 0.5, variance 0.04, 4 samples out of 20: 0.5 + sqrt(2 ln 20 * 0.04 / 4) + 3 ln 20 / 4
    expected = 0.5 + math.sqrt(2 * math.log(20) * 0.04 / 4) + 3 * math.log(20) / 4
    assert focus_score(0.5, 0.04, 4, 20) == pytest.approx(expected)
    assert focus_score(0.5, 0.0, 4, 20) == pytest.approx(
        0.5 + math.sqrt(2 * math.log(20) * 1e-6 / 4) + 3 * math.log(20) / 4
    )  # variance floor
    assert focus_score(0.7, 0.1, 1, 1) == 0.7


def test_arms_and_coarse_sampling():
    # 100 frames at 1 fps: max(8, ceil(100 / 16)) = 8 arms of 100 // 8 = 12 frames; frames 96..99 in no arm
    calls = []

    def score(frames):
        calls.append(list(frames))
        return torch.full((len(frames),), 0.5)

    result = FOCUS().select(100, 1.0, score, 5, torch.Generator().manual_seed(0))
    assert [(a.start, a.end) for a in result.arms] == [(12 * i, 12 * i + 11) for i in range(8)]
    assert len(calls[0]) == 8 * 3 and all((a.start + a.end) // 2 in calls[0] for a in result.arms)
    assert len(result.frames) == 5 and result.frames == sorted(set(result.frames))
    assert result.scored == len({f for c in calls for f in c})


def test_finds_the_relevant_scene():
    n, fps = 9000, 30.0  # five minutes; the question is about seconds 150-160
    relevance = 0.1 + 0.05 * torch.rand(n, generator=torch.Generator().manual_seed(0))
    relevance[4500:4800] = 0.9
    uniform = relevance[torch.linspace(0, n - 1, 16).round().long()].mean()
    for seed in range(3):
        out = FOCUS().select(n, fps, lambda f: relevance[f], 16, torch.Generator().manual_seed(seed))
        assert len(out.frames) == 16 and out.scored < 0.02 * n
        assert sum(4500 <= f < 4800 for f in out.frames) >= 3
        assert relevance[out.frames].mean() > uniform + 0.05


def test_identity_and_bad_arguments():
    assert FOCUS().select(10, 30.0, lambda f: torch.zeros(len(f)), 10).frames == list(range(10))
    with pytest.raises(ValueError):
        FOCUS().select(10, 0.0, lambda f: torch.zeros(len(f)), 4)
