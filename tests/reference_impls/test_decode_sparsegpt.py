"""SparseGPT (arXiv 2301.00774): the OBS update on a hand-worked 2-column layer, magnitude pruning when inputs are
uncorrelated, the lazy blocked order against the column-by-column specification, N:M masks, the error against
magnitude pruning, and the decoder of the minimal LVLM."""

import pytest
import torch

from reference_impls.decode.sparsegpt import SparseGPT, hessian, naive_sparsegpt, sparsegpt
from reference_impls.models import LVLMConfig, MinimalLVLM
from tests.reference_impls._utils import randint, randn

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_hand_worked_obs_update():
    # W = [1, 2], H = [[2, 1], [1, 2]] (no damping): U = chol(H^-1, upper) = [[sqrt(2/3), -1/sqrt(6)], [0, sqrt(1/2)]];
    # w^2 / U_cc^2 = 1.5 vs 8 -> prune w1; OBS: w2 <- w2 + w1 * H_12 / H_22 = 2 + 1 / 2 = 2.5
    W = torch.tensor([[1.0, 2.0]])
    H = torch.tensor([[2.0, 1.0], [1.0, 2.0]])
    for fn in (naive_sparsegpt, sparsegpt):
        out = fn(W, H, 0.5, blocksize=2, percdamp=0.0)
        assert torch.allclose(out, torch.tensor([[0.0, 2.5]]), atol=1e-6)


def test_uncorrelated_inputs_give_magnitude_pruning():
    W = randn(6, 8, seed=1)
    out = sparsegpt(W, torch.eye(8), 0.5, blocksize=8)
    keep = W.abs().flatten().argsort(descending=True)[:24]
    expected = torch.zeros(48)
    expected[keep] = W.flatten()[keep]
    assert torch.equal(out.flatten(), expected)  # no compensation: H has no off-diagonal


@pytest.mark.parametrize(
    "rows,cols,blocksize,sparsity,nm",
    [(7, 24, 8, 0.5, (0, 0)), (5, 19, 4, 0.3, (0, 0)), (4, 16, 8, 0.0, (2, 4)), (3, 12, 12, 0.7, (0, 0))],
)
def test_lazy_blocks_match_spec(rows, cols, blocksize, sparsity, nm):
    x = randn(64, cols, seed=cols) @ randn(cols, cols, seed=cols + 1)  # correlated inputs
    H = hessian(x)
    W = randn(rows, cols, seed=rows)
    ref = naive_sparsegpt(W, H, sparsity, prunen=nm[0], prunem=nm[1], blocksize=blocksize)
    out = sparsegpt(W, H, sparsity, prunen=nm[0], prunem=nm[1], blocksize=blocksize)
    assert torch.equal(out == 0, ref == 0) and torch.allclose(out, ref, atol=1e-5)
    if nm[0]:
        groups = (out == 0).view(rows, cols // 4, 4).sum(-1)
        assert bool((groups == 2).all())  # every group of 4 has exactly 2 zeros
    else:
        for start in range(0, cols, blocksize):  # exactly floor(block * sparsity) zeros per block
            block = out[:, start : start + blocksize]
            assert int((block == 0).sum()) == int(block.numel() * sparsity)
    # SparseGPT's compensation beats plain magnitude pruning on the layer's own inputs
    if sparsity >= 0.5 and not nm[0]:
        mag = W.clone()
        for start in range(0, cols, blocksize):
            block = mag[:, start : start + blocksize].clone()
            drop = block.abs().flatten().argsort()[: int(block.numel() * sparsity)]
            block.view(-1)[drop] = 0
            mag[:, start : start + blocksize] = block
        err = lambda w: float((x @ (W - w).T).norm())  # noqa: E731
        assert err(out) < err(mag)


def test_identity():
    W = randn(4, 6, seed=2)
    assert torch.equal(sparsegpt(W, hessian(randn(10, 6, seed=3)), 0.0), W)


@torch.no_grad()
def test_model_pruning_and_restore():
    model = MinimalLVLM(LVLMConfig.tiny(n_layers=2, init_std=0.1), seed=0)
    calib = [randint(0, 250, (1, 24), seed=s) for s in range(2)]
    ids = randint(0, 250, (1, 9), seed=9)
    ref = model.forward_tokens(input_ids=ids)
    with SparseGPT(sparsity=0.0)(model, calib):
        assert torch.equal(model.forward_tokens(input_ids=ids), ref)
    pruner = SparseGPT(sparsity=0.5, blocksize=16)
    with pruner(model, calib):
        assert all(abs(frac - 0.5) < 1e-6 for frac in pruner.report.values())
        assert len(pruner.report) == 2 * 7  # q, k, v, o, gate, up, down per layer
        assert not torch.allclose(model.forward_tokens(input_ids=ids), ref, atol=1e-4)
        assert float(model.lm_head.weight.eq(0).float().mean()) == 0.0  # the LM head stays dense
    assert torch.equal(model.forward_tokens(input_ids=ids), ref)


def test_bad_arguments():
    with pytest.raises(ValueError):
        sparsegpt(torch.zeros(2, 4), torch.eye(4), 1.0)
    with pytest.raises(ValueError):
        sparsegpt(torch.zeros(2, 4), torch.eye(4), 0.5, prunen=4, prunem=4)
    with pytest.raises(ValueError):
        sparsegpt(torch.zeros(2, 4), torch.eye(3), 0.5)
