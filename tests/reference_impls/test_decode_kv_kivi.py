"""KIVI (arXiv 2402.02750): the vectorised quantisers against the loop specification, hand-worked groups, the
residual schedule of the official code, and the cache inside the minimal LVLM."""

import pytest
import torch

from reference_impls.decode.kv import kivi
from reference_impls.decode.kv.kivi import KIVICache
from reference_impls.models import LVLMConfig, MinimalLVLM
from tests.reference_impls._cache_checks import greedy_logits
from tests.reference_impls._lvlm_prompts import image_prompt
from tests.reference_impls._utils import randn

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("shape,group", [((3, 2, 8, 8), 4), ((1, 3, 6, 12), 2), ((2, 1, 12, 4), 4)])
def test_vectorised_matches_spec(bits, shape, group):
    x = randn(*shape, seed=bits + shape[2])
    for naive, fast, along in (
        (kivi.naive_quantize_keys, kivi.quantize_keys, "tokens"),
        (kivi.naive_quantize_values, kivi.quantize_values, "channels"),
    ):
        if along == "channels" and shape[3] % group:
            continue
        ref = naive(x, bits, group)
        out = fast(x, bits, group)
        for a, b in zip(out, ref):
            assert torch.equal(a, b)
        deq = kivi.dequantize(*out, group, along)
        assert torch.equal(deq, kivi.naive_dequantize(*ref, group, along))
        # asymmetric min/max rounding: every element within half a step of its group's scale
        step = out[1].repeat_interleave(group, dim=2 if along == "tokens" else 3)
        assert bool(((deq - x).abs() <= step / 2 + 1e-6).all())


