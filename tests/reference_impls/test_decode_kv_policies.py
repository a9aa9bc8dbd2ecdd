"""H2O, SnapKV, PyramidKV, LightVLM-KV and HybridKV on the real compressed cache (plain tensors, one layer), with
regression numbers derived from the official code (KVCache-Factory's PyramidKV budgets, SnapKV's selection)."""

import pytest
import torch

from reference_impls.decode.kv import H2O, PyramidKV, SnapKV
from reference_impls.decode.kv.base import CompressedKVCache
from reference_impls.decode.kv.base import attention_step as _step
from reference_impls.decode.kv.h2o import naive_h2o_attention
from reference_impls.decode.kv.pyramidkv import pyramid_budgets
from reference_impls.decode.kv.snapkv import naive_snapkv_keep, pool_scores
from reference_impls.technique import CacheSpec
from tests.reference_impls._utils import eager_attention_probs, randn, rel_rms_err

B, HKV, G, D = 2, 2, 2, 16


def attention_step(*args):
    return _step(*args, impl="naive")


def _qkv(L, seed, b=B):
    return (randn(b, HKV * G, L, D, seed=seed), randn(b, HKV, L, D, seed=seed + 1), randn(b, HKV, L, D, seed=seed + 2))


def _run(cache, q, k, v, P, n_new=None, check=None):
    """Prefill P tokens, then decode the rest one by one; returns outputs [B, Hq, L, D]."""
    b, L = q.shape[0], q.shape[2]
    pos = torch.arange(L).expand(b, L)
    n_new = torch.full((b,), P) if n_new is None else n_new
    outs = [attention_step(cache, 0, q[:, :, :P], k[:, :, :P], v[:, :, :P], pos[:, :P], n_new)]
    if check:
        check(cache)
    for t in range(P, L):
        sl = slice(t, t + 1)
        outs.append(
            attention_step(cache, 0, q[:, :, sl], k[:, :, sl], v[:, :, sl], pos[:, sl], torch.ones(b, dtype=torch.long))
        )
        if check:
            check(cache)
    return torch.cat(outs, 2)


@pytest.mark.parametrize("heavy,recent,reduce", [(3, 4, "mean"), (0, 5, "mean"), (5, 1, "max")])
def test_h2o_compaction_equals_mask_simulation(heavy, recent, reduce):
    L, P = 27, 11
    q, k, v = _qkv(L, seed=heavy * 10 + recent)
    o_ref, keep, acc = naive_h2o_attention(q, k, v, P, heavy, recent, score_reduce=reduce)
    cache = CompressedKVCache(H2O(heavy, recent), 1, B, HKV, D, score_reduce=reduce, impl="naive")

    def check(c):
        assert int(c.lengths(0).max()) <= heavy + recent  # the budget is never exceeded
        assert c.keys[0].shape[2] <= heavy + recent + c.growth  # storage follows the budget

    o = _run(cache, q, k, v, P, check=check)
    assert rel_rms_err(o, o_ref) < 1e-6
    for b in range(B):
        for h in range(HKV):
            n = int(cache.lengths(0)[b, h])
            kept = cache.positions[0][b, h, :n]
            assert kept.tolist() == keep[b, h].nonzero().flatten().tolist()
            assert torch.allclose(cache.scores[0][b, h, :n].double(), acc[b, h, kept], atol=1e-5)
    assert cache.compactions[0] > 0


def test_h2o_acc_equals_eager_column_sums_without_eviction():
    L, P = 19, 9
    q, k, v = _qkv(L, seed=3)
    cache = CompressedKVCache(H2O(heavy=100, recent=100), 1, B, HKV, D)
    _run(cache, q, k, v, P)
    probs = eager_attention_probs(q, k)  # [B, Hq, L, L] fp64, causal
    col = probs.sum(2).reshape(B, HKV, G, L).mean(2)  # group mean of the column sums
    assert torch.allclose(cache.scores[0][:, :, :L].double(), col, atol=1e-5)
    assert cache.compactions[0] == 0 and int(cache.lengths(0).min()) == L


