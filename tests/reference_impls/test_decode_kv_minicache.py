"""MiniCache (arXiv 2405.14366): SLERP merge and restore on hand-worked vectors, the vectorised path against the
token-by-token specification, and the cache inside the minimal LVLM."""

import math

import pytest
import torch

from reference_impls.decode.kv.minicache import (
    MiniCacheKV,
    minicache_merge,
    minicache_restore,
    naive_minicache_merge,
    naive_minicache_restore,
)
from reference_impls.models import LVLMConfig, MinimalLVLM
from tests.reference_impls._cache_checks import greedy_logits
from tests.reference_impls._lvlm_prompts import image_prompt
from tests.reference_impls._utils import randn

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_hand_worked_slerp():
    # x_l = (2, 0) and x_{l+1} = (0, 3): angle pi/2, t = 0.5 -> direction (cos 45, sin 45), norms 2 and 3
    first = torch.tensor([2.0, 0.0]).view(1, 1, 1, 2)
    second = torch.tensor([0.0, 3.0]).view(1, 1, 1, 2)
    for merge, restore in ((naive_minicache_merge, naive_minicache_restore), (minicache_merge, minicache_restore)):
        pair = merge(first, second, t=0.5, retain_ratio=0.0)
        s = math.sqrt(0.5)
        assert torch.allclose(pair.direction.flatten(), torch.tensor([s, s]))
        assert pair.norm_first.item() == 2.0 and pair.norm_second.item() == 3.0
        assert pair.distance.item() == pytest.approx(0.5)
        a, b = restore(pair)
        assert torch.allclose(a.flatten(), torch.tensor([2 * s, 2 * s]))
        assert torch.allclose(b.flatten(), torch.tensor([3 * s, 3 * s]))
        # t = 0.6 leans towards layer l + 1: angle 0.6 * pi / 2 from x_l
        pair = merge(first, second, t=0.6, retain_ratio=0.0)
        assert torch.allclose(
            pair.direction.flatten(), torch.tensor([math.cos(0.3 * math.pi), math.sin(0.3 * math.pi)])
        )
    # parallel vectors: the direction is their common one, restore is exact
    pair = minicache_merge(first, 5 * first, retain_ratio=0.0)
    a, b = minicache_restore(pair)
    assert torch.allclose(a, first) and torch.allclose(b, 5 * first)


@pytest.mark.parametrize("B,H,L,D,ratio", [(2, 3, 13, 8, 0.2), (1, 2, 7, 16, 0.05), (3, 1, 5, 4, 0.5)])
def test_vectorised_matches_spec(B, H, L, D, ratio):
    first = randn(B, H, L, D, seed=L)
    second = first + 0.7 * randn(B, H, L, D, seed=L + 1)  # correlated, as adjacent layers are
    ref = naive_minicache_merge(first, second, 0.6, ratio)
    out = minicache_merge(first, second, 0.6, ratio)
    assert torch.equal(out.retained, ref.retained)
    for name in ("direction", "norm_first", "norm_second", "distance", "retained_first", "retained_second"):
        assert torch.allclose(getattr(out, name), getattr(ref, name), atol=1e-6), name
    ra, rb = minicache_restore(out)
    na, nb = naive_minicache_restore(ref)
    assert torch.allclose(ra, na, atol=1e-6) and torch.allclose(rb, nb, atol=1e-6)
    # the retained tokens are those with the largest angular distance and come back exactly
    K = ref.retained.shape[-1]
    assert K == math.ceil(L * ratio)
    top = ref.distance.topk(K, dim=-1).values.min(-1).values
    assert bool((ref.distance.gather(2, ref.retained) >= top[..., None]).all())
    idx = out.retained[..., None].expand(B, H, K, D)
    assert torch.equal(ra.gather(2, idx), first.gather(2, idx))
    # merged tokens keep their own norms
    assert torch.allclose(ra.norm(dim=-1), first.norm(dim=-1), atol=1e-5)


@pytest.fixture(scope="module")
def model_setup():
    model = MinimalLVLM(LVLMConfig.tiny(n_layers=4, init_std=0.1), seed=0, score_impl="naive")
    ids, lens, pix = image_prompt(model.cfg, [2, 3], [25, 22])
    ref = greedy_logits(model, ids, pix, lens, None, 5)
    return model, ids, lens, pix, ref


@pytest.mark.parametrize("kw", [dict(start_layer=4), dict(start_layer=0, retain_ratio=1.0)])
def test_identity_settings(model_setup, kw):
    model, ids, lens, pix, ref = model_setup
    tokens, logits = greedy_logits(model, ids, pix, lens, MiniCacheKV.for_model(model.cfg, 2, 64, **kw), 5)
    assert torch.equal(tokens, ref[0]) and torch.equal(logits, ref[1])


@torch.no_grad()
def test_merged_cache_in_the_model(model_setup):
    model, ids, lens, pix, _ = model_setup
    full = model.new_cache(2, 64)
    model.prefill(ids, pix, lengths=lens, cache=full)
    cache = MiniCacheKV.for_model(model.cfg, 2, 64, retain_ratio=0.1)  # pairs (2, 3)
    model.prefill(ids, pix, lengths=lens, cache=cache)
    assert cache.pairs() == [(2, 3)] and not cache.merged  # prefill itself stays exact
    model.decode_step(torch.tensor([3, 4]), cache)
    assert list(cache.merged) == [2]
    for b, n in enumerate(lens.tolist()):
        ref_k = minicache_merge(full.keys[2][b : b + 1, :, :n], full.keys[3][b : b + 1, :, :n], 0.6, 0.1)
        ka, kb = minicache_restore(ref_k)
        assert torch.allclose(cache.keys[2][b : b + 1, :, :n], ka, atol=1e-6)
        assert torch.allclose(cache.keys[3][b : b + 1, :, :n], kb, atol=1e-6)
        for layer in (0, 1):  # layers below the range untouched
            assert torch.equal(cache.keys[layer][b, :, :n], full.keys[layer][b, :, :n])
    # padding never retained: row 1 (22 tokens) retains ceil(0.1 * 25) = 3 tokens among its own 22
    assert bool((cache.merged[2][0].retained[1] < 22).all())
    assert cache.kv_bytes() < 2 * int(cache.lengths(0).sum()) * 4 * model.cfg.n_kv_heads * model.cfg.head_dim * 4


def test_bad_arguments():
    with pytest.raises(ValueError):
        minicache_merge(torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 3, 4))
    with pytest.raises(ValueError):
        MiniCacheKV(2, 1, 1, 4, 8, t=1.5)