def test_hand_worked_groups():
    # keys, one channel over a group of 4 tokens: [1, 2, 3, 4] -> min 1, scale (4 - 1) / 3 = 1, codes 0..3;
    # a constant channel gets scale 0 and dequantises to its value
    k = torch.zeros(1, 1, 4, 2)
    k[0, 0, :, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    k[0, 0, :, 1] = 10.0
    codes, scale, minimum = kivi.quantize_keys(k, bits=2, group_size=4)
    assert codes[0, 0, :, 0].tolist() == [0, 1, 2, 3] and scale[0, 0, 0].tolist() == [1.0, 0.0]
    assert minimum[0, 0, 0].tolist() == [1.0, 10.0]
    assert torch.equal(kivi.dequantize(codes, scale, minimum, 4, "tokens"), k)
    # values, one token, group of 4 channels: [-1, 0, 0.5, 2] -> min -1, scale 1, (x - min) = [0, 1, 1.5, 3];
    # 1.5 rounds half to even (torch.round, as the official code) -> code 2 -> 1.0
    v = torch.tensor([-1.0, 0.0, 0.5, 2.0]).view(1, 1, 1, 4)
    codes, scale, minimum = kivi.quantize_values(v, bits=2, group_size=4)
    assert codes.flatten().tolist() == [0, 1, 2, 3]
    assert kivi.dequantize(codes, scale, minimum, 4, "channels").flatten().tolist() == [-1.0, 0.0, 1.0, 2.0]


def test_pack_unpack():
    codes = torch.tensor([[1, 2, 3, 0]], dtype=torch.uint8)
    assert kivi.pack_codes(codes, 2).tolist() == [[1 + (2 << 2) + (3 << 4)]]  # = 57
    for bits in (2, 4, 8):
        c = torch.randint(0, 2**bits, (3, 5, 16), generator=torch.Generator().manual_seed(bits)).to(torch.uint8)
        assert torch.equal(kivi.unpack_codes(kivi.pack_codes(c, bits), bits), c)


def _fill(cache, layer, k, v, n_new):
    T = k.shape[2]
    pos = cache.next_position[:, None] + torch.arange(T)
    out = cache.update(layer, k, v, pos, n_new)
    cache.next_position = cache.next_position + n_new
    return out


@pytest.mark.parametrize("impl", ["naive", "torch"])
def test_residual_schedule_follows_official_code(impl):
    # residual R = 4, groups of 2; a 10-token prompt then 3 decode tokens, one batch row
    torch.manual_seed(0)
    cache = KIVICache(1, 1, 2, 4, 32, bits=2, group_size=2, residual_length=4, impl=impl)
    raw_k, raw_v = randn(1, 2, 13, 4, seed=1), randn(1, 2, 13, 4, seed=2)
    one = torch.ones(1, dtype=torch.long)
    _fill(cache, 0, raw_k[:, :, :10], raw_v[:, :, :10], 10 * one)
    assert (cache.key_quantised[0][0], cache.value_quantised[0][0]) == (0, 0)  # prefill attends exactly
    expected = [(8, 6), (8, 7), (12, 8)]  # keys: whole chunks of 4; values: all but the newest 4
    for step, (kq, vq) in enumerate(expected):
        t = 10 + step
        kv = _fill(cache, 0, raw_k[:, :, t : t + 1], raw_v[:, :, t : t + 1], one)
        assert (cache.key_quantised[0][0], cache.value_quantised[0][0]) == (kq, vq)
        # exact residuals, quantised prefixes equal to an independent quantise/dequantise of the raw tokens
        assert torch.equal(kv.k[:, :, kq : t + 1], raw_k[:, :, kq : t + 1])
        assert torch.equal(kv.v[:, :, vq : t + 1], raw_v[:, :, vq : t + 1])
        for c in range(0, kq, 4):
            ref = kivi.naive_dequantize(*kivi.naive_quantize_keys(raw_k[:, :, c : c + 4], 2, 2), 2, "tokens")
            assert torch.allclose(kv.k[:, :, c : c + 4], ref, atol=1e-6)
        ref_v = kivi.naive_dequantize(*kivi.naive_quantize_values(raw_v[:, :, :vq], 2, 2), 2, "channels")
        assert torch.allclose(kv.v[:, :, :vq], ref_v, atol=1e-6)
    with pytest.raises(ValueError):
        cache.rollback(2)  # would reach into quantised values


@pytest.fixture(scope="module")
def model_setup():
    model = MinimalLVLM(LVLMConfig.tiny(n_layers=3, init_std=0.1), seed=0, score_impl="naive")
    ids, lens, pix = image_prompt(model.cfg, [2, 4], [27, 23])
    ref = greedy_logits(model, ids, pix, lens, None, 6)
    return model, ids, lens, pix, ref


@pytest.mark.parametrize("kw", [dict(bits=16), dict(bits=2, group_size=4, residual_length=64)])
def test_identity_settings_reproduce_the_model(model_setup, kw):
    model, ids, lens, pix, ref = model_setup
    tokens, logits = greedy_logits(model, ids, pix, lens, KIVICache.for_model(model.cfg, 2, 64, **kw), 6)
    assert torch.equal(tokens, ref[0]) and torch.equal(logits, ref[1])


@torch.no_grad()
def test_quantised_cache_in_the_model(model_setup):
    model, ids, lens, pix, _ = model_setup
    full = model.new_cache(2, 64)
    model.prefill(ids, pix, lengths=lens, cache=full)
    step = torch.tensor([5, 7])
    ref = model.decode_step(step, full)
    errs = {}
    for bits in (2, 8):
        cache = KIVICache.for_model(model.cfg, 2, 64, bits=bits, group_size=4, residual_length=4)
        model.prefill(ids, pix, lengths=lens, cache=cache)
        logits = model.decode_step(step, cache)
        errs[bits] = float((logits - ref).norm() / ref.norm())
        # ragged rows keep their own schedules: 27 and 23 prompt tokens -> 24 and 20 quantised keys
        assert [cache.key_quantised[0][b] for b in range(2)] == [24, 20]
        assert [cache.value_quantised[0][b] for b in range(2)] == [23, 19]
        full_bytes = (
            2 * int(cache.lengths(0).sum()) * model.cfg.n_layers * model.cfg.n_kv_heads * model.cfg.head_dim * 4
        )
        assert cache.kv_bytes() < full_bytes
    assert 0 < errs[8] < 0.01 < errs[2]


def test_bad_arguments():
    with pytest.raises(ValueError):
        KIVICache(1, 1, 2, 8, 16, bits=3)
    with pytest.raises(ValueError):
        KIVICache(1, 1, 2, 8, 16, group_size=4, residual_length=6)
    with pytest.raises(ValueError):
        kivi.quantize_keys(torch.zeros(1, 1, 5, 4), 2, 2)
