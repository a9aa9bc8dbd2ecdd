"""Tree speculative decoding: buffers vs naive ancestor walk, greedy == AR, sibling rejection preserves q,
accepted-path KV compaction."""

import pytest
import torch

from reference_impls.decode.speculative import autoregressive_generate, speculative_generate_tree
from reference_impls.decode.speculative.lvlm_adapter import LVLMSpecLM, truncated_draft
from reference_impls.decode.speculative.tree import (
    build_tree,
    gumbel_topk,
    naive_ancestor_mask,
    sibling_rejection,
    tree_from_choices,
)
from reference_impls.models.config import LVLMConfig
from reference_impls.models.minimal_lvlm import MinimalLVLM
from tests.reference_impls._lvlm_prompts import tiny_target_and_draft
from tests.reference_impls._utils import (
    chi2_pvalue,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def pair():
    return tiny_target_and_draft(1)


@pytest.mark.parametrize("seed", range(5))
def test_tree_buffers_match_naive(seed):
    g = torch.Generator().manual_seed(seed)
    n = 1 + int(torch.randint(1, 40, (1,), generator=g))
    parents = torch.tensor([-1] + [int(torch.randint(0, i, (1,), generator=g)) for i in range(1, n)])
    tree = build_tree(parents)
    assert torch.equal(tree.ancestor_mask, naive_ancestor_mask(parents))
    assert torch.equal(tree.depth, tree.ancestor_mask.sum(-1) - 1)
    is_leaf = ~torch.isin(torch.arange(n), parents)
    assert tree.retrieve_indices.shape[0] == int(is_leaf.sum())
    for row in tree.retrieve_indices:
        path = row[row >= 0].tolist()
        assert path[0] == 0 and bool(is_leaf[path[-1]])
        assert all(int(parents[c]) == p for p, c in zip(path, path[1:]))


def test_tree_from_choices():
    parents, rank = tree_from_choices([(0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 0)])
    assert parents.tolist() == [-1, 0, 0, 1, 1, 2, 3]
    assert rank.tolist() == [0, 0, 1, 0, 1, 0, 0]
    with pytest.raises(ValueError, match="no parent"):
        tree_from_choices([(0,), (0, 0, 0)])
    with pytest.raises(ValueError, match="0..n-1"):
        tree_from_choices([(0,), (2,)])
    with pytest.raises(ValueError, match="precede"):
        build_tree(torch.tensor([-1, 2, 0]))


@pytest.mark.parametrize("choices", [None, [(0,), (0, 0), (0, 0, 0)], [(0,), (1,), (2,), (3,)]])
def test_greedy_tree_sd_equals_greedy_ar(pair, choices):
    target, draft = pair
    kw = {} if choices is None else {"choices": choices}
    for seed in (0, 7):
        ids = torch.randint(0, 250, (1, 9), generator=torch.Generator().manual_seed(seed))
        ar = autoregressive_generate(LVLMSpecLM(target), ids, 30)
        sd, stats = speculative_generate_tree(LVLMSpecLM(target), LVLMSpecLM(draft), ids, 30, impl="naive", **kw)
        assert torch.equal(sd, ar)


def test_identical_draft_accepts_full_depth_and_compacts_cache(pair):
    target, _ = pair
    ids = torch.randint(0, 250, (1, 9), generator=torch.Generator().manual_seed(3))
    t_lm = LVLMSpecLM(target)
    sd, stats = speculative_generate_tree(t_lm, LVLMSpecLM(target), ids, 25, impl="naive")
    assert torch.equal(sd, autoregressive_generate(LVLMSpecLM(target), ids, 25))
    assert all(a == 4 for a in stats.accepted[:-1])  # default tree has depth 4; top-1 path always right
    # the compacted cache equals the cache of a plain AR run over the same tokens
    ref = LVLMSpecLM(target)
    ref.prefill(ids)
    n_cached = t_lm.cache_len - ids.shape[1]
    ref.forward(sd[:n_cached].view(1, -1))
    assert ref.cache_len == t_lm.cache_len and ref.next_position == t_lm.next_position
    for l in range(target.cfg.n_layers):
        torch.testing.assert_close(
            t_lm.cache.keys[l][:, :, : ref.cache_len], ref.cache.keys[l][:, :, : ref.cache_len], rtol=1e-5, atol=1e-6
        )


def test_sibling_rejection_follows_target_distribution():
    V, N, C = 8, 12000, 3
    g = torch.Generator().manual_seed(0)
    q = torch.softmax(torch.randn(V, generator=g) * 1.5, -1)
    p = torch.softmax(torch.randn(V, generator=g) * 1.5, -1)
    out = torch.empty(N, dtype=torch.long)
    first_child = torch.empty(N, dtype=torch.long)
    for i in range(N):
        kids = gumbel_topk(p, C, g).tolist()
        first_child[i] = kids[0]
        idx, residual = sibling_rejection(q, p, kids, torch.rand(C, generator=g))
        out[i] = kids[idx] if idx >= 0 else torch.multinomial(residual, 1, generator=g)
    assert chi2_pvalue(torch.bincount(out, minlength=V), q) > 1e-3
    assert chi2_pvalue(torch.bincount(first_child, minlength=V), p) > 1e-3  # Gumbel-top-k's first draw ~ p
    assert chi2_pvalue(torch.bincount(first_child, minlength=V), q) < 1e-6


def test_sampled_tree_sd_runs_seeded(pair):
    target, draft = pair
    ids = torch.randint(0, 250, (1, 9), generator=torch.Generator().manual_seed(1))
    a, sa = speculative_generate_tree(
        LVLMSpecLM(target), LVLMSpecLM(draft), ids, 18, greedy=False, generator=torch.Generator().manual_seed(0)
    )
    b, _ = speculative_generate_tree(
        LVLMSpecLM(target), LVLMSpecLM(draft), ids, 18, greedy=False, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(a, b) and a.numel() == 18 and sa.mean_accepted_length >= 1


def test_greedy_tree_sd_through_triton_kernels(pair):
    """The fused verification kernel (interpreted on CPU) inside tree SD."""
    pytest.importorskip("triton")
    from reference_impls.ops._triton import launch_counts

    target, draft = pair
    ids = torch.randint(0, 250, (1, 9), generator=torch.Generator().manual_seed(3))
    before = launch_counts["_spec_verify_kernel"]
    sd, _ = speculative_generate_tree(
        LVLMSpecLM(target), LVLMSpecLM(draft), ids, 8, impl="triton", choices=[(0,), (1,), (0, 0)]
    )
    assert torch.equal(sd, autoregressive_generate(LVLMSpecLM(target), ids, 8))
    assert launch_counts["_spec_verify_kernel"] > before


@pytest.mark.gpu
def test_greedy_tree_sd_equals_ar_on_gpu():
    target = MinimalLVLM(LVLMConfig.tiny(), seed=0, device="cuda")
    draft = truncated_draft(target, 2)
    ids = torch.randint(0, 250, (1, 9), generator=torch.Generator().manual_seed(0)).cuda()
    ar = autoregressive_generate(LVLMSpecLM(target), ids, 40)
    sd, stats = speculative_generate_tree(LVLMSpecLM(target), LVLMSpecLM(draft), ids, 40)  # Triton verify + compact
    assert torch.equal(sd, ar) and stats.steps >= 1
