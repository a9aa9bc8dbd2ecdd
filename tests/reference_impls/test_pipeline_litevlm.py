"""LiteVLM pipeline: all stages off == baseline exactly; view masks propagate; SD stage lossless; latency report."""

import pytest
import torch

from reference_impls.encode.litevlm_view_selection import ViewSelector
from reference_impls.models.config import LVLMConfig
from reference_impls.models.minimal_lvlm import MinimalLVLM
from reference_impls.pipelines.litevlm import LiteVLMConfig, LiteVLMPipeline, baseline_generate
from reference_impls.prefill.litevlm_token_selection import TokenSelection

pytestmark = pytest.mark.usefixtures("single_torch_thread")

STAGES = ("view_selection", "vision", "prefill", "decode", "total")


@pytest.fixture(scope="module")
def setup():
    model = MinimalLVLM(LVLMConfig.tiny(max_seq_len=512), seed=0)
    views = torch.randn(1, 6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    q = torch.randint(0, 250, (1, 6), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    selector = ViewSelector(6, 1000)
    return model, views, q, selector


def test_all_disabled_equals_baseline(setup):
    model, views, q, selector = setup
    pipe = LiteVLMPipeline(model, LiteVLMConfig(max_new_tokens=10), selector)
    res = pipe.run("anything", q, views)
    assert torch.equal(res.tokens, baseline_generate(model, pipe.prefix_ids, q, views, 10))
    assert res.visual_tokens == 6 * model.cfg.n_visual_tokens and bool(res.kept_views.all())
    assert set(res.latency_ms) == set(STAGES) and all(v >= 0 for v in res.latency_ms.values())


def test_dropped_views_produce_no_vision_tokens(setup, monkeypatch):
    model, views, q, selector = setup
    seen = []
    original = model.vision.forward

    def counting_forward(px, *a, **k):
        seen.append(px.shape[0])
        return original(px, *a, **k)

    monkeypatch.setattr(model.vision, "forward", counting_forward)
    pipe = LiteVLMPipeline(model, LiteVLMConfig(view_selection=True, view_threshold=0.5, max_new_tokens=4), selector)
    res = pipe.run("is there a car on the back left", q, views)
    kept = int(res.kept_views.sum())
    assert bool(res.kept_views[4])  # lexical "back left" -> view 4 kept
    assert 1 <= kept < 6 and seen == [kept]  # the ViT only saw the kept views, in one call
    assert res.visual_tokens == kept * model.cfg.n_visual_tokens


@pytest.mark.parametrize("tree", [False, True])
def test_speculative_stage_is_lossless(setup, tree):
    model, views, q, selector = setup
    ts = TokenSelection("fastv", keep_ratio=0.5)
    plain = LiteVLMPipeline(model, LiteVLMConfig(token_selection=ts, max_new_tokens=10)).run("x", q, views)
    spec = LiteVLMPipeline(
        model, LiteVLMConfig(token_selection=ts, speculative=True, tree=tree, max_new_tokens=10, draft_layers=2)
    ).run("x", q, views)
    assert torch.equal(spec.tokens, plain.tokens) and spec.spec_stats.steps >= 1


def test_everything_on_runs(setup):
    model, views, q, selector = setup
    cfg = LiteVLMConfig(
        view_selection=True,
        token_selection=TokenSelection("fastv", keep_ratio=0.5),
        speculative=True,
        fp8=True,
        max_new_tokens=6,
    )
    pipe = LiteVLMPipeline(model, cfg, selector)
    res = pipe.run("what is ahead", q, views)
    assert res.tokens.shape == (6,) and type(pipe.model.layers[0].attn.q_proj).__name__ == "FP8Linear"
    assert type(model.layers[0].attn.q_proj).__name__ == "Linear"  # the caller's model is untouched


def test_bad_arguments(setup):
    model, views, q, _ = setup
    with pytest.raises(ValueError, match="ViewSelector"):
        LiteVLMPipeline(model, LiteVLMConfig(view_selection=True))
    with pytest.raises(ValueError, match="draft_layers"):
        LiteVLMPipeline(model, LiteVLMConfig(speculative=True, draft_layers=0))
    with pytest.raises(ValueError, match="batch size 1"):
        LiteVLMPipeline(model).run("x", q, views[0])
