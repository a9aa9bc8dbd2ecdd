"""ToMe (arXiv 2210.09461): optimised bipartite soft matching vs the naive specification."""
import pytest
import torch

from reference_impls.encode import tome
from reference_impls.ops._triton import launch_counts
from tests.reference_impls._utils import randn, rel_rms_err


@pytest.mark.parametrize("num_tokens,r,protect", [(1, 0, 1), (2, 1, 0), (7, 3, 1), (63, 20, 1), (64, 31, 0),
                                                  (197, 16, 1)])
@pytest.mark.parametrize("impl", ["naive", "torch", "triton"])
def test_merge_matches_spec(num_tokens, r, protect, impl):
    if impl == "triton" and num_tokens > 64:
        pytest.skip("interpreter: keep CPU shapes small")
    batch, channels = 3, 16
    x = randn(batch, num_tokens, channels, seed=num_tokens)
    metric = randn(batch, num_tokens, 8, seed=num_tokens + 1)
    size = torch.randint(1, 4, (batch, num_tokens, 1)).float()
    ref_x, ref_size = tome.naive_tome_merge(x, metric, r, size, protect)
    launches = launch_counts["_cosine_max_argmax_kernel"]
    merge, unmerge = tome.bipartite_soft_matching(metric, r, protect, impl=impl)
    if impl == "triton" and r > 0:  # the fused kernel really ran (interpreted on CPU)
        assert launch_counts["_cosine_max_argmax_kernel"] > launches
    out_x, out_size = tome.merge_wavg(merge, x, size)
    assert out_x.shape == (batch, num_tokens - r, channels)
    assert torch.equal(out_size, ref_size)  # sizes are small integers: exact
    assert rel_rms_err(out_x, ref_x) < 1e-6
    # the size sum is preserved by merging
    assert torch.equal(out_size.sum(1), size.sum(1))
    # unmerge(merge(x)) has the input shape; unmerged positions come back untouched
    restored = unmerge(merge(x))
    assert restored.shape == x.shape


def test_unmerge_copies_merged_value_to_every_source():
    x = randn(2, 11, 4, seed=3)
    metric = randn(2, 11, 6, seed=4)
    merge, unmerge = tome.bipartite_soft_matching(metric, 4, protect_first=1, impl="torch")
    restored = unmerge(merge(x, mode="mean"))
    # every restored row equals one row of the merged output; 11 - 4 tokens survived so 4 rows are copies
    merged = merge(x, mode="mean")
    for b in range(2):
        matches = (restored[b][:, None, :] == merged[b][None, :, :]).all(-1)
        assert bool(matches.any(1).all())
    # class token (protected) never merges and stays first
    assert torch.equal(merged[:, 0], x[:, 0])
    assert torch.equal(restored[:, 0], x[:, 0])


def test_r_zero_is_identity():
    x = randn(2, 9, 5, seed=7)
    merge, unmerge = tome.bipartite_soft_matching(randn(2, 9, 3, seed=8), 0)
    assert merge(x) is x and unmerge(x) is x
    model = tome.ToMeViT(dim=32, depth=3, heads=4).eval()
    tokens = randn(2, 17, 32, seed=9)
    with torch.no_grad():
        plain, size = model(tokens, r=0)
        again, _ = model(tokens, r=[0, 0, 0])
    assert torch.equal(plain, again) and torch.equal(size, torch.ones_like(size))


def test_vit_naive_vs_optimised_and_schedule():
    torch.manual_seed(0)
    model = tome.ToMeViT(dim=32, depth=4, heads=4).eval()
    tokens = randn(2, 65, 32, seed=11)
    with torch.no_grad():
        ref, ref_size = model(tokens, r=(6, 0.5), impl="naive")
        out, size = model(tokens, r=(6, 0.5), impl="torch")
    schedule = tome.tome_schedule(4, (6, 0.5))
    assert schedule == [3, 5, 7, 9]
    assert out.shape[1] == 65 - sum(schedule)
    assert torch.equal(size, ref_size) and torch.equal(size.sum(1), torch.full((2, 1), 65.0))
    assert rel_rms_err(out, ref) < 1e-5


def test_schedule_forms():
    assert tome.tome_schedule(3, 4) == [4, 4, 4]
    assert tome.tome_schedule(5, (4, -0.5)) == [6, 5, 4, 3, 2]
    assert sum(tome.tome_schedule(12, (8, 0.25))) == pytest.approx(96, abs=12)
    assert tome.tome_schedule(1, (5, 0.5)) == [5]


def test_proportional_attention_matches_spec():
    q, k, v = (randn(2, 3, 13, 8, seed=s) for s in (1, 2, 3))
    size = torch.randint(1, 5, (2, 13, 1)).float()
    assert rel_rms_err(tome.proportional_attention(q, k, v, size), tome.naive_proportional_attention(q, k, v, size)) < 1e-5
    # size 1 everywhere = plain attention
    ones = torch.ones_like(size)
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert rel_rms_err(tome.proportional_attention(q, k, v, ones), plain) < 1e-6


@pytest.mark.parametrize("bad", [
    dict(metric=torch.zeros(4, 5), r=1),
    dict(metric=torch.zeros(1, 5, 3, dtype=torch.long), r=1),
    dict(metric=torch.zeros(1, 5, 3), r=-1),
    dict(metric=torch.zeros(1, 5, 3), r=3),  # (5 - 1) // 2 = 2
    dict(metric=torch.zeros(1, 5, 3), r=1, protect_first=2),
])
def test_bad_args(bad):
    with pytest.raises(ValueError):
        tome.bipartite_soft_matching(**bad)
    with pytest.raises(ValueError):
        tome.naive_tome_merge(torch.zeros(1, 5, 3), **bad)


def test_bad_schedule():
    with pytest.raises(ValueError):
        tome.tome_schedule(0, 2)
    with pytest.raises(ValueError):
        tome.tome_schedule(3, [1, 2])
    with pytest.raises(ValueError):
        tome.tome_schedule(3, -1)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_triton_merge(dtype):
    x = randn(4, 577, 64, seed=1, device="cuda", dtype=dtype)
    metric = randn(4, 577, 64, seed=2, device="cuda", dtype=torch.float32)
    ref_x, ref_size = tome.naive_tome_merge(x.float(), metric, 100)
    merge, _ = tome.bipartite_soft_matching(metric, 100, impl="triton")
    out_x, out_size = tome.merge_wavg(merge, x.float())
    assert torch.equal(out_size, ref_size)
    assert rel_rms_err(out_x, ref_x) < 1e-5
