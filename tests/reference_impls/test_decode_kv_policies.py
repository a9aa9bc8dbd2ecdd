"""H2O, SnapKV, PyramidKV, LightVLM-KV and HybridKV on the real compressed cache (plain tensors, one layer)."""
import pytest
import torch
import torch.nn.functional as F

from reference_impls.decode.kv import (CompressedKVCache, H2OPolicy, PyramidKVPolicy, SnapKVPolicy,
                                       pyramid_budgets)
from reference_impls.decode.kv.base import attention_step as _step
from reference_impls.decode.kv.h2o import naive_h2o_attention
from tests.reference_impls._utils import eager_attention_probs, randn, rel_rms_err

B, HKV, G, D = 2, 2, 2, 16



def attention_step(*args):
    return _step(*args, impl="naive")


def _qkv(L, seed, b=B):
    return (randn(b, HKV * G, L, D, seed=seed), randn(b, HKV, L, D, seed=seed + 1),
            randn(b, HKV, L, D, seed=seed + 2))


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
        outs.append(attention_step(cache, 0, q[:, :, sl], k[:, :, sl], v[:, :, sl], pos[:, sl],
                                   torch.ones(b, dtype=torch.long)))
        if check:
            check(cache)
    return torch.cat(outs, 2)


@pytest.mark.parametrize("heavy,recent,reduce", [(3, 4, "mean"), (0, 5, "mean"), (5, 1, "max")])
def test_h2o_compaction_equals_mask_simulation(heavy, recent, reduce):
    L, P = 27, 11
    q, k, v = _qkv(L, seed=heavy * 10 + recent)
    o_ref, keep, acc = naive_h2o_attention(q, k, v, P, heavy, recent, score_reduce=reduce)
    cache = CompressedKVCache(H2OPolicy(heavy, recent), 1, B, HKV, D, score_reduce=reduce, impl="naive")

    def check(c):
        assert int(c.lengths(0).max()) <= heavy + recent          # the budget is never exceeded
        assert c.keys[0].shape[2] <= heavy + recent + c.growth    # storage follows the budget

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
    cache = CompressedKVCache(H2OPolicy(heavy=100, recent=100), 1, B, HKV, D)
    _run(cache, q, k, v, P)
    probs = eager_attention_probs(q, k)                                  # [B, Hq, L, L] fp64, causal
    col = probs.sum(2).reshape(B, HKV, G, L).mean(2)                     # group mean of the column sums
    assert torch.allclose(cache.scores[0][:, :, :L].double(), col, atol=1e-5)
    assert cache.compactions[0] == 0 and int(cache.lengths(0).min()) == L


def test_h2o_ratios_and_ragged_prompt():
    L, P = 24, 20
    q, k, v = _qkv(L, seed=5)
    pol = H2OPolicy(heavy_ratio=0.2, recent_ratio=0.1)
    cache = CompressedKVCache(pol, 1, B, HKV, D)
    n_new = torch.tensor([20, 13])
    _run(cache, q, k, v, P, n_new=n_new)
    # budgets: row 0 -> 4 + 2, row 1 -> 2 + 1
    assert cache.lengths(0)[0].tolist() == [6, 6] and cache.lengths(0)[1].tolist() == [3, 3]
    assert pol.budget(0, n_new).tolist() == [6, 3]


