"""PyramidDrop (2410.17247): naive vs optimised boundary, stage counts, identity, ragged batches."""

import pytest
import torch

from reference_impls.prefill.pyramiddrop import (
    PyramidDrop,
    default_layer_list,
    naive_pyramiddrop_keep,
    pyramiddrop_select,
    stage_keep_counts,
)
from tests.reference_impls._lvlm_prompts import FixedPrune, image_prompt, tiny_model
from tests.reference_impls._utils import randn


def test_default_layers():
    assert default_layer_list(32) == [8, 16, 24]
    assert default_layer_list(28) == [7, 14, 21]
    assert default_layer_list(4) == [1, 2, 3]


@pytest.mark.parametrize("L", [1, 63, 577])
def test_naive_vs_optimised_boundary(L):
    model = tiny_model()
    layer = model.layers[2]
    B = 3
    lengths = torch.tensor([L, max(1, L - 7), max(1, L // 3)])
    vis = torch.zeros(B, L, dtype=torch.bool)
    if L > 1:
        vis[:, 1 : L // 2] = True
        vis &= torch.arange(L)[None] < (lengths[:, None] - 1)
    n_keep = stage_keep_counts(vis.sum(1), 0.25)
    positions = torch.arange(L).expand(B, L) * 2  # gaps, as after FastV "keep"
    rows = torch.zeros(B, L, dtype=torch.bool)
    rows[torch.arange(B), lengths - 1] = True
    with torch.no_grad():
        h = layer.input_norm(randn(B, L, model.cfg.hidden, seed=L))
        colsum = layer.attn_scores_before(h, positions, rows, score_impl="naive")
        got = pyramiddrop_select(colsum, vis, lengths, n_keep)
        want = naive_pyramiddrop_keep(
            h,
            layer.attn.q_proj.weight,
            layer.attn.k_proj.weight,
            positions,
            vis,
            lengths,
            n_keep,
            n_heads=4,
            n_kv_heads=2,
            rope_theta=model.cfg.rope_theta,
        )
    assert torch.equal(got, want)


def test_stage_counts_cache_lengths_and_positions():
    model = tiny_model()
    cfg = model.cfg
    ids, lengths, pix = image_prompt(cfg, [2, 6], [30, 27], seed=3)
    with torch.no_grad():
        res = model.prefill(ids, pix, lengths=lengths, hooks=[PyramidDrop()])
    n_vis = cfg.n_visual_tokens
    kept = [n_vis, n_vis // 2, n_vis // 4, n_vis // 8]  # 16, 8, 4, 2
    for l in range(cfg.n_layers):
        assert torch.equal(res.cache.lengths(l), lengths - n_vis + kept[l]), l
        assert torch.equal(res.cache.rope_shift(l), torch.full((2,), kept[l] - n_vis))
    n_final = int(res.state.lengths[1])
    assert torch.equal(res.state.positions[1, :n_final], torch.arange(n_final))


def test_identity_and_batch_equals_single():
    model = tiny_model()
    ids, lengths, pix = image_prompt(model.cfg, [1, 8], [30, 28], seed=4)
    with torch.no_grad():
        base = model.prefill(ids, pix, lengths=lengths)
        same = model.prefill(ids, pix, lengths=lengths, hooks=[PyramidDrop(ratio_list=(1.0, 1.0, 1.0))])
        assert torch.equal(base.logits, same.logits)
        gen = model.generate(ids, pix, lengths=lengths, max_new_tokens=4, hooks=[PyramidDrop()])
        for b in range(2):
            n = int(lengths[b])
            g1 = model.generate(ids[b : b + 1, :n], pix[b : b + 1], max_new_tokens=4, hooks=[PyramidDrop()])
            assert torch.equal(gen[b], g1[0])


def test_decode_continues_contiguous_numbering():
    """Decoding after PDrop equals a one-shot prefill of prompt + token pruned to the same set before layer 2."""
    model = tiny_model()
    ids, lengths, pix = image_prompt(model.cfg, [3], [26], seed=5)
    with torch.no_grad():
        res = model.prefill(ids, pix, hooks=[PyramidDrop(layer_list=[2], ratio_list=[0.5])])
        tok = res.logits.argmax(-1)
        step = model.decode_step(tok, res.cache)
        n = int(res.state.lengths[0])
        keep = torch.cat([res.state.source_index[:, :n], torch.tensor([[26]])], 1)
        ref = model.prefill(torch.cat([ids, tok[:, None]], 1), pix, hooks=[FixedPrune(2, keep, "contiguous")])
    assert n == 26 - model.cfg.n_visual_tokens // 2
    torch.testing.assert_close(step, ref.logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kw",
    [
        dict(ratio_list=(0.5, 0.7, 0.1), layer_list=[1, 2, 3]),
        dict(ratio_list=(1.5,)),
        dict(layer_list=[2, 1], ratio_list=(0.5, 0.2)),
        dict(layer_list=[0], ratio_list=(0.5,)),
        dict(position_mode="x"),
    ],
)
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        PyramidDrop(**kw)


def test_layer_out_of_range_raises_at_run():
    model = tiny_model()
    ids, lengths, pix = image_prompt(model.cfg, [1], [24])
    with pytest.raises(ValueError):
        model.prefill(ids, pix, hooks=[PyramidDrop(layer_list=[2, 4], ratio_list=(0.5, 0.25))])


class _BothScores:
    """Collects, at one layer, the single-row recomputation (before the layer) and the layer's own scores."""

    def __init__(self, layer):
        self.layer, self.before, self.inpass = layer, None, None

    def before_layer(self, layer, state, ctx):
        if layer == self.layer:
            from reference_impls.models.hooks import last_token_rows

            self.before = ctx.recompute_scores(state, last_token_rows(state))
        return state

    def score_rows(self, layer, state):
        if layer == self.layer:
            from reference_impls.models.hooks import last_token_rows

            return last_token_rows(state)
        return None

    def after_layer(self, layer, state, ctx, colsum):
        if layer == self.layer:
            self.inpass = colsum
        return state


def test_recomputed_row_equals_the_layers_own_attention_row():
    model = tiny_model()
    ids, lengths, pix = image_prompt(model.cfg, [2, 4], [29, 24], seed=8)
    probe = _BothScores(2)
    with torch.no_grad():
        model.prefill(ids, pix, lengths=lengths, hooks=[probe])
    torch.testing.assert_close(probe.before, probe.inpass, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(probe.before.sum(-1), torch.ones(2, model.cfg.n_heads), rtol=1e-5, atol=1e-5)