def test_h2o_ratios_and_ragged_prompt():
    L, P = 24, 20
    q, k, v = _qkv(L, seed=5)
    pol = H2O(heavy_ratio=0.2, recent_ratio=0.1)
    cache = CompressedKVCache(pol, 1, B, HKV, D)
    n_new = torch.tensor([20, 13])
    _run(cache, q, k, v, P, n_new=n_new)
    # budgets: row 0 -> 4 + 2, row 1 -> 2 + 1
    assert cache.lengths(0)[0].tolist() == [6, 6] and cache.lengths(0)[1].tolist() == [3, 3]
    assert pol.budget_rows(0, n_new).tolist() == [6, 3]


def _closed_form_qk(Hq, Hkv, L, D, phase=0.0):
    """Deterministic inputs without ties in the window scores (the same the regression numbers were derived on)."""
    t = torch.arange(Hq * L * D, dtype=torch.float64).reshape(1, Hq, L, D)
    q = torch.sin(0.37 * t + phase) + 0.5 * torch.cos(0.11 * t)
    t2 = torch.arange(Hkv * L * D, dtype=torch.float64).reshape(1, Hkv, L, D)
    k = torch.cos(0.23 * t2 + 1.3) + 0.3 * torch.sin(0.07 * t2 * t2 % 17)
    return q.float(), k.float()


# Prefix rows the official code keeps per head (``topk(C - w)`` of the pooled window scores; L=24, C=10, w=4,
# kernel 5), derived by running a re-statement of FasterDecoding/SnapKV ``update_kv`` (MHA: one selection per
# query head) and of KVCache-Factory's kv-head mode (GQA: group-reduced before pooling) on ``_closed_form_qk``.
UPSTREAM_SNAPKV = {
    ("mha", "avg", "mean"): [[4, 7, 8, 11, 14, 17], [2, 3, 4, 5, 6, 16], [2, 3, 4, 15, 16, 17], [4, 7, 8, 10, 11, 14]],
    ("gqa", "avg", "mean"): [[2, 8, 9, 15, 16, 17], [2, 3, 4, 7, 8, 11]],
    ("gqa", "avg", "max"): [[2, 8, 9, 10, 16, 17], [2, 3, 4, 5, 8, 11]],
    ("mha", "max", "mean"): [[7, 8, 9, 10, 11, 18], [1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 17], [10, 14, 15, 16, 17, 18]],
    ("gqa", "max", "mean"): [[6, 7, 8, 9, 10, 11], [0, 1, 2, 3, 4, 9]],
}


def _pooled_window_scores(q, k, w, kernel, pool, reduce):
    probs = eager_attention_probs(q, k)[0, :, -w:, :-w].sum(1)  # [Hq, prefix]
    G = q.shape[1] // k.shape[1]
    grouped = probs.reshape(k.shape[1], G, -1)
    scores = grouped.mean(1) if reduce == "mean" else grouped.amax(1)
    prefix = torch.full((1, k.shape[1]), scores.shape[-1])
    return pool_scores(scores[None].float(), prefix, kernel, pool)[0]


