"""Palu (arXiv 2407.21118): the SVD factors (hand-worked, full rank, the whitened optimum on activations), G-LRD
groups, attention over a latent cache against the token-by-token specification and against the model's own
attention, and the context manager on the minimal LVLM."""

import pytest
import torch

from reference_impls.decode.kv.palu import (
    Palu,
    gram_of_projection_inputs,
    group_low_rank,
    naive_low_rank_factors,
    naive_palu_attention,
    palu_attention,
)
from reference_impls.models import LVLMConfig, MinimalLVLM
from reference_impls.ops.rope import rope
from tests.reference_impls._utils import ragged_lengths, randint, randn

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_hand_worked_factors():
    w = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    L, R = naive_low_rank_factors(w, 1)
    assert torch.allclose(L @ R, torch.tensor([[3.0, 0.0], [0.0, 0.0]]), atol=1e-6)
    assert L.norm().item() == pytest.approx(3**0.5) and R.norm().item() == pytest.approx(3**0.5)  # sqrt(S)
    w = randn(12, 7, seed=1)
    L, R = naive_low_rank_factors(w, 7)
    assert torch.allclose(L @ R, w, atol=1e-5)


def test_whitened_svd_is_optimal_on_the_activations():
    # ||X (W - W')^T||_F = ||(W - W') S||_F with S S^T = X^T X: the whitened truncation attains the Eckart-Young
    # bound of W S, the plain one does not do better
    x = randn(200, 6, seed=2) * torch.tensor([5.0, 1.0, 0.2, 3.0, 0.1, 1.0])
    w = randn(8, 6, seed=3)
    gram = x.double().T @ x.double()
    rank = 2
    err = {}
    for name, g in (("plain", None), ("whitened", gram)):
        L, R = naive_low_rank_factors(w.double(), rank, g)
        err[name] = float((x.double() @ (w.double() - L @ R).T).norm() ** 2)
    s = torch.linalg.svdvals(w.double() @ torch.linalg.cholesky(gram))
    assert err["whitened"] == pytest.approx(float((s[rank:] ** 2).sum()), rel=1e-6)
    assert err["whitened"] < err["plain"]


@pytest.mark.parametrize("group_size", [1, 2])
def test_group_low_rank(group_size):
    w = randn(4 * 8, 16, seed=4)  # 4 heads of 8
    full = group_low_rank(w, 8, group_size, 1.0)
    assert torch.allclose(full.reconstruct(full.latent(torch.eye(16))), w.T, atol=1e-5)
    half = group_low_rank(w, 8, group_size, 0.5)
    assert half.ranks == [4 * group_size] * (4 // group_size) and half.down.shape == (16, 16)
    assert half.latent_bytes_ratio() == 0.5
    with pytest.raises(ValueError):
        group_low_rank(w, 8, 3, 0.5)


@pytest.mark.parametrize("Hq,Hkv,group_size", [(4, 2, 1), (4, 2, 2), (3, 3, 3)])
def test_latent_attention_matches_spec(Hq, Hkv, group_size):
    D, C, B, L = 8, 12, 3, 9
    pk = group_low_rank(randn(Hkv * D, C, seed=5), D, group_size, 0.5, bias=randn(Hkv * D, seed=6))
    pv = group_low_rank(randn(Hkv * D, C, seed=7), D, group_size, 0.75)
    x = randn(B, L, C, seed=8)
    lengths = ragged_lengths(B, L, seed=9)
    positions = randint(0, 100, (B, L), seed=10)
    q = randn(B, Hq, D, seed=11)
    ref = naive_palu_attention(q, pk.latent(x), pv.latent(x), pk, pv, positions, 10000.0, lengths)
    out = palu_attention(q, pk.latent(x), pv.latent(x), pk, pv, positions, 10000.0, lengths)
    assert torch.allclose(out.double(), ref, atol=1e-5)


@pytest.fixture(scope="module")
def model():
    return MinimalLVLM(LVLMConfig.tiny(n_layers=2, init_std=0.1), seed=0)


@torch.no_grad()
def test_identity_and_restore(model):
    ids = randint(0, 250, (2, 11), seed=12)
    ref = model.forward_tokens(input_ids=ids)
    with Palu(rank_ratio=1.0)(model):
        assert torch.equal(model.forward_tokens(input_ids=ids), ref)
    with Palu(rank_ratio=0.25, group_size=1)(model):
        compressed = model.forward_tokens(input_ids=ids)
    assert not torch.allclose(compressed, ref, atol=1e-3)
    assert torch.equal(model.forward_tokens(input_ids=ids), ref)  # restored on exit


@torch.no_grad()
def test_latent_cache_attention_equals_the_model_attention(model):
    cfg = model.cfg
    ids = randint(0, 250, (1, 13), seed=13)
    grams = gram_of_projection_inputs(model, [ids])
    palu = Palu(rank_ratio=0.5, group_size=2, grams=grams)
    layer = model.layers[0]
    h = layer.input_norm(model.embed_tokens(ids))
    positions = torch.arange(13)[None]
    fk, fv = palu.factors(model)[0]
    with palu(model):
        q, k, v = layer.attn.project_qkv(h, positions)  # what the model attends with
    p = torch.softmax(q[:, :, -1:] @ k.repeat_interleave(2, 1).transpose(-1, -2) * cfg.head_dim**-0.5, -1)
    ref = (p @ v.repeat_interleave(2, 1))[:, :, 0]
    out = palu_attention(q[:, :, -1], fk.latent(h), fv.latent(h), fk, fv, positions, cfg.rope_theta, torch.tensor([13]))
    assert torch.allclose(out, ref, atol=1e-5)
    # keys: latent reconstruction then RoPE is exactly the factored projection the model used
    keys = rope(
        fk.reconstruct(fk.latent(h)).reshape(1, 13, 2, cfg.head_dim).transpose(1, 2),
        positions[:, None],
        base=cfg.rope_theta,
        layout="half",
    )
    assert torch.allclose(keys, k, atol=1e-5)