def _naive_snapkv_keep(q, k, budget, window, kernel, pool):
    """Independent eager reference (batch size 1 per call, upstream style)."""
    out = []
    for b in range(q.shape[0]):
        L = k.shape[2]
        probs = eager_attention_probs(q[b:b + 1], k[b:b + 1])[0, :, L - window:, :L - window]  # [Hq, w, prefix]
        s = probs.sum(1)[:, None, :].float()                                                   # [Hq, 1, prefix]
        s = (F.avg_pool1d if pool == "avg" else F.max_pool1d)(s, kernel, stride=1, padding=kernel // 2)[:, 0]
        s = s.reshape(HKV, G, -1)
        s = s.mean(1) if pool == "avg" else s.amax(1)
        top = torch.sort(-s, dim=-1, stable=True).indices[:, :budget - window].sort(-1).values  # ties -> lower
        rec = torch.arange(L - window, L).expand(HKV, window)
        out.append(torch.cat([top, rec], -1))
    return torch.stack(out)


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_snapkv_matches_eager_reference(pool):
    L, w, C, kernel = 40, 6, 15, 5
    q, k, v = _qkv(L, seed=17)
    cache = CompressedKVCache(SnapKVPolicy(C, window=w, kernel=kernel, pool=pool), 1, B, HKV, D)
    attention_step(cache, 0, q, k, v, torch.arange(L).expand(B, L), torch.full((B,), L))
    ref = _naive_snapkv_keep(q, k, C, w, kernel, pool)
    assert cache.lengths(0).tolist() == [[C, C]] * B
    assert torch.equal(cache.positions[0][:, :, :C], ref)
    # decode tokens are appended (SnapKV bounds the prompt part only)
    attention_step(cache, 0, q[:, :, -1:], k[:, :, -1:], v[:, :, -1:], torch.full((B, 1), L),
                   torch.ones(B, dtype=torch.long))
    assert cache.lengths(0).tolist() == [[C + 1, C + 1]] * B


def test_snapkv_budget_at_least_length_is_identity():
    L = 21
    q, k, v = _qkv(L, seed=19)
    full = CompressedKVCache(SnapKVPolicy(L, window=4), 1, B, HKV, D)
    plain = CompressedKVCache(H2OPolicy(heavy=0, recent=1000), 1, B, HKV, D)
    o1 = _run(full, q, k, v, 15)
    o2 = _run(plain, q, k, v, 15)
    assert torch.equal(o1, o2) and full.compactions[0] == 0


@pytest.mark.parametrize("n_layers,budget,L,w", [(32, 128, 500, 32), (4, 12, 30, 4), (7, 50, 60, 8),
                                                 (5, 20, 2000, 4)])
def test_pyramid_budgets_average_to_global(n_layers, budget, L, w):
    b = pyramid_budgets(n_layers, budget, L, w)
    assert sum(b) == n_layers * budget                       # the mean-budget identity, exactly
    assert all(x >= w for x in b) and all(b[i] >= b[i + 1] for i in range(n_layers - 1))
    assert max(b) <= L
    assert pyramid_budgets(n_layers, budget, budget - 1, w) == [budget - 1] * n_layers  # short prompt: no-op


def test_pyramidkv_per_layer_cache_lengths():
    L, w, C, n_layers = 36, 4, 12, 3
    q, k, v = _qkv(L, seed=23)
    pol = PyramidKVPolicy(C, n_layers, window=w)
    cache = CompressedKVCache(pol, n_layers, B, HKV, D)
    pos = torch.arange(L).expand(B, L)
    for layer in range(n_layers):
        attention_step(cache, layer, q, k, v, pos, torch.full((B,), L))
    expect = pyramid_budgets(n_layers, C, L, w)
    assert [int(cache.lengths(l).max()) for l in range(n_layers)] == expect
    assert sum(expect) / n_layers == C


def test_bad_arguments():
    with pytest.raises(ValueError, match="heavy"):
        H2OPolicy(heavy=-1)
    with pytest.raises(ValueError, match="ratio"):
        H2OPolicy(heavy_ratio=1.5)
    with pytest.raises(ValueError, match="window"):
        SnapKVPolicy(4, window=8)
    with pytest.raises(ValueError, match="pool"):
        SnapKVPolicy(64, pool="median")
    with pytest.raises(ValueError, match="odd"):
        SnapKVPolicy(64, kernel=4)
    with pytest.raises(ValueError, match="budget"):
        pyramid_budgets(4, 3, 100, 8)
    with pytest.raises(ValueError, match="KVPolicy"):
        CompressedKVCache("h2o", 1, 1, 1, 8)
    with pytest.raises(ValueError, match="score_reduce"):
        CompressedKVCache(H2OPolicy(1, 1), 1, 1, 1, 8, score_reduce="sum")


def test_hybridkv_head_classification_and_budget_split():
    from reference_impls.decode.kv.hybridkv import allocate_head_budgets, classify_heads, text_query_rows
    L = 40
    visual = torch.zeros(1, 2, L, dtype=torch.bool)
    visual[:, :, 4:36] = True
    text = torch.zeros(1, 2, L)
    text[0, 0, 4:36] = 1.0 / 32                 # head 0: uniform over the image -> dynamic
    text[0, 1, 10] = 0.9                        # head 1: concentrated on one patch -> static
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
    from reference_impls.decode.kv.lightvlm_kv import LightVLMKVPolicy
    L, P = 26, 10
    q, k, v = _qkv(L, seed=29)
    cache = CompressedKVCache(LightVLMKVPolicy(gen_heavy=2, gen_recent=3), 1, B, HKV, D)

    def check(c):
        assert int(c.lengths(0).max()) <= P + 5

    _run(cache, q, k, v, P, check=check)
    pos = cache.positions[0]
    assert bool((pos[:, :, :P] == torch.arange(P)).all())      # every prompt row survives, in order
    assert bool((pos[:, :, P + 2:P + 5] == torch.arange(L - 3, L)).all())   # the 3 most recent generated rows


@pytest.mark.parametrize("force,layout", [(torch.tensor([True, False]), "padded"), ("dynamic", "padded"),
                                          (torch.tensor([True, False]), "packed")])
def test_hybridkv_sparse_kernel_equals_model_path(force, layout):
    """HybridKVCache.attend (block-sparse split-K kernel over the selected chunks) == the attention the model
    computes over the rows that update() gathers; mixed static/dynamic heads, ragged per-head lengths."""
    from reference_impls.decode.kv.hybridkv import HybridKVCache
    L, P = 75, 70
    q, k, v = _qkv(L, seed=37)
    vis = torch.zeros(B, P, dtype=torch.bool)
    vis[:, 3:60] = True
    cache = HybridKVCache(1, B, HKV, D, budget=20, chunk_size=16, n_sink=2, n_recent=4, force=force, impl="naive",
                          layout=layout)
    pos = torch.arange(L).expand(B, L)
    cache.set_visual_mask(vis)
    attention_step(cache, 0, q[:, :, :P], k[:, :, :P], v[:, :, :P], pos[:, :P], torch.full((B,), P))
    if not isinstance(force, str):
        assert cache.static[0].tolist() == [[True, False]] * B                  # both head types present
        assert bool((cache.lengths(0)[:, 0] < P).all()) and bool((cache.lengths(0)[:, 1] == P).all())
    for t in range(P, L):
        sl = slice(t, t + 1)
        cache.set_query(0, q[:, :, t])
        o_model = attention_step(cache, 0, q[:, :, sl], k[:, :, sl], v[:, :, sl], pos[:, sl],
                                 torch.ones(B, dtype=torch.long))[:, :, 0]
        if t % 2 == 0:
            assert rel_rms_err(cache.attend(0, q[:, :, t], impl="triton"), o_model) < 1e-4
    assert cache.retrieval_steps == L - P
    if layout == "packed":    # only kept rows (+ slack) are stored: the static head holds far fewer rows
        pk = cache._packed[0]
        assert pk is not None and cache.keys[0].numel() == 0
        assert int(pk.k.shape[0]) == int(pk.cap.sum()) < B * HKV * L
    sel = cache.last_selection[0]
    assert bool((sel[..., 0] == 0).all())                          # the sink chunk is always read

