"""LLMLingua token-level compression (arXiv 2310.05736): a hand-worked bigram LM where conditioning on the
compressed prefix matters, the cached path against the uncached specification on the minimal LVLM, identity."""

import math

import pytest
import torch

from reference_impls.decode.speculative.lvlm_adapter import LVLMSpecLM
from reference_impls.models import LVLMConfig, MinimalLVLM
from reference_impls.prefill.llmlingua import LLMLingua, llmlingua_keep, naive_llmlingua_keep
from tests.reference_impls._utils import randint

pytestmark = pytest.mark.usefixtures("single_torch_thread")

# p(next | prev) of a 4-token bigram LM
TABLE = torch.tensor(
    [[0.1, 0.7, 0.1, 0.1], [1 / 30, 1 / 30, 0.9, 1 / 30], [0.1, 0.6, 0.1, 0.2], [1 / 6, 0.5, 1 / 6, 1 / 6]]
)


def bigram_logits(ids):
    return TABLE.log()[ids]  # [1, n, V]: row t predicts the token after ids[t]


class BigramLM:
    """The same bigram LM behind the SpecLM calls ``llmlingua_keep`` makes (a cache that only counts tokens)."""

    def __init__(self):
        self.cache_len, self.next_position = 0, 0

    def forward(self, ids, positions=None, chunk_mask=None):
        self.cache_len += ids.shape[1]
        return bigram_logits(ids)

    def rollback(self, n):
        self.cache_len -= n

    def set_next_position(self, p):
        self.next_position = p


def test_hand_worked_bigram():
    ids = torch.tensor([0, 1, 2, 3, 1, 2])
    # one segment: surprisals [inf, -ln .7, -ln .9, -ln .2, -ln .5, -ln .9]; rate 0.5 of 5 finite -> 2nd largest
    # = -ln .5 -> keep tokens 0, 3, 4
    for keep in (naive_llmlingua_keep(bigram_logits, ids, 0.5, 6), llmlingua_keep(BigramLM(), ids, 0.5, 6)):
        assert keep.tolist() == [0, 3, 4]
    # segments of 3: segment 1 keeps [0, 1] (threshold -ln .7); token 3 is then scored after token 1 (token 2 was
    # dropped): -ln(1/30) = 3.40 instead of -ln .2; pool [-ln .7, 3.40, -ln .5, -ln .9] -> threshold -ln .5
    for keep in (naive_llmlingua_keep(bigram_logits, ids, 0.5, 3), llmlingua_keep(BigramLM(), ids, 0.5, 3)):
        assert keep.tolist() == [0, 1, 3, 4]
    assert math.isclose(-math.log(1 / 30), 3.4012, rel_tol=1e-4)


def test_identity_and_protect():
    ids = torch.tensor([0, 1, 2, 3, 1, 2])
    assert naive_llmlingua_keep(bigram_logits, ids, 1.0, 4).tolist() == list(range(6))
    protect = torch.tensor([False, False, True, False, False, True])
    assert naive_llmlingua_keep(bigram_logits, ids, 0.5, 6, protect).tolist() == [0, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def model():
    return MinimalLVLM(LVLMConfig.tiny(n_layers=2, init_std=0.1), seed=0)


@pytest.mark.parametrize("n,rate,segment", [(37, 0.5, 8), (29, 0.3, 29), (41, 0.7, 5)])
def test_cached_path_matches_spec(model, n, rate, segment):
    ids = randint(0, 250, (n,), seed=n)
    ref = naive_llmlingua_keep(lambda x: model.forward_tokens(input_ids=x), ids, rate, segment)
    out = llmlingua_keep(LVLMSpecLM(model, 128), ids, rate, segment)
    assert torch.equal(out, ref)
    assert 0 < out.numel() < n and out[0] == 0
    if segment == n:  # one segment: floor(rate * (n - 1)) scored tokens + the first
        assert out.numel() == int((n - 1) * rate) + 1
    kept_ids, idx = LLMLingua(rate, segment).compress(LVLMSpecLM(model, 128), ids)
    assert torch.equal(idx, ref) and torch.equal(kept_ids, ids[ref])


def test_bad_arguments():
    with pytest.raises(ValueError):
        naive_llmlingua_keep(bigram_logits, torch.tensor([0, 1]), 0.0)
    with pytest.raises(ValueError):
        naive_llmlingua_keep(bigram_logits, torch.tensor([0, 1]), 0.5, 0)