@pytest.mark.parametrize("key", sorted(UPSTREAM_SNAPKV))
def test_snapkv_selection_matches_the_official_code(key):
    """Per-head selection against upstream numbers: avg pooling gives upstream's kept set exactly; max pooling
    makes plateaus of equal scores where upstream's ``topk`` order is unspecified, so there the kept rows must hold
    the same scores (our ties go to the lower index)."""
    kind, pool, reduce = key
    L, w, C, kernel = 24, 4, 10, 5
    q, k = _closed_form_qk(4, 4 if kind == "mha" else 2, L, 8, phase=0.0 if kind == "mha" else 0.5)
    cache = CompressedKVCache(
        SnapKV(budget=C, window=w, kernel=kernel, pool=pool, score_reduce=reduce), 1, 1, k.shape[1], 8, impl="naive"
    )
    attention_step(cache, 0, q, k, k, torch.arange(L)[None], torch.tensor([L]))
    kept = cache.positions[0][0, :, :C]
    assert torch.equal(kept, naive_snapkv_keep(q, k, C, w, kernel, pool, reduce)[0])  # cache == spec
    upstream = torch.tensor(UPSTREAM_SNAPKV[key])
    assert torch.equal(kept[:, C - w :], torch.arange(L - w, L).expand(k.shape[1], w))  # the window stays
    if pool == "avg":
        assert torch.equal(kept[:, : C - w], upstream)
    else:
        scores = _pooled_window_scores(q, k, w, kernel, pool, reduce)
        ours = scores.gather(1, kept[:, : C - w]).sort(1).values
        theirs = scores.gather(1, upstream).sort(1).values
        assert torch.equal(ours, theirs)
        assert not torch.equal(kept[:, : C - w], upstream)  # a real tie was broken differently


def test_snapkv_group_reduction_is_independent_of_pooling():
    """pool="max" used to switch the GQA reduction to max silently; now score_reduce (mean by default) decides."""
    q, k = _closed_form_qk(4, 2, 24, 8, phase=0.5)
    mean = naive_snapkv_keep(q, k, 10, 4, 5, "max", "mean")
    assert torch.equal(mean, naive_snapkv_keep(q, k, 10, 4, 5, "max"))
    assert not torch.equal(mean, naive_snapkv_keep(q, k, 10, 4, 5, "max", "max"))


@pytest.mark.parametrize("pool,reduce", [("avg", "mean"), ("max", "max")])
def test_snapkv_ragged_batch_equals_spec_per_row(pool, reduce):
    L, w, C = 40, 6, 15
    q, k, v = _qkv(L, seed=17)
    cache = CompressedKVCache(SnapKV(budget=C, window=w, pool=pool, score_reduce=reduce), 1, B, HKV, D, impl="naive")
    lengths = torch.tensor([L, 31])
    attention_step(cache, 0, q, k, v, torch.arange(L).expand(B, L), lengths)
    assert cache.lengths(0).tolist() == [[C, C]] * B
    for b in range(B):
        n = int(lengths[b])
        spec = naive_snapkv_keep(q[b : b + 1, :, :n], k[b : b + 1, :, :n], C, w, 5, pool, reduce)[0]
        assert torch.equal(cache.positions[0][b, :, :C], spec)
    # decode tokens are appended (SnapKV bounds the prompt part only)
    attention_step(
        cache, 0, q[:, :, -1:], k[:, :, -1:], v[:, :, -1:], torch.full((B, 1), L), torch.ones(B, dtype=torch.long)
    )
    assert cache.lengths(0).tolist() == [[C + 1, C + 1]] * B


def test_snapkv_budget_at_least_length_is_identity():
    L = 21
    q, k, v = _qkv(L, seed=19)
    full = CompressedKVCache(SnapKV(budget=L, window=4), 1, B, HKV, D)
    plain = CompressedKVCache(H2O(heavy=0, recent=1000), 1, B, HKV, D)
    o1 = _run(full, q, k, v, 15)
    o2 = _run(plain, q, k, v, 15)
    assert torch.equal(o1, o2) and full.compactions[0] == 0
    assert torch.equal(SnapKV(budget=1.0, window=4).budget_rows(0, torch.tensor([21, 9])), torch.tensor([21, 9]))
    assert SnapKV(budget=0.25, window=4).budget_rows(0, torch.tensor([40, 9])).tolist() == [10, 4]


