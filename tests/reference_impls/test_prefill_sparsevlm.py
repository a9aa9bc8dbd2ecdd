"""SparseVLM (2410.04417): raters, DPC-kNN merge, identity, recycling bookkeeping, ragged batches."""

import pytest
import torch

from reference_impls.prefill.sparsevlm import (
    SparseVLM,
    dpc_knn_merge,
    naive_dpc_knn_merge,
    naive_select_raters,
    recycle_count,
    select_raters,
)
from tests.reference_impls._lvlm_prompts import image_prompt, tiny_model
from tests.reference_impls._utils import randn


@pytest.mark.parametrize("N,c", [(1, 1), (37, 4), (63, 7), (20, 20)])
def test_dpc_knn_naive_vs_matrix(N, c):
    x = randn(N, 8, seed=N)
    merged_n, assign_n, centers_n = naive_dpc_knn_merge(x, c)
    merged, assign, centers = dpc_knn_merge(x, c)
    assert torch.equal(assign, assign_n) and torch.equal(centers, centers_n)
    torch.testing.assert_close(merged, merged_n, rtol=1e-5, atol=1e-6)
    assert torch.equal(assign[centers], torch.arange(c))  # a centre belongs to its own cluster
    assert torch.bincount(assign, minlength=c).sum() == N


def test_raters_naive_vs_batched():
    B, L = 4, 41
    h = randn(B, L, 16, seed=5)
    vis = torch.zeros(B, L, dtype=torch.bool)
    vis[0, 2:18] = True
    vis[1, 5:30] = True  # question after the image
    vis[3, 30:40] = True  # image right before the last token -> only the last token rates
    lengths = torch.tensor([41, 36, 12, 41])
    got, want = select_raters(h, vis, lengths), naive_select_raters(h, vis, lengths)
    assert torch.equal(got, want)
    assert got[2].tolist() == [i == 11 for i in range(L)]  # no image: the last token rates
    assert got[3].nonzero().flatten().tolist() == [40]
    assert not bool((got & vis).any()) and bool(got[0, 18:].any())


def test_recycle_count():
    assert [recycle_count(n) for n in (0, 1, 6, 100)] == [0, 1, 2, 31]


def test_identity_when_keeping_all():
    model = tiny_model(n_layers=5)
    ids, lengths, pix = image_prompt(model.cfg, [2, 5], [30, 26])
    with torch.no_grad():
        base = model.prefill(ids, pix, lengths=lengths)
        same = model.prefill(ids, pix, lengths=lengths, hooks=[SparseVLM(layers=[1, 3], keep=[16, 16])])
    assert torch.equal(base.logits, same.logits)


@pytest.mark.parametrize("mode", ["keep", "contiguous"])
def test_schedule_recycling_and_single_runs(mode):
    model = tiny_model(n_layers=5)
    cfg = model.cfg
    ids, lengths, pix = image_prompt(cfg, [2, 6], [30, 27], seed=2)
    make = lambda: SparseVLM(layers=[1, 2, 3], keep=[10, 6, 3], position_mode=mode)
    with torch.no_grad():
        res = model.prefill(ids, pix, lengths=lengths, hooks=[make()])
        # stage 1: 16 -> 10 kept + 1 cluster (6 pruned -> 2 recycled -> 1 cluster)
        n_text = lengths - cfg.n_visual_tokens
        assert res.layer_tokens[2].tolist() == (n_text + 11).tolist()
        assert torch.equal(res.cache.lengths(2), n_text + 11)
        assert torch.equal(res.cache.lengths(1), lengths)
        # sizes: every original visual token is represented at most once; text keeps size 1
        st = res.state
        for b in range(2):
            n = int(st.lengths[b])
            assert float(st.sizes[b, :n][~st.vis_mask[b, :n]].sum()) == float(n_text[b])
            assert float(st.sizes[b, :n][st.vis_mask[b, :n]].sum()) <= cfg.n_visual_tokens
            pos = st.positions[b, :n]
            if mode == "contiguous":
                assert torch.equal(pos, torch.arange(n))
            single = model.prefill(ids[b : b + 1, : int(lengths[b])], pix[b : b + 1], hooks=[make()])
            torch.testing.assert_close(res.logits[b], single.logits[0], rtol=1e-4, atol=1e-5)


def test_no_recycling_is_plain_pruning():
    model = tiny_model(n_layers=5)
    ids, lengths, pix = image_prompt(model.cfg, [3], [28], seed=3)
    with torch.no_grad():
        res = model.prefill(ids, pix, hooks=[SparseVLM(layers=[1, 2], keep=[8, 4], recycle=False)])
    assert res.layer_tokens[:, 0].tolist() == [28, 28, 20, 16, 16]
    assert float(res.state.sizes.max()) == 1.0


def test_from_retain_scales_schedule():
    assert SparseVLM.from_retain(192).keep == (300, 200, 110)
    assert SparseVLM.from_retain(64, n_visual=16, layers=(1, 2, 3)).keep == (2, 1, 0)


@pytest.mark.parametrize(
    "kw",
    [
        dict(layers=[2, 1], keep=[3, 2]),
        dict(layers=[1], keep=[3, 2]),
        dict(layers=[1, 2], keep=[2, 3]),
        dict(layers=[1], keep=[-1]),
        dict(position_mode="x"),
    ],
)
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        SparseVLM(**kw)


def test_budget_is_clamped_and_layers_are_checked():
    """A budget above the visual count keeps every token (our clamp; upstream clamps to n_vis - 1 and always drops
    one), so it reproduces the unmodified prefill; stage layers must leave one layer after the last stage."""
    from reference_impls.technique import UnsupportedModel

    model = tiny_model(n_layers=5)
    ids, lengths, pix = image_prompt(model.cfg, [1], [24])
    with torch.no_grad():
        base = model.prefill(ids, pix)
        same = model.prefill(ids, pix, hooks=[SparseVLM(layers=[1], keep=[17])])  # 16 visual tokens
    assert torch.equal(same.logits, base.logits) and same.layer_tokens[:, 0].tolist() == [24] * 5
    with pytest.raises(ValueError):
        model.prefill(ids, pix, hooks=[SparseVLM(layers=[1, 4], keep=[8, 4])])  # 4 >= n_layers - 1
    with pytest.raises(UnsupportedModel, match="n_layers - 1"):
        SparseVLM(layers=[1, 4], keep=[8, 4])(model)
    with pytest.raises(ValueError):
        SparseVLM.from_retain(100)
    with pytest.raises(ValueError):
        dpc_knn_merge(randn(5, 4), 6)
