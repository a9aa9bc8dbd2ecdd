"""FastViT / FastViTHD (arXiv 2303.14189, 2412.13303): every reparameterisable block and the whole encoder equal
their multi-branch training-time form after reparameterisation; hand-worked folds; token counts."""

import pytest
import torch
from torch import nn

from reference_impls.encode import fastvit as fv
from tests.reference_impls._utils import randn

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _randomise(module, seed=0):
    """Non-trivial parameters and batch-norm statistics (and layer scales of order 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if "layer_scale" in name else 0.2))
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return module.eval()


@pytest.mark.parametrize(
    "make,shape",
    [
        (lambda: fv.MobileOneBlock(8, 8, 3, 1, 1, groups=8), (2, 8, 9, 7)),
        (lambda: fv.MobileOneBlock(3, 8, 3, 2, 1), (2, 3, 11, 10)),
        (lambda: fv.MobileOneBlock(8, 16, 3, 1, 1, groups=8, num_conv_branches=2), (1, 8, 5, 5)),
        (lambda: fv.ReparamLargeKernelConv(8, 16, 7, 2, groups=8), (2, 8, 13, 9)),
        (lambda: fv.RepMixer(8), (2, 8, 6, 6)),
        (lambda: fv.RepCPE(8), (1, 8, 9, 9)),
    ],
)
@torch.no_grad()
def test_block_reparameterisation_is_exact(make, shape):
    block = _randomise(make())
    x = randn(*shape, seed=shape[2])
    ref = block(x)
    block.reparameterize()
    assert block.reparam is not None
    assert torch.allclose(block(x), ref, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_hand_worked_folds():
    # a MobileOne block with only its batch-norm skip: (x - 1) / sqrt(4 + eps) * 2 + 3 -> kernel 1, bias 2 ~ x + 2
    block = fv.MobileOneBlock(1, 1, 1, use_act=False, use_scale_branch=False, num_conv_branches=0).eval()
    block.skip.running_mean.fill_(1.0)
    block.skip.running_var.fill_(4.0 - block.skip.eps)
    block.skip.weight.fill_(2.0)
    block.skip.bias.fill_(3.0)
    weight, bias = block._fused()
    assert weight.flatten().tolist() == [1.0] and bias.tolist() == [2.0]
    # RepCPE with a zero positional convolution is a skip plus its bias
    cpe = fv.RepCPE(2, k=3)
    cpe.pe.weight.zero_()
    cpe.pe.bias.copy_(torch.tensor([1.0, -1.0]))
    x = randn(1, 2, 4, 4, seed=1)
    cpe.reparameterize()
    assert torch.allclose(cpe(x), x + torch.tensor([1.0, -1.0]).view(1, 2, 1, 1))


@torch.no_grad()
def test_encoder_tokens_and_reparameterisation():
    model = _randomise(fv.FastViT(fv.FastViTConfig.tiny()), seed=2)
    images = randn(2, 3, 128, 96, seed=3)
    ref = model(images)
    assert ref.shape == (2, 2 * 2, 128)  # stride 64: 128 x 96 -> 2 x 2 tokens of 2 * 64
    fv.reparameterize(model)
    assert torch.allclose(model(images), ref, atol=1e-4, rtol=1e-4)


def test_fastvithd_layout():
    cfg = fv.FastViTConfig.fastvithd()
    assert cfg.stride == 64 and cfg.n_tokens(1024, 1024) == 256  # vs 576 for ViT-L/14 at 336
    assert cfg.layers == (2, 12, 24, 4, 2) and cfg.widths[-1] * cfg.cls_ratio == 3072