# Rows per layer the official code keeps (KVCache-Factory ``PyramidKVCluster.update_kv``: window included), for
# (n_layers, C, w, L), derived by running a re-statement of its integer arithmetic.
UPSTREAM_PYRAMID = {
    (4, 512, 8, 1000): [512] * 4,  # C <= L < 2 (C - w): the flat budget
    (4, 512, 8, 1008): [991, 672, 353, 34],
    (32, 128, 32, 500): [220 - 5 * l for l in range(32)],
    (4, 12, 4, 30): [20, 15, 10, 5],
    (5, 20, 4, 33): [33, 27, 21, 15, 9],  # max >= L - w: max clamped, min raised
    (3, 64, 8, 40): [40, 40, 40],  # L < C: nothing compressed
    (4, 64, 8, 64): [64] * 4,
}


@pytest.mark.parametrize("case", sorted(UPSTREAM_PYRAMID))
def test_pyramid_budgets_match_the_official_code(case):
    n_layers, C, w, L = case
    assert pyramid_budgets(n_layers, C, L, w) == UPSTREAM_PYRAMID[case]


def _spec(n_layers):
    return CacheSpec(n_layers, HKV * G, HKV, D, torch.float32, torch.device("cpu"))


def test_pyramidkv_per_layer_cache_lengths():
    L, w, C, n_layers = 36, 4, 12, 3
    q, k, v = _qkv(L, seed=23)
    cache = PyramidKV(budget=C, window=w, impl="naive").make_cache(_spec(n_layers), B)
    pos = torch.arange(L).expand(B, L)
    for layer in range(n_layers):
        attention_step(cache, layer, q, k, v, pos, torch.full((B,), L))
    expect = pyramid_budgets(n_layers, C, L, w)
    assert expect == [20, 12, 4]  # min = 8 // 20 = 0, max = 16, steps = 8
    assert [cache.lengths(l).tolist() for l in range(n_layers)] == [[[n, n]] * B for n in expect]
    # inside each layer the selection is SnapKV's with that layer's budget
    for layer, n in enumerate(expect):
        spec = naive_snapkv_keep(q, k, n, w)
        assert torch.equal(cache.positions[layer][:, :, :n], spec)


def test_bad_arguments():
    with pytest.raises(ValueError, match="heavy"):
        H2O(heavy=-1)
    with pytest.raises(ValueError, match="ratio"):
        H2O(heavy_ratio=1.5)
    with pytest.raises(ValueError, match="window"):
        SnapKV(4, window=8)
    with pytest.raises(ValueError, match="pool"):
        SnapKV(64, pool="median")
    with pytest.raises(ValueError, match="score_reduce"):
        SnapKV(64, score_reduce="sum")
    with pytest.raises(ValueError, match="odd"):
        SnapKV(64, kernel=4)
    with pytest.raises(ValueError, match="fraction"):
        SnapKV(1.5)
    with pytest.raises(ValueError, match="budget"):
        pyramid_budgets(4, 3, 100, 8)
    with pytest.raises(ValueError, match="window"):
        PyramidKV(budget=8, window=8)
    with pytest.raises(ValueError, match="KVPolicy"):
        CompressedKVCache("h2o", 1, 1, 1, 8)
    with pytest.raises(ValueError, match="score_reduce"):
        CompressedKVCache(H2O(1, 1), 1, 1, 1, 8, score_reduce="sum")


