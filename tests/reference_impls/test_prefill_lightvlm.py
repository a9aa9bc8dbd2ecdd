"""LightVLM pyramid token merging (2509.00419): naive vs optimised merge, size bookkeeping, identities."""

import pytest
import torch

from reference_impls.models.hooks import keep_text_and_top_visual
from reference_impls.prefill.lightvlm import LightVLM, lightvlm_merge, naive_lightvlm_merge
from reference_impls.prefill.pyramiddrop import PyramidDrop
from tests.reference_impls._lvlm_prompts import image_prompt, tiny_model
from tests.reference_impls._utils import randn


@pytest.mark.parametrize("L,n_keep", [(1, 0), (63, 5), (577, 57)])
def test_merge_naive_vs_optimised(L, n_keep):
    B, C, D = 3, 12, 8
    h, metric = randn(B, L, C, seed=L), randn(B, L, D, seed=L + 1)
    sizes = 1.0 + torch.randint(0, 3, (B, L), generator=torch.Generator().manual_seed(L)).float()
    lengths = torch.tensor([L, max(1, L - 9), max(1, L // 2)])
    vis = torch.zeros(B, L, dtype=torch.bool)
    if L > 1:
        vis[:, 1 : L - 1] = True
        vis &= torch.arange(L)[None] < (lengths[:, None] - 1)
    n_keep_t = torch.minimum(torch.full((B,), n_keep), vis.sum(1))
    keep = keep_text_and_top_visual(randn(B, L, seed=7), vis, lengths, n_keep_t)
    got_h, got_s = lightvlm_merge(h, metric, sizes, keep, vis, lengths, impl="naive")
    want_h, want_s = naive_lightvlm_merge(h, metric, sizes, keep, vis, lengths)
    torch.testing.assert_close(got_h, want_h, rtol=1e-5, atol=1e-6)
    assert torch.equal(got_s, want_s)
    # size bookkeeping: kept tokens carry the total size of the valid tokens of each row
    for b in range(B):
        kb = keep[b][keep[b] >= 0]
        assert float(got_s[b, kb].sum()) == pytest.approx(float(sizes[b, : int(lengths[b])].sum()))


def test_weighted_average_by_hand():
    h = torch.tensor([[[1.0, 0.0], [3.0, 1.0], [5.0, 5.0], [0.0, 0.0]]])
    metric = torch.tensor([[[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.0, 1.0]]])
    sizes = torch.tensor([[1.0, 2.0, 1.0, 1.0]])
    vis = torch.tensor([[True, True, True, False]])
    keep = torch.tensor([[0, 2, 3]])  # token 1 (size 2) merges into token 0 (cosine ~1)
    out_h, out_s = lightvlm_merge(h, metric, sizes, keep, vis, torch.tensor([4]))
    torch.testing.assert_close(out_h[0, 0], torch.tensor([(1 + 2 * 3) / 3, 2 / 3]))
    assert out_s[0].tolist() == [3.0, 2.0, 1.0, 1.0]
    assert torch.equal(out_h[0, 2:], h[0, 2:])


def test_identity_and_no_merge_equals_pruning():
    model = tiny_model()
    ids, lengths, pix = image_prompt(model.cfg, [2, 5], [30, 26])
    with torch.no_grad():
        base = model.prefill(ids, pix, lengths=lengths)
        same = model.prefill(ids, pix, lengths=lengths, hooks=[LightVLM(ratio_list=(1.0, 1.0, 1.0))])
        assert torch.equal(base.logits, same.logits)
        plain = model.prefill(ids, pix, lengths=lengths, hooks=[LightVLM(merge=False)])
        pdrop = model.prefill(
            ids, pix, lengths=lengths, hooks=[PyramidDrop(ratio_list=(0.5, 0.25, 0.1), position_mode="keep")]
        )
        assert torch.equal(plain.logits, pdrop.logits)


def test_merging_shortens_and_matches_single_runs():
    model = tiny_model()
    cfg = model.cfg
    ids, lengths, pix = image_prompt(cfg, [1, 6], [30, 27], seed=3)
    with torch.no_grad():
        res = model.prefill(ids, pix, lengths=lengths, hooks=[LightVLM()])
        kept = [16, 8, 4, 1]
        for l in range(cfg.n_layers):
            assert torch.equal(res.cache.lengths(l), lengths - 16 + kept[l])
        st = res.state
        for b in range(2):
            n = int(st.lengths[b])
            assert float(st.sizes[b, :n].sum()) == float(lengths[b])  # every token represented once
            pos = st.positions[b, :n]
            assert torch.equal(pos, st.source_index[b, :n])  # dominant tokens keep their ids
            single = model.prefill(ids[b : b + 1, : int(lengths[b])], pix[b : b + 1], hooks=[LightVLM()])
            torch.testing.assert_close(res.logits[b], single.logits[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kw",
    [dict(ratio_list=(1.2,)), dict(layer_list=[1, 2], ratio_list=(0.5, 0.6)), dict(layer_list=[0], ratio_list=(0.5,))],
)
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        LightVLM(**kw)


def test_bad_shapes():
    h = randn(1, 5, 4)
    with pytest.raises(ValueError):
        lightvlm_merge(
            h,
            randn(1, 4, 3),
            torch.ones(1, 5),
            torch.tensor([[0, 1]]),
            torch.ones(1, 5, dtype=torch.bool),
            torch.tensor([5]),
        )
