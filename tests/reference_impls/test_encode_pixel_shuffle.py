"""Pixel-shuffle projector (InternVL 1.5, arXiv 2404.16821): the rearrangement on a hand-worked grid, the vectorised
path against the specification, the minimal LVLM's patch merger as the same rearrangement, and the projector on
the model."""

import pytest
import torch

from reference_impls.encode.pixel_shuffle import PixelShuffle, naive_pixel_shuffle, pixel_shuffle
from reference_impls.models import LVLMConfig, MinimalLVLM
from tests.reference_impls._lvlm_prompts import single_image_prompt
from tests.reference_impls._utils import randn


def test_hand_worked_grid():
    # a 2 x 4 grid of 1-channel patches numbered in raster order; r = 2 -> 1 x 2 tokens of 4 channels:
    # token (0, 0) = patches (0,0) (0,1) (1,0) (1,1) = 0 1 4 5; token (0, 1) = 2 3 6 7
    x = torch.arange(8.0).view(1, 2, 4, 1)
    for fn in (naive_pixel_shuffle, pixel_shuffle):
        assert fn(x, 0.5).tolist() == [[[[0.0, 1.0, 4.0, 5.0], [2.0, 3.0, 6.0, 7.0]]]]
        assert torch.equal(fn(x, 1.0), x)  # identity


@pytest.mark.parametrize("shape,ratio", [((2, 6, 6, 5), 0.5), ((1, 9, 12, 3), 1 / 3), ((3, 4, 8, 2), 0.25)])
def test_vectorised_matches_spec(shape, ratio):
    x = randn(*shape, seed=shape[1])
    assert torch.equal(pixel_shuffle(x, ratio), naive_pixel_shuffle(x, ratio))


def test_patch_merger_uses_the_same_rearrangement():
    model = MinimalLVLM(LVLMConfig.tiny(projector="patch_merger"), seed=0)
    proj = model.projector
    patches = randn(2, 16, model.cfg.vision.width, seed=1)
    shuffled = pixel_shuffle(proj.norm(patches).view(2, 4, 4, -1), 0.5).reshape(2, 4, -1)
    expected = proj.fc2(torch.nn.functional.gelu(proj.fc1(shuffled)))
    assert torch.allclose(proj(patches), expected, atol=1e-6)


@torch.no_grad()
def test_projector_on_the_model():
    model = MinimalLVLM(LVLMConfig.tiny(), seed=0)
    technique = PixelShuffle(0.5)
    assert technique.tokens_per_image(model) == 4  # 16 patches -> 4 tokens
    ids, pix = single_image_prompt(model.cfg, 3, 5)
    nv = model.cfg.n_visual_tokens
    short_ids = torch.cat([ids[:, :3], ids[:, 3:7], ids[:, 3 + nv :]], 1)  # 4 placeholders instead of 16
    original = model.projector
    with technique(model):
        feats = model.encode_images(pix)
        assert feats.shape == (1, 4, model.cfg.hidden)
        out = model.prefill(short_ids, pix)
        assert out.layer_tokens[0].item() == 3 + 4 + 5
    assert model.projector is original
    with pytest.raises(ValueError):
        PixelShuffle(0.3).tokens_per_image(model)