def test_hybridkv_head_classification_and_budget_split():
    from reference_impls.decode.kv.hybridkv import allocate_head_budgets, classify_heads, text_query_rows

    L = 40
    visual = torch.zeros(1, 2, L, dtype=torch.bool)
    visual[:, :, 4:36] = True
    text = torch.zeros(1, 2, L)
    text[0, 0, 4:36] = 1.0 / 32  # head 0: uniform over the image -> dynamic
    text[0, 1, 10] = 0.9  # head 1: concentrated on one patch -> static
    text[0, 1, 4:36] += 0.1 / 32
    lengths = torch.full((1, 2), L)
    static = classify_heads(text, visual, lengths, top_frac=0.1, tau=0.5)
    assert static.tolist() == [[False, True]]
    hb = allocate_head_budgets(text, lengths, torch.tensor([8]), alpha=0.25)
    assert int(hb.sum()) == 16 and bool((hb >= 2).all())  # Hkv x budget split, alpha x budget floor per head
    # instruction rows: valid non-visual rows after the last visual token
    vis = torch.zeros(2, 10, dtype=torch.bool)
    vis[0, 2:5] = True
    rows = text_query_rows(vis, torch.tensor([8, 6]), 10)
    assert rows[0].nonzero().flatten().tolist() == [5, 6, 7]
    assert rows[1].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5]
    assert text_query_rows(None, torch.tensor([8, 6]), 10).sum(1).tolist() == [1, 1]


def test_lightvlm_policy_keeps_prompt_and_bounds_generated_rows():
    from reference_impls.decode.kv.lightvlm_kv import LightVLMKV

    L, P = 26, 10
    q, k, v = _qkv(L, seed=29)
    cache = CompressedKVCache(LightVLMKV(gen_heavy=2, gen_recent=3), 1, B, HKV, D)

    def check(c):
        assert int(c.lengths(0).max()) <= P + 5

    _run(cache, q, k, v, P, check=check)
    pos = cache.positions[0]
    assert bool((pos[:, :, :P] == torch.arange(P)).all())  # every prompt row survives, in order
    assert bool((pos[:, :, P + 2 : P + 5] == torch.arange(L - 3, L)).all())  # the 3 most recent generated rows


@pytest.mark.parametrize(
    "force,layout",
    [(torch.tensor([True, False]), "padded"), ("dynamic", "padded"), (torch.tensor([True, False]), "packed")],
)
def test_hybridkv_sparse_kernel_equals_model_path(force, layout):
    """HybridKVCache.attend (block-sparse split-K kernel over the selected chunks) == the attention the model
    computes over the rows that update() gathers; mixed static/dynamic heads, ragged per-head lengths."""
    from reference_impls.decode.kv.hybridkv import HybridKVCache

    L, P = 75, 70
    q, k, v = _qkv(L, seed=37)
    vis = torch.zeros(B, P, dtype=torch.bool)
    vis[:, 3:60] = True
    cache = HybridKVCache(
        1, B, HKV, D, budget=20, chunk_size=16, n_sink=2, n_recent=4, force=force, impl="naive", layout=layout
    )
    pos = torch.arange(L).expand(B, L)
    cache.set_visual_mask(vis)
    attention_step(cache, 0, q[:, :, :P], k[:, :, :P], v[:, :, :P], pos[:, :P], torch.full((B,), P))
    if not isinstance(force, str):
        assert cache.static[0].tolist() == [[True, False]] * B  # both head types present
        assert bool((cache.lengths(0)[:, 0] < P).all()) and bool((cache.lengths(0)[:, 1] == P).all())
    for t in range(P, L):
        sl = slice(t, t + 1)
        cache.set_query(0, q[:, :, t])
        o_model = attention_step(
            cache, 0, q[:, :, sl], k[:, :, sl], v[:, :, sl], pos[:, sl], torch.ones(B, dtype=torch.long)
        )[:, :, 0]
        if t % 2 == 0:
            assert rel_rms_err(cache.attend(0, q[:, :, t], impl="triton"), o_model) < 1e-4
    assert cache.retrieval_steps == L - P
    if layout == "packed":  # only kept rows (+ slack) are stored: the static head holds far fewer rows
        pk = cache._packed[0]
        assert pk is not None and cache.keys[0].numel() == 0
        assert int(pk.k.shape[0]) == int(pk.cap.sum()) < B * HKV * L
    sel = cache.last_selection[0]
    assert bool((sel[..., 0] == 0).all())  # the sink chunk is always read
