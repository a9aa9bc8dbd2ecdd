"""LVSpec loose verification: strict / tau_v = 0 == lossless exactly, monotone in beta, probe == dense mass."""

import pytest
import torch

from reference_impls.decode.speculative import autoregressive_generate, speculative_generate
from reference_impls.decode.speculative.lvlm_adapter import LVLMSpecLM
from reference_impls.decode.speculative.lvspec import (
    LVSpecConfig,
    VisualMassProbe,
    loose_accept,
    lvspec_generate,
    lvspec_verify,
)
from reference_impls.models.hooks import Hook
from tests.reference_impls._lvlm_prompts import single_image_prompt, tiny_target_and_draft

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def setup():
    target, draft = tiny_target_and_draft(2)
    ids, pix = single_image_prompt(target.cfg, 3, 4)
    return target, draft, ids, dict(pixel_values=pix)


@pytest.mark.parametrize("cfg", [LVSpecConfig(tau_v=0.0, beta=0.0, top_k=10), LVSpecConfig(strict=True, tau_v=5.0)])
@pytest.mark.parametrize("greedy", [True, False])
def test_strict_or_tau_zero_is_lossless_exactly(setup, cfg, greedy):
    target, draft, ids, kw = setup
    common = dict(greedy=greedy, temperature=0.9, impl="naive", target_prefill_kwargs=kw, draft_prefill_kwargs=kw)
    ref, ref_stats = speculative_generate(
        LVLMSpecLM(target), LVLMSpecLM(draft), ids, 24, generator=torch.Generator().manual_seed(3), **common
    )
    out, stats, trace = lvspec_generate(
        LVLMSpecLM(target), LVLMSpecLM(draft), ids, 24, cfg, generator=torch.Generator().manual_seed(3), **common
    )
    assert torch.equal(out, ref) and stats.accepted == ref_stats.accepted and trace.shifts == 0
    if greedy:
        assert torch.equal(out, autoregressive_generate(LVLMSpecLM(target), ids, 24, prefill_kwargs=kw))


def test_acceptance_monotone_in_beta():
    g = torch.Generator().manual_seed(0)
    V, k = 16, 5
    betas = [0.0, 0.1, 0.3, 0.6, 1.0]
    for trial in range(200):
        logits = torch.randn(k + 1, V, generator=g) * 2
        draft = torch.randint(0, V, (k,), generator=g)
        mass = torch.rand(k, generator=g)
        for greedy in (True, False):
            p = torch.softmax(torch.randn(k, V, generator=g), -1)
            seed = int(torch.randint(0, 2**31, (1,), generator=g))
            lens = [
                lvspec_verify(
                    logits,
                    draft,
                    p,
                    mass,
                    LVSpecConfig(tau_v=0.5, beta=b, top_k=0, max_shift=1),
                    greedy=greedy,
                    temperature=1.0,
                    generator=torch.Generator().manual_seed(seed),
                    impl="naive",
                )[0]
                for b in betas
            ]
            assert all(a >= b for a, b in zip(lens, lens[1:])), (trial, lens)


def test_loose_rule_and_shift():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.8, 0.1], [0.6, 0.2, 0.2], [0.3, 0.3, 0.4]]))
    draft = torch.tensor([1, 0, 0])
    assert loose_accept(logits, draft, beta=0.5, top_k=0).tolist() == [True, False, True]
    cfg = LVSpecConfig(tau_v=0.5, beta=0.5, top_k=0, max_shift=0)
    irrelevant = torch.zeros(3)
    n, nxt, _ = lvspec_verify(logits, draft, None, irrelevant, cfg, greedy=True, temperature=1.0, impl="naive")
    assert (n, nxt) == (1, 1)  # d_1 loosely accepted (0.3 >= 0.25), d_2 fails, correction argmax q_2 = 1
    # with shift tolerance: d_2 = 0 equals the target's argmax at the next row (row 2 -> 0): accept, truncate
    n, nxt, info = lvspec_verify(
        logits,
        draft,
        None,
        irrelevant,
        LVSpecConfig(tau_v=0.5, beta=0.5, top_k=0),
        greedy=True,
        temperature=1.0,
        impl="naive",
    )
    assert info["shifted"] and (n, nxt) == (2, 0)
    relevant = torch.ones(3)  # anchors: strict -> d_1 = 1 != argmax 0 is rejected
    n, nxt, _ = lvspec_verify(logits, draft, None, relevant, cfg, greedy=True, temperature=1.0, impl="naive")
    assert (n, nxt) == (0, 0)


class _DenseMassReference(Hook):
    """Independent path: in a fresh prefill of the whole sequence, row r's attention probabilities are
    ``ctx.recompute_scores`` with only row r selected; sum them over the visual positions."""

    def __init__(self, layers, rows, vis_pos):
        self.layers, self.rows, self.vis_pos, self.out = layers, rows, vis_pos, {}

    def before_layer(self, layer, state, ctx):
        if layer in self.layers:
            vals = []
            for r in self.rows:
                sel = torch.zeros(1, state.width, dtype=torch.bool)
                sel[0, r] = True
                vals.append(ctx.recompute_scores(state, sel)[0][:, self.vis_pos].sum(-1).mean())
            self.out[layer] = torch.stack(vals)
        return state


def test_visual_mass_probe_matches_dense_reference(setup):
    target, _, ids, kw = setup
    lm = LVLMSpecLM(target)
    lm.prefill(ids, **kw)
    chunk = torch.tensor([[5, 17, 99, 3]])
    probe = VisualMassProbe([2, 3], lm.vis_slots)
    lm.forward(chunk, hooks=(probe,))
    full = torch.cat([ids, chunk], 1)
    ref = _DenseMassReference({2, 3}, range(ids.shape[1], full.shape[1]), lm.vis_slots)
    target.prefill(full, kw["pixel_values"], hooks=[ref])
    for layer in (2, 3):
        torch.testing.assert_close(probe.per_layer[layer], ref.out[layer], rtol=1e-4, atol=1e-5)
    assert bool(((probe.mass() > 0) & (probe.mass() < 1)).all())


def test_loose_run_accepts_at_least_lossless_on_first_step(setup):
    target, draft, ids, kw = setup
    common = dict(impl="naive", target_prefill_kwargs=kw, draft_prefill_kwargs=kw)
    _, strict_stats = speculative_generate(LVLMSpecLM(target), LVLMSpecLM(draft), ids, 12, **common)
    out, stats, trace = lvspec_generate(
        LVLMSpecLM(target), LVLMSpecLM(draft), ids, 12, LVSpecConfig(tau_v=1.0, beta=0.05, top_k=5), **common
    )
    assert stats.accepted[0] >= strict_stats.accepted[0]
    assert stats.mean_accepted_length >= strict_stats.mean_accepted_length
    assert trace.relevant_fraction and max(trace.relevant_fraction) == 0.0  # tau_v = 1: nothing relevant


def test_bad_config():
    for bad in (dict(tau_v=-1), dict(beta=1.5), dict(top_frac=2.0), dict(top_k=-1)):
        with pytest.raises(ValueError):
            LVSpecConfig(**bad).validate()
