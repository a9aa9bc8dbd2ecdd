"""ToMe (arXiv 2210.09461): optimised bipartite soft matching vs the naive specification, upstream's clamping and
schedules (numbers from facebookresearch/ToMe's ``parse_r``), and the technique on the minimal LVLM."""

import pytest
import torch

from reference_impls.encode import tome
from reference_impls.ops._triton import launch_counts
from tests.reference_impls._utils import randn, rel_rms_err


@pytest.mark.parametrize(
    "num_tokens,r,protect", [(1, 0, 1), (2, 1, 0), (7, 3, 1), (63, 20, 1), (64, 31, 0), (197, 16, 1)]
)
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
    # unmerge(merge(x)): every position gets back the merged token that holds it (see _expected_unmerge)
    if impl != "naive":
        torch.testing.assert_close(unmerge(merge(x)), _expected_unmerge(x, metric, r, protect), rtol=0, atol=1e-6)


def _expected_unmerge(x, metric, r, protect):
    """Independent statement of unmerge(merge(x, "mean")) with unit sizes: A = even, B = odd positions; each A row's
    partner is its most cosine-similar B row (lowest index on ties); the r A rows with the best partners merge
    (ties: lower index; the protected first token never merges); a B row becomes the mean of itself and the A rows
    it absorbed; merged A positions read their partner's value back."""
    out = x.clone()
    unit = metric / metric.norm(dim=-1, keepdim=True)
    for b in range(x.shape[0]):
        a_ids, b_ids = list(range(0, x.shape[1], 2)), list(range(1, x.shape[1], 2))
        if not b_ids or r == 0:
            continue
        sim = unit[b, a_ids] @ unit[b, b_ids].T
        partner = sim.argmax(-1).tolist()
        best = [float("-inf") if a < protect else float(sim[i].max()) for i, a in enumerate(a_ids)]
        merged = sorted(range(len(a_ids)), key=lambda i: (-best[i], i))[: min(r, (x.shape[1] - protect) // 2)]
        for j, bid in enumerate(b_ids):
            group = [bid] + [a_ids[i] for i in merged if partner[i] == j]
            out[b, group] = x[b, group].mean(0)
    return out


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
    assert schedule == [3, 5, 7, 9]  # upstream parse_r(4, (6, 0.5))
    assert out.shape[1] == 65 - sum(schedule)
    assert torch.equal(size, ref_size) and torch.equal(size.sum(1), torch.full((2, 1), 65.0))
    assert rel_rms_err(out, ref) < 1e-5


def test_schedule_forms_match_upstream_parse_r():
    """Lists from upstream ``parse_r`` (facebookresearch/ToMe ``tome/utils.py``) for the same arguments."""
    assert tome.tome_schedule(3, 4) == [4, 4, 4]
    assert tome.tome_schedule(5, (4, -0.5)) == [6, 5, 4, 3, 2]
    assert tome.tome_schedule(12, (8, 0.25)) == [6, 6, 6, 7, 7, 7, 8, 8, 8, 9, 9, 10]  # sum 91, not r * 12
    assert tome.tome_schedule(4, [2, 1]) == [2, 1, 0, 0]  # a short list is padded with zeros
    assert tome.tome_schedule(1, (5, 0.5)) == [5]  # (upstream divides by zero here)


@pytest.mark.parametrize("impl", ["naive", "torch"])
def test_r_is_clamped_as_upstream(impl):
    """Upstream merges at most (T - protected) // 2 tokens: r above that merges exactly that many (no error)."""
    x, metric = randn(2, 9, 4, seed=21), randn(2, 9, 5, seed=22)
    limit = tome.max_merge_count(9, 1)
    assert limit == 4
    if impl == "naive":
        big, size = tome.naive_tome_merge(x, metric, 50)
        want, want_size = tome.naive_tome_merge(x, metric, limit)
    else:
        big, size = tome.merge_wavg(tome.bipartite_soft_matching(metric, 50, impl=impl)[0], x)
        want, want_size = tome.merge_wavg(tome.bipartite_soft_matching(metric, limit, impl=impl)[0], x)
    assert big.shape == (2, 9 - limit, 4) and torch.equal(big, want) and torch.equal(size, want_size)


def test_proportional_attention_matches_spec():
    q, k, v = (randn(2, 3, 13, 8, seed=s) for s in (1, 2, 3))
    size = torch.randint(1, 5, (2, 13, 1)).float()
    assert (
        rel_rms_err(tome.proportional_attention(q, k, v, size), tome.naive_proportional_attention(q, k, v, size)) < 1e-5
    )
    # size 1 everywhere = plain attention
    ones = torch.ones_like(size)
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert rel_rms_err(tome.proportional_attention(q, k, v, ones), plain) < 1e-6


@pytest.mark.parametrize(
    "bad",
    [
        dict(metric=torch.zeros(4, 5), r=1),
        dict(metric=torch.zeros(1, 5, 3, dtype=torch.long), r=1),
        dict(metric=torch.zeros(1, 5, 3), r=-1),
        dict(metric=torch.zeros(1, 5, 3), r=1, protect_first=2),
    ],
)
def test_bad_args(bad):
    with pytest.raises(ValueError):
        tome.bipartite_soft_matching(**bad)
    with pytest.raises(ValueError):
        tome.naive_tome_merge(torch.zeros(1, 5, 3), **bad)


def test_bad_schedule():
    with pytest.raises(ValueError):
        tome.tome_schedule(0, 2)
    with pytest.raises(ValueError):
        tome.tome_schedule(3, [1, -2])
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


def test_tome_on_the_minimal_lvlm_matches_a_naive_loop():
    """The technique's ViT pass (merge between attention and MLP, proportional attention) against the naive merge
    and naive proportional attention in an explicit loop; r = 0 is the unmodified encoder exactly."""
    from reference_impls.encode.tome import ToMe
    from tests.reference_impls._lvlm_prompts import tiny_model

    model = tiny_model()
    pix = randn(2, 3, 32, 32, seed=31)
    with torch.no_grad():
        assert torch.equal(ToMe(r=0).minimal_image_features(model, pix), model.encode_images(pix))
        got = ToMe(r=3).minimal_image_features(model, pix)
        x, size = model.vision.embed(pix), None
        for block in model.vision.blocks[: model.cfg.vision.n_layers_run]:
            q, k, v = block.attn.project_qkv(block.norm1(x))
            out = tome.naive_proportional_attention(q, k, v, size)
            x = x + block.attn.proj(out.transpose(1, 2).reshape(x.shape))
            x, size = tome.naive_tome_merge(x, k.mean(1), 3, size, protect_first=1)
            x = x + block.mlp(block.norm2(x))
        want = model.project(x[:, 1:])
    assert got.shape == (2, 17 - 3 - 1, model.cfg.hidden) == want.shape
    assert ToMe(r=3).image_tokens(model) == 13
    assert rel_rms_err(got, want) < 1e-5
