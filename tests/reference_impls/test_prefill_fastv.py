"""FastV (2403.06764): naive vs optimised selection, identity at R = 0, ragged batches, pruned cache."""

import pytest
import torch

from reference_impls.models import LVLMConfig, MinimalLVLM
from reference_impls.prefill.fastv import FastV, n_keep_visual, naive_fastv_keep
from reference_impls.technique import UnsupportedModel
from tests.reference_impls._lvlm_prompts import FixedPrune, image_prompt, tiny_model
from tests.reference_impls._utils import randn


@pytest.mark.parametrize("L,n_vis,G", [(1, 0, 1), (63, 1, 1), (63, 40, 2), (577, 576, 4)])
@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75])
def test_naive_vs_optimised(L, n_vis, G, ratio):
    B, Hkv, D = 3, 2, 16
    q, k = randn(B, Hkv * G, L, D, seed=L), randn(B, Hkv, L, D, seed=L + 1)
    vis = torch.zeros(B, L, dtype=torch.bool)
    start = 0 if L == 1 else 1
    vis[:, start : start + n_vis] = True if L > 1 else False
    lengths = torch.tensor([L, max(1, L - 5), max(1, L // 2)]) if L > 1 else torch.ones(3, dtype=torch.long)
    vis &= torch.arange(L)[None] < (lengths[:, None] - 1)
    got = FastV(ratio=ratio, impl="naive").keep_indices(q, k, vis, lengths)
    want = naive_fastv_keep(q, k, vis, lengths, ratio)
    assert torch.equal(got, want)
    kept_vis = torch.stack([vis[b][got[b][got[b] >= 0]].sum() for b in range(B)])
    assert torch.equal(kept_vis, n_keep_visual(vis.sum(1), 1 - ratio))


def test_identity_at_ratio_zero():
    model = tiny_model()
    ids, lengths, pix = image_prompt(model.cfg, [2, 5], [30, 26])
    with torch.no_grad():
        base = model.prefill(ids, pix, lengths=lengths)
        same = model.prefill(ids, pix, lengths=lengths, hooks=[FastV(k=2, ratio=0.0)])
        assert torch.equal(base.logits, same.logits)
        plain = model.generate(ids, pix, lengths=lengths, max_new_tokens=4)
        with FastV(ratio=0.0)(model):
            assert torch.equal(plain, model.generate(ids, pix, lengths=lengths, max_new_tokens=4))


@pytest.mark.parametrize("mode", ["keep", "contiguous"])
def test_prunes_cache_and_matches_single_runs(mode):
    model = tiny_model()
    cfg = model.cfg
    ids, lengths, pix = image_prompt(cfg, [2, 7], [30, 26], seed=1)
    hook = FastV(k=2, ratio=0.5, position_mode=mode)
    with torch.no_grad():
        res = model.prefill(ids, pix, lengths=lengths, hooks=[hook])
        n_drop = cfg.n_visual_tokens // 2
        for l in range(cfg.n_layers):
            want = lengths if l < 2 else lengths - n_drop
            assert torch.equal(res.cache.lengths(l), want), l
        assert res.layer_tokens[:, 0].tolist() == [30, 30, 30 - n_drop, 30 - n_drop]
        pos = res.state.positions[0, : int(res.state.lengths[0])]
        if mode == "keep":
            assert torch.equal(pos, res.state.source_index[0, : len(pos)])  # original ids, with gaps
        else:
            assert torch.equal(pos, torch.arange(len(pos)))
        with FastV(k=2, ratio=0.5, position_mode=mode)(model):
            gen = model.generate(ids, pix, lengths=lengths, max_new_tokens=4)
            for b in range(2):
                n = int(lengths[b])
                single = model.prefill(ids[b : b + 1, :n], pix[b : b + 1])
                torch.testing.assert_close(res.logits[b], single.logits[0], rtol=1e-4, atol=1e-5)
                g1 = model.generate(ids[b : b + 1, :n], pix[b : b + 1], max_new_tokens=4)
                assert torch.equal(gen[b], g1[0])


def test_hook_equals_pruned_model_spec():
    """The hook's kept set equals naive_fastv_keep on the layer-(K-1) queries/keys of the same model."""
    model = tiny_model()
    ids, lengths, pix = image_prompt(model.cfg, [1, 4], [28, 25], seed=2)
    hook = FastV(k=2, ratio=0.5)
    captured = {}
    layer = model.layers[1]
    orig = layer.attn.project_qkv

    def spy(h, positions):
        q, k, v = orig(h, positions)
        captured.setdefault("qk", (q, k))
        return q, k, v

    layer.attn.project_qkv = spy
    try:
        with torch.no_grad():
            res = model.prefill(ids, pix, lengths=lengths, hooks=[hook])
    finally:
        del layer.attn.project_qkv
    q, k = captured["qk"]
    vis = ids == model.cfg.image_token_id
    assert torch.equal(hook.kept, naive_fastv_keep(q, k, vis, lengths, 0.5))
    assert res.state.lengths.tolist() == (lengths - 8).tolist()


@pytest.mark.parametrize("kw", [dict(ratio=1.0), dict(ratio=-0.1), dict(k=0), dict(k=1.5), dict(position_mode="shift")])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        FastV(**kw)


def test_bad_shapes_and_layer_out_of_range():
    q, k = randn(1, 4, 9, 8), randn(1, 2, 9, 8)
    vis = torch.zeros(1, 9, dtype=torch.bool)
    with pytest.raises(ValueError):
        FastV().keep_indices(q, k[:, :, :5], vis, torch.tensor([9]))
    with pytest.raises(ValueError):
        FastV().keep_indices(q, k, vis[:, :5], torch.tensor([9]))
    model = tiny_model()
    ids, lengths, pix = image_prompt(model.cfg, [1], [24])
    with pytest.raises(ValueError):
        model.prefill(ids, pix, hooks=[FastV(k=model.cfg.n_layers)])
    with pytest.raises(UnsupportedModel, match="k=4 must be < the model's 4"):
        FastV(k=model.cfg.n_layers)(model)


def test_decode_after_pruning_equals_recompute():
    """A decode step after FastV equals a one-shot prefill of prompt + token pruned to the same set."""
    model = tiny_model()
    ids, lengths, pix = image_prompt(model.cfg, [3], [27], seed=6)
    with torch.no_grad():
        res = model.prefill(ids, pix, hooks=[FastV(k=2, ratio=0.5)])
        tok = res.logits.argmax(-1)
        step = model.decode_step(tok, res.cache)
        n = int(res.state.lengths[0])
        keep = torch.cat([res.state.source_index[:, :n], torch.tensor([[27]])], 1)
        ref = model.prefill(torch.cat([ids, tok[:, None]], 1), pix, hooks=[FixedPrune(2, keep, "keep")])
    torch.testing.assert_close(step, ref.logits, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_gpu_triton_scores_give_same_kept_set():
    cfg = LVLMConfig.tiny(init_std=0.1)
    naive = MinimalLVLM(cfg, seed=0, device="cuda", score_impl="naive")
    triton = MinimalLVLM(cfg, seed=0, device="cuda", score_impl="triton")
    ids, lengths, pix = image_prompt(cfg, [2, 7], [30, 26], seed=1)
    ids, lengths, pix = ids.cuda(), lengths.cuda(), pix.cuda()
    h1, h2 = FastV(k=2, ratio=0.5), FastV(k=2, ratio=0.5)
    with torch.no_grad():
        r1 = naive.prefill(ids, pix, lengths=lengths, hooks=[h1])
        r2 = triton.prefill(ids, pix, lengths=lengths, hooks=[h2])
    assert torch.equal(h1.kept, h2.kept)
    torch.testing.assert_close(r1.logits, r2.logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "n,ratio,upstream",
    [(5, 0.5, 2), (7, 0.5, 4), (9, 0.5, 4), (576, 0.75, 144), (10, 0.25, 8), (3, 0.5, 2), (16, 0.5, 8)],
)
def test_keep_count_rounds_as_the_official_code(n, ratio, upstream):
    """The official code keeps ``round(N * (1 - R))`` visual tokens with Python's round (half to even); ``upstream``
    is that number for each case (e.g. 2.5 -> 2, 3.5 -> 4, 4.5 -> 4)."""
    assert int(n_keep_visual(torch.tensor([n]), 1 - ratio)) == upstream == round(n * (1 - ratio))
