"""CAR (arXiv 2505.15154): answer perplexity from the generation's own logits against teacher forcing, the Gaussian
Bayes router on hand-worked numbers, and routing on the minimal LVLM."""

import math

import pytest
import torch

from reference_impls.decode.car import CAR, GaussianRouter, _greedy, answer_perplexity, naive_answer_perplexity
from reference_impls.models import LVLMConfig, MinimalLVLM
from tests.reference_impls._utils import randint

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def model():
    return MinimalLVLM(LVLMConfig.tiny(n_layers=2, init_std=0.1), seed=0)


def test_hand_worked_router():
    # correct PPLs 1, 2, 3 -> N(2, 2/3); incorrect 4, 6 -> N(5, 1); prior 3/5
    router = GaussianRouter.fit([1.0, 2.0, 3.0, 4.0, 6.0], [True, True, True, False, False])
    assert (router.mu_correct, router.mu_incorrect, router.prior_correct) == (2.0, 5.0, 0.6)
    assert router.sigma_correct == pytest.approx(math.sqrt(2 / 3)) and router.sigma_incorrect == pytest.approx(1.0)

    def pdf(x, mu, s):
        return math.exp(-0.5 * ((x - mu) / s) ** 2) / (s * math.sqrt(2 * math.pi))

    for x in (2.0, 3.4, 3.6, 5.0):
        a, b = 0.6 * pdf(x, 2, math.sqrt(2 / 3)), 0.4 * pdf(x, 5, 1)
        assert router.p_correct(x) == pytest.approx(a / (a + b))
        assert router.route(x) == ("short" if a >= b else "long")
    assert router.route(2.0) == "short" and router.route(5.0) == "long"
    with pytest.raises(ValueError):
        GaussianRouter.fit([1.0, 2.0], [True, True])


@torch.no_grad()
def test_perplexity_from_generation_matches_teacher_forcing(model):
    ids = randint(0, 250, (1, 13), seed=1)
    tokens, step_logits = _greedy(model, ids, 7, None)
    assert math.isclose(
        answer_perplexity(step_logits, tokens), naive_answer_perplexity(model, ids, tokens), rel_tol=1e-5
    )


@torch.no_grad()
def test_routing_on_the_model(model):
    prompt = randint(0, 250, (1, 11), seed=2)
    short, long = [7, 8], [9, 10, 11]
    ref_long = model.generate(torch.cat([prompt, torch.tensor([long])], 1), max_new_tokens=12)[0]
    ref_short = model.generate(torch.cat([prompt, torch.tensor([short])], 1), max_new_tokens=4)[0]
    out = CAR(mode="long", max_long_tokens=12).generate(model, prompt, short, long)
    assert out.route == "long" and torch.equal(out.tokens, ref_long)  # identity: plain long generation
    ppl = CAR(mode="short", max_short_tokens=4).generate(model, prompt, short, long).short_perplexity
    confident = GaussianRouter(ppl, 1.0, ppl + 50, 1.0, 0.5)  # this PPL looks like a correct answer
    doubtful = GaussianRouter(ppl + 50, 1.0, ppl, 1.0, 0.5)  # ... like an incorrect one
    out = CAR(confident, 4, 12).generate(model, prompt, short, long)
    assert out.route == "short" and torch.equal(out.tokens, ref_short) and out.generated == 4
    out = CAR(doubtful, 4, 12).generate(model, prompt, short, long)
    assert out.route == "long" and torch.equal(out.tokens, ref_long) and out.generated == 16
    with pytest.raises(ValueError):
        CAR().generate(model, prompt, short, long)  # adaptive without a router
