"""SpecVLM: two-stage verifier scores, budget arithmetic, uniform fill, drop_rate 0 == unpruned draft, lossless."""

import math

import pytest
import torch

from reference_impls.decode.speculative import autoregressive_generate
from reference_impls.decode.speculative.lvlm_adapter import LVLMSpecLM
from reference_impls.decode.speculative.specvlm import (
    keep_budget,
    pruned_draft_inputs,
    specvlm_generate,
    specvlm_select,
    two_stage_prefill,
    uniform_pick,
)
from reference_impls.models.hooks import Hook
from tests.reference_impls._lvlm_prompts import single_image_prompt, tiny_target_and_draft

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def setup():
    target, draft = tiny_target_and_draft(2)
    ids, pix = single_image_prompt(target.cfg, 3, 5)
    return target, draft, ids, pix


class _TextToVideoReference(Hook):
    def __init__(self, text_rows, vis_pos):
        self.text_rows, self.vis_pos, self.per_layer = text_rows, vis_pos, []

    def before_layer(self, layer, state, ctx):
        rows = torch.zeros(1, state.width, dtype=torch.bool)
        rows[0, self.text_rows] = True
        cs = ctx.recompute_scores(state, rows)[0]  # [Hq, T]
        self.per_layer.append(cs.mean(0)[self.vis_pos] / len(self.text_rows))
        return state


def test_two_stage_scores_and_prefill(setup):
    target, _, ids, pix = setup
    lm = LVLMSpecLM(target)
    logits, scores = two_stage_prefill(lm, ids, pix)
    ref_logits = LVLMSpecLM(target).prefill(ids, pixel_values=pix)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    vis_pos = (ids[0] == target.cfg.image_token_id).nonzero().flatten()
    text_rows = list(range(int(vis_pos[-1]) + 1, ids.shape[1]))
    ref = _TextToVideoReference(text_rows, vis_pos)
    target.prefill(ids, pix, hooks=[ref])
    torch.testing.assert_close(scores, torch.stack(ref.per_layer).mean(0), rtol=1e-4, atol=1e-6)
    assert lm.cache_len == ids.shape[1] and not lm.cache.scoring


@pytest.mark.parametrize("N,rate,budget", [(16, 0.0, 16), (16, 0.5, 8), (16, 0.9, 2), (577, 0.9, 58), (10, 0.99, 1)])
def test_budget_arithmetic(N, rate, budget):
    assert keep_budget(N, rate) == budget
    scores = torch.rand(N, generator=torch.Generator().manual_seed(N))
    kept = specvlm_select(scores, rate, threshold=0.05)
    assert kept.numel() == budget and torch.equal(kept, kept.unique())
    n1 = min(round(0.05 * N), budget)
    top = scores.topk(n1).indices
    assert bool(torch.isin(top, kept).all())


def test_percentage_stage_one():
    scores = torch.tensor([0.5, 0.01, 0.3, 0.01, 0.1, 0.01, 0.05, 0.02])
    kept = specvlm_select(scores, 0.5, percentage=0.75)  # 0.5 + 0.3 reach 0.75 of 1.0 -> {0, 2}
    assert kept.numel() == 4 and {0, 2} <= set(kept.tolist())


@pytest.mark.parametrize("n,u", [(100, 7), (577, 57), (10, 10), (33, 1), (9, 2)])
def test_uniform_fill_covers_evenly(n, u):
    cand = torch.arange(n) * 3 + 1  # arbitrary sorted candidates
    pick = uniform_pick(cand, u)
    pos = torch.searchsorted(cand, pick)
    assert pick.numel() == u and torch.equal(pick, pick.unique())
    gaps = torch.diff(torch.cat([torch.tensor([-1]), pos, torch.tensor([n])]))
    assert int(gaps.max()) <= math.ceil(n / u)


def test_drop_rate_zero_equals_unpruned_draft(setup):
    target, draft, ids, pix = setup
    kept = specvlm_select(torch.rand(target.cfg.n_visual_tokens), 0.0)
    dkw = pruned_draft_inputs(draft, ids, kept, pix)
    assert torch.equal(dkw["prompt_ids"], ids)
    assert torch.equal(
        LVLMSpecLM(draft).prefill(dkw.pop("prompt_ids"), **dkw), LVLMSpecLM(draft).prefill(ids, pixel_values=pix)
    )


@pytest.mark.parametrize("drop_rate,tree", [(0.9, True), (0.5, False), (0.0, True)])
def test_lossless_greedy(setup, drop_rate, tree):
    target, draft, ids, pix = setup
    ar = autoregressive_generate(LVLMSpecLM(target), ids, 20, prefill_kwargs=dict(pixel_values=pix))
    out, stats, kept = specvlm_generate(
        LVLMSpecLM(target), LVLMSpecLM(draft), ids, 20, pixel_values=pix, drop_rate=drop_rate, tree=tree, impl="naive"
    )
    assert torch.equal(out, ar)
    assert kept.numel() == keep_budget(target.cfg.n_visual_tokens, drop_rate)


def test_pruned_draft_sees_fewer_tokens(setup):
    target, draft, ids, pix = setup
    kept = specvlm_select(torch.rand(target.cfg.n_visual_tokens), 0.75)
    dkw = pruned_draft_inputs(draft, ids, kept, pix)
    lm = LVLMSpecLM(draft)
    lm.prefill(dkw.pop("prompt_ids"), **dkw)
    assert lm.cache_len == ids.shape[1] - (target.cfg.n_visual_tokens - kept.numel())


def test_bad_arguments(setup):
    target, _, ids, pix = setup
    with pytest.raises(ValueError, match="drop_rate"):
        keep_budget(10, 1.0)
    with pytest.raises(ValueError, match="percentage"):
        specvlm_select(torch.rand(8), 0.5, percentage=0.0)
    with pytest.raises(ValueError, match="placeholder"):
        two_stage_prefill(LVLMSpecLM(target), torch.randint(0, 200, (1, 6)))
    nv = target.cfg.n_visual_tokens
    tail = torch.cat([ids[:, :3], torch.full((1, nv), target.cfg.image_token_id)], 1)
    with pytest.raises(ValueError, match="text token after"):
        two_stage_prefill(LVLMSpecLM(target), tail, pix)
