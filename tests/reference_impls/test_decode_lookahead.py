"""Lookahead decoding (arXiv 2402.02057): the 2-D attention mask on a hand-worked case, the fused one-forward step
against the specification that scores every window token and candidate on its own, and losslessness."""

import pytest
import torch

from reference_impls.decode.lookahead import lookahead_generate, lookahead_mask
from reference_impls.decode.speculative.lvlm_adapter import LVLMSpecLM
from reference_impls.models import LVLMConfig, MinimalLVLM

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_hand_worked_mask():
    # chunk = [y | level 0: a0 a1 | level 1: b0 b1 | candidate: c0 c1]
    mask, offset = lookahead_mask(n_levels=2, window=2, candidates=1, ngram=3)
    rows = {0: [0], 1: [0, 1], 2: [0, 1, 2], 3: [0, 1, 3], 4: [0, 1, 2, 4], 5: [0, 5], 6: [0, 5, 6]}
    for r, cols in rows.items():
        assert mask[r].nonzero().flatten().tolist() == cols, r
    assert offset.tolist() == [0, 1, 2, 2, 3, 1, 2]


@pytest.fixture(scope="module")
def setup():
    model = MinimalLVLM(LVLMConfig.tiny(n_layers=2, init_std=0.1), seed=0)
    ids = torch.randint(0, 250, (1, 12), generator=torch.Generator().manual_seed(0))
    ref = model.generate(ids, max_new_tokens=40)[0]
    return model, ids, ref


@pytest.mark.parametrize("window,ngram,cands", [(3, 3, 3), (5, 4, 5), (2, 2, 2), (4, 1, 4), (7, 5, 7)])
def test_lossless_and_fused_equals_spec(setup, window, ngram, cands):
    model, ids, ref = setup
    runs = {}
    for fused in (True, False):
        out, stats = lookahead_generate(
            LVLMSpecLM(model, 256),
            ids,
            40,
            window=window,
            ngram=ngram,
            max_candidates=cands,
            fused=fused,
            generator=torch.Generator().manual_seed(1),
        )
        assert torch.equal(out, ref)  # greedy lookahead = greedy decoding
        runs[fused] = stats
    assert runs[True].emitted == runs[False].emitted  # same acceptances step by step
    assert runs[True].forwards == runs[True].steps  # one forward per step
    if ngram == 1:
        assert runs[True].tokens_per_step == 1.0
    if (window, ngram) == (5, 4):
        assert runs[True].tokens_per_step > 1.5  # this model's greedy text repeats n-grams


def test_bad_arguments(setup):
    model, ids, _ = setup
    with pytest.raises(ValueError):
        lookahead_generate(LVLMSpecLM(model), ids, 4, ngram=0)
    with pytest.raises(ValueError):
        lookahead_generate(LVLMSpecLM(model), ids[0], 4)
