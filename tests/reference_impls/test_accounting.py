"""Accounting: layer-averaged token counts (SparseVLM #12 formula) and FLOPs vs a FLOP counter."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from reference_impls import accounting as A
from reference_impls.models import LVLMConfig
from reference_impls.prefill.fastv import FastV
from reference_impls.prefill.pyramiddrop import PyramidDrop
from tests.reference_impls._lvlm_prompts import image_prompt, tiny_model


def test_layer_average_matches_formula():
    L, K, N, R, n_text = 32, 2, 576, 0.5, 64
    per_layer = A.fastv_tokens_per_layer(L, n_text, N, K, R)
    assert A.layer_averaged_tokens(per_layer) == pytest.approx(n_text + (K * N + (L - K) * N * (1 - R)) / L)
    pd = A.pyramiddrop_tokens_per_layer(32, 0, 576, [8, 16, 24], [0.5, 0.25, 0.125])
    assert A.layer_averaged_tokens(pd) == pytest.approx((8 * 576 + 8 * 288 + 8 * 144 + 8 * 72) / 32)
    batch = torch.tensor([[10, 20], [6, 20]])
    assert torch.equal(A.layer_averaged_tokens(batch), torch.tensor([8.0, 20.0], dtype=torch.float64))


def test_model_trace_matches_closed_form():
    model = tiny_model()
    cfg = model.cfg
    ids, lengths, pix = image_prompt(cfg, [2], [30])
    with torch.no_grad():
        fv = model.prefill(ids, pix, hooks=[FastV(k=2, ratio=0.75)])
        pd = model.prefill(ids, pix, hooks=[PyramidDrop()])
    n_text = 30 - cfg.n_visual_tokens
    assert fv.layer_tokens[:, 0].tolist() == A.fastv_tokens_per_layer(
        cfg.n_layers, n_text, cfg.n_visual_tokens, 2, 0.75
    )
    assert pd.layer_tokens[:, 0].tolist() == A.pyramiddrop_tokens_per_layer(
        cfg.n_layers, n_text, cfg.n_visual_tokens, [1, 2, 3], [0.5, 0.25, 0.125]
    )


def test_prefill_flops_match_flop_counter(monkeypatch):
    """Matmul FLOPs of the projections, MLP and LM head agree with torch's FLOP counter exactly;
    the attention term follows the closed form (the counter does not see CPU SDPA)."""
    # The scoring FLOPs are counted on the naive path: other test modules may have set TRITON_INTERPRET=1,
    # which would route "auto" through the interpreted Triton kernel that the FLOP counter cannot see.
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    model = tiny_model()
    cfg = model.cfg
    ids, lengths, pix = image_prompt(cfg, [2], [30])
    feats = model.encode_images(pix)
    for hooks in ([], [FastV(k=2, ratio=0.5)]):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            res = model.prefill(ids, image_features=feats, hooks=hooks)
        parts = A.prefill_flops(cfg, res.layer_tokens[:, 0], breakdown=True)
        # FastV adds one scored query row over the 30 keys of layer K-1 (ops.scored_attention, naive path)
        extra = A.scoring_flops(cfg, 1, 30) if hooks else 0
        assert counter.get_total_flops() == parts["projections"] + parts["mlp"] + parts["lm_head"] + extra
        n = res.layer_tokens[:, 0].double()
        assert parts["attention"] == pytest.approx(float((4 * cfg.hidden * n * (n + 1) / 2).sum()))


def test_decode_and_predicted_speedup():
    cfg = LVLMConfig.llava_1_5_7b()
    base = [640] * 32
    fv = A.fastv_tokens_per_layer(32, 64, 576, 2, 0.5)
    row = A.timing_report(
        cfg, name="fastv", tokens_per_layer=fv, wall_ms=50.0, baseline_tokens_per_layer=base, baseline_ms=90.0
    )
    assert 1.6 < row["predicted_speedup"] < 1.9
    assert row["measured_speedup"] == pytest.approx(1.8)
    # a decode step is dominated by the weights: ~2 * 6.7e9 FLOPs for a 7B model
    assert 1.2e10 < A.decode_step_flops(cfg, [640] * 32) < 1.5e10
    assert A.decode_step_flops(cfg, [300] * 32) < A.decode_step_flops(cfg, [640] * 32)
    assert A.vision_flops(cfg) > 3e11  # CLIP ViT-L/14-336: ~0.35 TFLOPs per image (23 blocks)


@pytest.mark.parametrize("bad", [[], [[[1]]], [-1, 2]])
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        A.layer_averaged_tokens(bad)


def test_bad_lengths_and_params():
    cfg = LVLMConfig.tiny()
    with pytest.raises(ValueError):
        A.prefill_flops(cfg, [10] * (cfg.n_layers + 1))
    with pytest.raises(ValueError):
        A.fastv_tokens_per_layer(4, 1, 10, K=4, R=0.5)
    with pytest.raises(ValueError):
        A.fastv_tokens_per_layer(4, 1, 10, K=2, R=1.0)
