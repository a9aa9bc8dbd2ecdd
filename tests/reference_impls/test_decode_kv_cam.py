"""CaM (ICML 2024): the merge rule on hand-worked numbers, the vectorised merge against the specification, and the
cache inside the minimal LVLM (identity, plain sink + window eviction, merging changes the values)."""

import pytest
import torch

from reference_impls.decode.kv.cam import CaMCache, cam_merge, merge_probability, naive_cam_merge
from reference_impls.models import LVLMConfig, MinimalLVLM
from tests.reference_impls._cache_checks import greedy_logits
from tests.reference_impls._lvlm_prompts import image_prompt
from tests.reference_impls._utils import randn

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_hand_worked_merge():
    v = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]).view(1, 1, 5, 1)
    # evicted slot 1 (A = 0.3) into slots 2, 3 (A = 0.4, 0.2): p = 0.3 / 0.3 = 1 -> each gets v1 / 2 = 1
    attention = torch.tensor([0.0, 0.3, 0.4, 0.2, 0.6]).view(1, 1, 5)
    for fn in (naive_cam_merge, cam_merge):
        out = fn(v, attention, [1], 2, torch.tensor([[[0.999]]]))
        assert out.flatten().tolist() == [1.0, 2.0, 4.0, 5.0, 5.0]
    # A = 0.15: p = 0.5; a draw of 0.4 merges, a draw of 0.6 does not
    attention[0, 0, 1] = 0.15
    assert merge_probability(attention[0, 0, 1], attention[0, 0, 2:4]).item() == pytest.approx(0.5)
    assert cam_merge(v, attention, [1], 2, torch.tensor([[[0.4]]])).flatten().tolist() == [1, 2, 4, 5, 5]
    assert torch.equal(cam_merge(v, attention, [1], 2, torch.tensor([[[0.6]]])), v)
    # no attention at all in the window: probability 0 (the official code maps 0 / 0 to 0); zero mean, positive
    # numerator: 1
    assert merge_probability(torch.tensor(0.0), torch.zeros(3)).item() == 0.0
    assert merge_probability(torch.tensor(0.2), torch.zeros(3)).item() == 1.0
    # the window is cut at the end of the sequence: slot 3 merges into slot 4 only
    out = cam_merge(v, torch.ones(1, 1, 5), [3], 2, torch.zeros(1, 1, 1))
    assert out.flatten().tolist() == [1.0, 2.0, 3.0, 4.0, 7.0]


@pytest.mark.parametrize("B,H,L,evicted,m", [(2, 3, 11, [2, 3, 4], 3), (1, 2, 7, [5, 6], 4), (3, 1, 9, [1], 8)])
def test_vectorised_matches_spec(B, H, L, evicted, m):
    v = randn(B, H, L, 5, seed=L)
    attention = randn(B, H, L, seed=L + 1).abs()
    u = torch.rand(B, H, len(evicted), generator=torch.Generator().manual_seed(L))
    assert torch.equal(cam_merge(v, attention, evicted, m, u), naive_cam_merge(v, attention, evicted, m, u))


@pytest.fixture(scope="module")
def model_setup():
    model = MinimalLVLM(LVLMConfig.tiny(n_layers=2, init_std=0.1), seed=0, score_impl="naive")
    ids, lens, pix = image_prompt(model.cfg, [2, 3], [25, 22])
    ref = greedy_logits(model, ids, pix, lens, None, 5)
    return model, ids, lens, pix, ref


def test_window_covering_everything_is_identity(model_setup):
    model, ids, lens, pix, ref = model_setup
    cache = CaMCache.for_model(model.cfg, 2, 64, n_sink=2, window=40, merge_size=4)
    tokens, logits = greedy_logits(model, ids, pix, lens, cache, 5)
    assert torch.equal(tokens, ref[0]) and torch.equal(logits, ref[1])


@torch.no_grad()
def test_eviction_and_merging_in_the_model(model_setup):
    model, ids, lens, pix, _ = model_setup
    full = model.new_cache(2, 64)
    model.prefill(ids, pix, lengths=lens, cache=full)
    plain = CaMCache.for_model(model.cfg, 2, 64, n_sink=2, window=8, merge=False)
    model.prefill(ids, pix, lengths=lens, cache=plain)
    for layer in range(2):
        assert plain.lengths(layer).tolist() == [10, 10]
        for b, n in enumerate(lens.tolist()):
            keep = list(range(2)) + list(range(n - 8, n))  # StreamingLLM: sinks + the last window
            assert torch.equal(plain.keys[layer][b, :, :10], full.keys[layer][b, :, keep])
            assert torch.equal(plain.values[layer][b, :, :10], full.values[layer][b, :, keep])
    merged = CaMCache.for_model(
        model.cfg, 2, 64, n_sink=2, window=8, merge_size=4, generator=torch.Generator().manual_seed(0)
    )
    model.prefill(ids, pix, lengths=lens, cache=merged)
    for layer in range(2):
        assert torch.equal(merged.keys[layer][:, :, :10], plain.keys[layer][:, :, :10])  # keys are never merged
        assert torch.equal(merged.values[layer][:, :, :2], plain.values[layer][:, :, :2])  # sinks untouched
        assert not torch.equal(merged.values[layer][:, :, 2:10], plain.values[layer][:, :, 2:10])
    tok = torch.tensor([3, 4])
    assert not torch.equal(model.decode_step(tok, merged), model.decode_step(tok, plain))
    assert merged.lengths(0).tolist() == [10, 10]


def test_bad_arguments():
    with pytest.raises(ValueError):
        CaMCache(1, 1, 1, 4, 8, window=0)
    with pytest.raises(ValueError):
        cam_merge(torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4), [1], 2, torch.zeros(1, 1, 2))
