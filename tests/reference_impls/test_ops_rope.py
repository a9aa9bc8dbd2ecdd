"""RoPE (RoFormer, arXiv 2104.09864): the vectorised forms against the paper's rotation matrices, the
relative-position property, and the half layout the minimal LVLM and the decode kernels use."""

import math

import pytest
import torch

from reference_impls.models.minimal_lvlm import apply_rope, rope_cos_sin
from reference_impls.ops.decode_attention import rope_rotate
from reference_impls.ops.rope import interleaved_to_half, naive_rope, rope, rope_inv_freq
from tests.reference_impls._utils import randint, randn


def test_hand_worked_rotation():
    # d = 2, theta_0 = base^0 = 1: position m rotates (1, 0) by m radians
    x = torch.tensor([[1.0, 0.0]])
    for fn in (naive_rope, rope):
        assert torch.allclose(fn(x, torch.tensor([1])), torch.tensor([[math.cos(1.0), math.sin(1.0)]]))
    # d = 4, base 100: the second pair turns at theta_1 = 100^(-2/4) = 0.1 rad per position
    assert torch.allclose(rope_inv_freq(4, 100.0), torch.tensor([1.0, 0.1]))
    y = rope(torch.tensor([[0.0, 0.0, 2.0, 0.0]]), torch.tensor([3]), base=100.0)
    assert torch.allclose(y, torch.tensor([[0.0, 0.0, 2 * math.cos(0.3), 2 * math.sin(0.3)]]))


@pytest.mark.parametrize("shape", [(2, 3, 5, 8), (1, 1, 7, 2), (3, 2, 1, 16)])
def test_vectorised_matches_rotation_matrices(shape):
    x = randn(*shape, seed=shape[2])
    pos = randint(0, 4000, shape[:1] + (1,) + shape[2:3], seed=shape[3])
    assert torch.allclose(rope(x, pos), naive_rope(x, pos), atol=1e-4)
    # the half layout is the same rotation on permuted dimensions
    assert torch.allclose(
        rope(interleaved_to_half(x), pos, layout="half"), interleaved_to_half(rope(x, pos)), atol=1e-5
    )


def test_scores_depend_on_relative_position_only():
    q, k = randn(3, 1, 1, 16, seed=1), randn(3, 1, 1, 16, seed=2)
    scores = [(rope(q, m) * rope(k, n)).sum() for m, n in ((5, 2), (13, 10), (103, 100))]
    assert torch.allclose(torch.stack(scores), scores[0].expand(3), atol=1e-4)
    assert not torch.allclose((rope(q, 5) * rope(k, 2)).sum(), (rope(q, 5) * rope(k, 3)).sum())


def test_position_zero_is_identity():
    x = randn(2, 2, 4, 8, seed=3)
    assert torch.equal(rope(x, 0), x) and torch.equal(rope(x, 0, layout="half"), x)


def test_the_repository_rope_is_the_half_layout():
    x = randn(2, 4, 6, 16, seed=4)
    pos = randint(0, 500, (2, 6), seed=5)
    cos, sin = rope_cos_sin(pos, 16, 10000.0, torch.float32)
    assert torch.allclose(apply_rope(x, cos, sin), rope(x, pos[:, None, :], layout="half"), atol=1e-5)
    assert torch.allclose(
        rope_rotate(x, pos[:, None, :], rope_inv_freq(16)), rope(x, pos[:, None, :], layout="half"), atol=1e-6
    )


def test_bad_arguments():
    with pytest.raises(ValueError):
        rope(torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ValueError):
        rope(torch.zeros(2, 4), torch.zeros(3), layout="neox")
    with pytest.raises(ValueError):
        rope_inv_freq(5)
