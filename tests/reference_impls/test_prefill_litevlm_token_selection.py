"""LiteVLM token selection stage (2506.07416): disabled == baseline, reuse of FastV / PyramidDrop / VisionZip."""

import pytest
import torch

from reference_impls.encode.visionzip import naive_cls_attention_scores, naive_visionzip
from reference_impls.models import LVLMConfig, MinimalLVLM, VisionConfig
from reference_impls.prefill.fastv import FastV
from reference_impls.prefill.litevlm_token_selection import TokenSelection, visionzip_split
from reference_impls.prefill.pyramiddrop import PyramidDrop
from tests.reference_impls._lvlm_prompts import image_prompt, tiny_model


def test_disabled_stage_reproduces_baseline_exactly():
    model = tiny_model()
    ids, lengths, pix = image_prompt(model.cfg, [2, 5], [30, 26])
    with torch.no_grad():
        base = model.prefill(ids, pix, lengths=lengths)
        for stage in (TokenSelection("none"), TokenSelection("fastv", keep_ratio=1.0)):
            assert torch.equal(stage.prefill(model, ids, pix, lengths=lengths).logits, base.logits)


def test_llm_side_methods_reuse_hooks():
    model = tiny_model()
    ids, lengths, pix = image_prompt(model.cfg, [2, 5], [30, 26], seed=1)
    with torch.no_grad():
        fv = TokenSelection("fastv", keep_ratio=0.25, fastv_layer=1).prefill(model, ids, pix, lengths=lengths)
        ref = model.prefill(ids, pix, lengths=lengths, hooks=[FastV(k=1, ratio=0.75)])
        assert torch.equal(fv.logits, ref.logits) and fv.layer_tokens[1].tolist() == (lengths - 12).tolist()
        pd = TokenSelection("pyramiddrop").prefill(model, ids, pix, lengths=lengths)
        ref = model.prefill(ids, pix, lengths=lengths, hooks=[PyramidDrop()])
        assert torch.equal(pd.logits, ref.logits)


def test_visionzip_stage_matches_naive_visionzip():
    model = tiny_model()
    cfg = model.cfg
    stage = TokenSelection("visionzip", keep_ratio=0.5)
    n = stage.visual_tokens_per_image(cfg)
    assert n == 9  # round(0.5 * 17 encoder tokens), CLS included
    _, _, pix = image_prompt(cfg, [1, 1], [30, 30], seed=2)
    with torch.no_grad():
        feats = stage.image_features(model, pix)
        # reference: eager CLS row + naive VisionZip on the same feature layer
        vc = cfg.vision
        x = model.vision(pix, n_blocks=vc.n_layers_run - 1)
        block = model.vision.blocks[vc.n_layers_run - 1]
        q, k, _ = block.attn.project_qkv(block.norm1(x))
        d, c = visionzip_split(n)
        ref = naive_visionzip(block(x), naive_cls_attention_scores(q[:, :, :1], k), k.mean(1), d, c, has_cls=True)
        torch.testing.assert_close(feats, model.project(ref.tokens), rtol=1e-5, atol=1e-6)
        # the shortened prompt runs, and the LLM really sees fewer tokens than with the full image
        ids = torch.randint(0, 200, (2, 10 + n), generator=torch.Generator().manual_seed(0))
        ids[:, 2 : 2 + n] = cfg.image_token_id
        res = stage.prefill(model, ids, pix)
    assert feats.shape == (2, n, cfg.hidden) and res.layer_tokens[0].tolist() == [10 + n] * 2
    assert n < cfg.n_visual_tokens


def test_bad_arguments():
    with pytest.raises(ValueError):
        TokenSelection("tome")
    with pytest.raises(ValueError):
        TokenSelection("fastv", keep_ratio=0.0)
    with pytest.raises(ValueError):
        visionzip_split(0)
    vc = VisionConfig(use_cls=False, feature_layer=-1)
    model = MinimalLVLM(LVLMConfig.tiny(vision=vc), seed=0)
    with pytest.raises(ValueError):
        TokenSelection("visionzip", keep_ratio=0.5).image_features(model, torch.zeros(1, 3, 32, 32))
