"""Chain speculative decoding: greedy == AR, sampling preserves the target distribution, KV rollback, verify kernel."""

import pytest
import torch

from reference_impls.decode.speculative import autoregressive_generate, speculative_generate
from reference_impls.decode.speculative.lvlm_adapter import LVLMSpecLM, truncated_draft
from reference_impls.models.config import LVLMConfig
from reference_impls.models.minimal_lvlm import MinimalLVLM
from reference_impls.ops.spec_verify import naive_verify_paths, verify_paths
from tests.reference_impls._lvlm_prompts import tiny_target_and_draft
from tests.reference_impls._utils import (
    chi2_pvalue,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def pair():
    return tiny_target_and_draft(1)


def _prompt(seed, T=11):
    return torch.randint(0, 250, (1, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("k,adaptive", [(1, False), (4, False), (3, True)])
def test_greedy_sd_equals_greedy_ar(pair, k, adaptive):
    target, draft = pair
    for seed in (0, 1):
        ids = _prompt(seed)
        ar = autoregressive_generate(LVLMSpecLM(target), ids, 33)
        sd, stats = speculative_generate(
            LVLMSpecLM(target), LVLMSpecLM(draft), ids, 33, k=k, adaptive=adaptive, impl="naive"
        )
        assert torch.equal(sd, ar)
        assert stats.target_calls <= 33 and stats.steps >= 1


def test_greedy_sd_with_identical_draft_accepts_everything(pair):
    target, _ = pair
    ids = _prompt(5)
    sd, stats = speculative_generate(LVLMSpecLM(target), LVLMSpecLM(target), ids, 21, k=4, impl="naive")
    assert torch.equal(sd, autoregressive_generate(LVLMSpecLM(target), ids, 21))
    assert all(a == 4 for a in stats.accepted)  # draft == target: every proposal accepted
    assert stats.mean_accepted_length == 5.0


def test_kv_rollback_restores_state_exactly(pair):
    target, _ = pair
    lm = LVLMSpecLM(target)
    ids = _prompt(2)
    lm.prefill(ids)
    snapshot = [
        (k[:, :, : lm.cache_len].clone(), v[:, :, : lm.cache_len].clone())
        for k, v in zip(lm.cache.keys, lm.cache.values)
    ]
    length, pos = lm.cache_len, lm.next_position
    lm.forward(torch.tensor([[3, 4, 5, 6]]))
    lm.rollback(4)
    assert lm.cache_len == length and lm.next_position == pos
    for (k0, v0), k, v in zip(snapshot, lm.cache.keys, lm.cache.values):
        assert torch.equal(k[:, :, :length], k0) and torch.equal(v[:, :, :length], v0)
    after = lm.forward(torch.tensor([[7]]))[0, -1]
    fresh = LVLMSpecLM(target)
    fresh.prefill(ids)
    assert torch.equal(after, fresh.forward(torch.tensor([[7]]))[0, -1])


def _fixed_dists(V=8, D=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.softmax(torch.randn(D + 1, V, generator=g) * 1.5, -1)
    p = torch.softmax(torch.randn(D, V, generator=g) * 1.5, -1)
    return q, p


def test_sampled_verification_follows_target_distribution():
    """N independent chains (one per path) with fixed p, q on V = 8: the first and second emitted tokens
    follow q_0 and q_1 (chi-square); the raw draft tokens do not (the test has power)."""
    V, D, N = 8, 2, 40000
    q, p = _fixed_dists(V, D)
    g = torch.Generator().manual_seed(1)
    draft = torch.stack([torch.multinomial(p[d], N, replacement=True, generator=g) for d in range(D)], 1)
    u = torch.rand(N, D, generator=g)
    acc, residual = naive_verify_paths(draft, q.expand(N, D + 1, V), p.expand(N, D, V), u, greedy=False)
    resampled = torch.multinomial(residual, 1, generator=g)[:, 0]
    first = torch.where(acc >= 1, draft[:, 0], resampled)
    assert chi2_pvalue(torch.bincount(first, minlength=V), q[0]) > 1e-3
    has_first = acc >= 1
    second = torch.where(acc >= 2, draft[:, 1], resampled)[has_first]
    assert chi2_pvalue(torch.bincount(second, minlength=V), q[1]) > 1e-3
    assert chi2_pvalue(torch.bincount(draft[:, 0], minlength=V), q[0]) < 1e-6


def test_sampled_sd_end_to_end_runs_and_is_seeded(pair):
    target, draft = pair
    ids = _prompt(3)
    a, sa = speculative_generate(
        LVLMSpecLM(target),
        LVLMSpecLM(draft),
        ids,
        20,
        k=3,
        greedy=False,
        temperature=0.8,
        generator=torch.Generator().manual_seed(0),
        impl="naive",
    )
    b, _ = speculative_generate(
        LVLMSpecLM(target),
        LVLMSpecLM(draft),
        ids,
        20,
        k=3,
        greedy=False,
        temperature=0.8,
        generator=torch.Generator().manual_seed(0),
        impl="naive",
    )
    assert torch.equal(a, b) and a.numel() == 20 and sa.steps >= 1


@pytest.mark.parametrize("greedy", [True, False])
def test_triton_verify_matches_naive(greedy):
    pytest.importorskip("triton")
    g = torch.Generator().manual_seed(4)
    P, D, V = 7, 5, 45  # V not a power of two, several V tiles
    scores = torch.randn(P, D + 1, V, generator=g)
    q = scores.softmax(-1)
    p = torch.randn(P, D, V, generator=g).softmax(-1)
    if greedy:
        tok = scores[:, :D].argmax(-1)
        tok[1, 3] = (tok[1, 3] + 1) % V
        tok[2, 0] = -1
        tok[4, 2:] = -1
    else:
        tok = torch.multinomial(p.view(-1, V), 1, generator=g).view(P, D)
    u = torch.rand(P, D, generator=g)
    force = torch.rand(P, D, generator=g) < 0.3
    for fa in (None, force):
        ref = naive_verify_paths(tok, scores if greedy else q, p, u, greedy=greedy, force_accept=fa)
        from reference_impls.ops.spec_verify.triton_kernel import triton_verify_paths

        out = triton_verify_paths(tok, scores if greedy else q, p, u, greedy=greedy, force_accept=fa, block_v=16)
        assert torch.equal(out[0], ref[0])
        if greedy:
            assert torch.equal(out[1], ref[1])
        else:
            torch.testing.assert_close(out[1], ref[1], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(out[1].sum(-1), torch.ones(P), rtol=1e-5, atol=1e-5)


def test_verify_semantics_small_case():
    scores = torch.tensor([[[0.0, 5, 0], [9, 0, 0], [0, 0, 1]]])  # argmax rows: 1, 0, 2
    assert naive_verify_paths(torch.tensor([[1, 0]]), scores, greedy=True)[0].item() == 2
    acc, nxt = naive_verify_paths(torch.tensor([[1, 2]]), scores, greedy=True)
    assert acc.item() == 1 and nxt.item() == 0  # correction = argmax of row 1
    acc, nxt = naive_verify_paths(torch.tensor([[-1, 0]]), scores, greedy=True)
    assert acc.item() == 0 and nxt.item() == 1


def test_bad_arguments(pair):
    target, draft = pair
    with pytest.raises(ValueError, match="batch size 1"):
        speculative_generate(LVLMSpecLM(target), LVLMSpecLM(draft), torch.zeros(2, 3, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="k_min"):
        speculative_generate(LVLMSpecLM(target), LVLMSpecLM(draft), _prompt(0), 4, k=0)
    with pytest.raises(ValueError, match="draft_probs"):
        verify_paths(torch.zeros(1, 2, dtype=torch.long), torch.rand(1, 3, 8), greedy=False)
    with pytest.raises(ValueError, match=r"\[P, D\+1, V\]"):
        verify_paths(torch.zeros(1, 2, dtype=torch.long), torch.rand(1, 2, 8), greedy=True)
    with pytest.raises(ValueError, match="temperature"):
        speculative_generate(LVLMSpecLM(target), LVLMSpecLM(draft), _prompt(0), 4, greedy=False, temperature=0)


@pytest.mark.gpu
def test_triton_verify_gpu_large_vocab():
    g = torch.Generator(device="cuda").manual_seed(0)
    P, D, V = 64, 6, 32000
    q = torch.randn(P, D + 1, V, device="cuda", generator=g).softmax(-1)
    p = torch.randn(P, D, V, device="cuda", generator=g).softmax(-1)
    tok = torch.multinomial(p.view(-1, V), 1, generator=g).view(P, D)
    u = torch.rand(P, D, device="cuda", generator=g)
    ref = naive_verify_paths(tok, q, p, u, greedy=False)
    out = verify_paths(tok, q, p, u, greedy=False, impl="triton")
    assert torch.equal(out[0], ref[0])
    torch.testing.assert_close(out[1], ref[1], rtol=1e-4, atol=1e-7)
    ref_g = naive_verify_paths(q[:, :D].argmax(-1), q, greedy=True)
    out_g = verify_paths(q[:, :D].argmax(-1), q, greedy=True, impl="triton")
    assert torch.equal(out_g[0], ref_g[0]) and torch.equal(out_g[1], ref_g[1])


@pytest.mark.gpu
def test_greedy_sd_equals_ar_on_gpu_with_kernels():
    """fp32 on CUDA (bf16 would let near-tied random logits flip between batched and single-token passes)."""
    target = MinimalLVLM(LVLMConfig.tiny(), seed=0, device="cuda")
    draft = truncated_draft(target, 2)
    ids = _prompt(0).cuda()
    ar = autoregressive_generate(LVLMSpecLM(target), ids, 40)
    for adaptive in (False, True):
        sd, _ = speculative_generate(LVLMSpecLM(target), LVLMSpecLM(draft), ids, 40, k=4, adaptive=adaptive)
        assert torch.equal(sd, ar)
