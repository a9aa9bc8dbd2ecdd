"""Knorm, TOVA, AdaKV, ChunkKV, ThinK, DuoAttention, Expected Attention and Q-Filters on the real compressed cache
(plain tensors, one attention layer): each against its naive specification on ragged batches (different prompt
lengths per row), odd lengths and GQA (2 query heads per KV head), with both selection paths."""

import pytest
import torch

from reference_impls.decode.kv import (
    TOVA,
    AdaKV,
    ChunkKV,
    DuoAttention,
    ExpectedAttention,
    Knorm,
    QFilters,
    SnapKV,
    ThinK,
)
from reference_impls.decode.kv.adakv import naive_adakv_keep
from reference_impls.decode.kv.base import CompressedKVCache, attention_step
from reference_impls.decode.kv.chunkkv import naive_chunkkv_keep
from reference_impls.decode.kv.duo_attention import naive_duo_keep, streaming_mask
from reference_impls.decode.kv.expected_attention import expected_attention_scores, naive_expected_attention
from reference_impls.decode.kv.knorm import naive_knorm_keep
from reference_impls.decode.kv.qfilters import naive_qfilter_direction, qfilters_from_queries
from reference_impls.decode.kv.think import naive_think_pruned_channels
from reference_impls.decode.kv.tova import naive_tova_attention
from reference_impls.technique import CacheSpec
from tests.reference_impls._utils import randn, rel_rms_err

HKV, G, D = 2, 2, 8
LENGTHS = (13, 9)  # odd, ragged prompt lengths of the two batch rows
IMPLS = ("naive", "torch")


def _spec(n_layers=1, inv_freq=None):
    return CacheSpec(n_layers, HKV * G, HKV, D, torch.float32, torch.device("cpu"), inv_freq)


def _rows(lengths, seed):
    """Per row: q [Hq, L, D], k, v [Hkv, L, D] (post-RoPE stand-ins)."""
    return [
        (
            randn(HKV * G, L, D, seed=seed + 10 * b),
            randn(HKV, L, D, seed=seed + 10 * b + 1),
            randn(HKV, L, D, seed=seed + 10 * b + 2),
        )
        for b, L in enumerate(lengths)
    ]


def _prefill(cache, rows):
    """One right-padded prefill chunk of the rows' sequences."""
    T = max(q.shape[1] for q, _, _ in rows)
    B = len(rows)
    q = torch.zeros(B, HKV * G, T, D)
    k = torch.zeros(B, HKV, T, D)
    v = torch.zeros(B, HKV, T, D)
    for b, (qb, kb, vb) in enumerate(rows):
        L = qb.shape[1]
        q[b, :, :L], k[b, :, :L], v[b, :, :L] = qb, kb, vb
    n_new = torch.tensor([qb.shape[1] for qb, _, _ in rows])
    positions = torch.arange(T).expand(B, T)
    return attention_step(cache, 0, q, k, v, positions, n_new, impl="naive")


def _kept(cache, b, h, layer=0):
    n = int(cache.lengths(layer)[b, h])
    return cache.positions[layer][b, h, :n].tolist()


def _cache(policy, impl, spec=None):
    policy.impl = impl
    return policy.make_cache(spec or _spec(), len(LENGTHS))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_knorm_keeps_the_lowest_norm_keys(impl, ratio):
    rows = _rows(LENGTHS, seed=1)
    cache = _cache(Knorm(compression_ratio=ratio), impl)
    _prefill(cache, rows)
    for b, (_, k, _) in enumerate(rows):
        want = naive_knorm_keep(k, ratio)
        assert [_kept(cache, b, h) for h in range(HKV)] == want


def test_zero_ratio_keeps_every_row_and_the_same_output():
    rows = _rows(LENGTHS, seed=2)
    full = CompressedKVCache(Knorm(), 1, 2, HKV, D)
    o_full = _prefill(full, rows)
    for policy in (Knorm(), AdaKV(), ChunkKV(), ThinK(), DuoAttention(), QFilters(), ExpectedAttention(n_sink=2)):
        cache = policy.make_cache(_spec(inv_freq=torch.rand(D // 2)), 2)
        o = _prefill(cache, rows)
        assert torch.equal(o, o_full)
        assert torch.equal(cache.lengths(0), full.lengths(0))
        assert torch.equal(cache.keys[0][:, :, :13], full.keys[0][:, :, :13])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("budget", [4, 7])
def test_tova_equals_the_mask_simulation_per_row(impl, budget):
    """Ragged rows decoded together; each row against the spec run on that row alone."""
    prompt = LENGTHS
    n_decode = 6
    rows = _rows([p + n_decode for p in prompt], seed=3)
    cache = _cache(TOVA(budget=budget), impl)
    P = max(prompt)
    B = len(rows)
    q = torch.zeros(B, HKV * G, P, D)
    k = torch.zeros(B, HKV, P, D)
    v = torch.zeros(B, HKV, P, D)
    for b, (qb, kb, vb) in enumerate(rows):
        q[b, :, : prompt[b]], k[b, :, : prompt[b]], v[b, :, : prompt[b]] = (x[:, : prompt[b]] for x in (qb, kb, vb))
    outs = [[] for _ in range(B)]
    o = attention_step(cache, 0, q, k, v, torch.arange(P).expand(B, P), torch.tensor(prompt), impl=impl)
    for b in range(B):
        outs[b].append(o[b, :, : prompt[b]])
    assert int(cache.lengths(0).max()) <= budget
    for t in range(n_decode):
        step = [torch.stack([x[:, prompt[b] + t] for b, x in enumerate(xs)])[:, :, None] for xs in zip(*rows)]
        pos = torch.tensor([[p + t] for p in prompt])
        o = attention_step(cache, 0, *step, pos, torch.ones(B, dtype=torch.long), impl=impl)
        for b in range(B):
            outs[b].append(o[b])
        assert int(cache.lengths(0).max()) <= budget
    for b, (qb, kb, vb) in enumerate(rows):
        o_ref, keep = naive_tova_attention(qb[None], kb[None], vb[None], prompt[b], budget)
        assert rel_rms_err(torch.cat(outs[b], 1), o_ref[0]) < 1e-6
        for h in range(HKV):  # one kept set for every head
            assert _kept(cache, b, h) == keep[0].nonzero().flatten().tolist()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("ratio,alpha", [(0.5, 0.2), (0.3, 0.0), (0.6, 1.0)])
def test_adakv_allocates_across_heads_as_the_spec(impl, ratio, alpha):
    rows = _rows(LENGTHS, seed=4)
    cache = _cache(AdaKV(scorer=Knorm(), compression_ratio=ratio, alpha_safeguard=alpha), impl)
    _prefill(cache, rows)
    lengths = cache.lengths(0)
    for b, (_, k, _) in enumerate(rows):
        scores = -k.norm(dim=-1)
        want = naive_adakv_keep(scores, k.shape[1], ratio, alpha)
        assert [_kept(cache, b, h) for h in range(HKV)] == want
        n = int(k.shape[1] * (1 - ratio) + 1e-9)
        assert int(lengths[b].sum()) == HKV * n  # the layer's total budget
    if alpha == 0.0:  # heads really differ (random keys)
        assert bool((lengths[:, 0] != lengths[:, 1]).any())


def test_adakv_around_snapkv_uses_the_window_scores():
    rows = _rows(LENGTHS, seed=5)
    cache = AdaKV(scorer=SnapKV(window=3), compression_ratio=0.5).make_cache(_spec(), 2)
    _prefill(cache, rows)
    for b, (q, _, _) in enumerate(rows):
        L = q.shape[1]
        for h in range(HKV):
            assert set(range(L - 3, L)) <= set(_kept(cache, b, h))  # the window is always kept
        assert int(cache.lengths(0)[b].sum()) == HKV * int(L * 0.5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("ratio,chunk", [(0.5, 3), (0.4, 4), (0.5, 20)])
def test_chunkkv_keeps_whole_chunks_as_the_spec(impl, ratio, chunk):
    rows = _rows(LENGTHS, seed=6)
    cache = _cache(ChunkKV(scorer=Knorm(), compression_ratio=ratio, chunk_length=chunk), impl)
    _prefill(cache, rows)
    for b, (_, k, _) in enumerate(rows):
        want = naive_chunkkv_keep(-k.norm(dim=-1), k.shape[1], ratio, chunk)
        assert [_kept(cache, b, h) for h in range(HKV)] == want


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_think_zeroes_the_spec_channels_of_prompt_keys_only(ratio):
    rows = _rows(LENGTHS, seed=7)
    cache = ThinK(key_channel_ratio=ratio, window=4).make_cache(_spec(), 2)
    _prefill(cache, rows)
    full_bytes = sum(q.shape[1] for q, _, _ in rows) * HKV * D * 4 * 2
    pruned = 0
    for b, (q, k, _) in enumerate(rows):
        want = naive_think_pruned_channels(q, k, 4, ratio)
        L = q.shape[1]
        for h in range(HKV):
            stored = cache.keys[0][b, h, :L]
            zero = {c for c in range(D) if bool((stored[:, c] == 0).all())}
            assert zero == want[h]
            keep = [c for c in range(D) if c not in want[h]]
            assert torch.equal(stored[:, keep], k[h][:, keep])
            pruned += L * len(want[h])
    assert cache.kv_bytes() == full_bytes - pruned * 4
    # a decode row is stored whole
    step = [randn(2, n, 1, D, seed=70 + i) for i, n in enumerate((HKV * G, HKV, HKV))]
    attention_step(cache, 0, *step, torch.tensor([[13], [9]]), torch.ones(2, dtype=torch.long))
    assert torch.equal(cache.keys[0][0, :, 13], step[1][0, :, 0])


@pytest.mark.parametrize("impl", IMPLS)
def test_duo_attention_streaming_heads_keep_sinks_and_recent(impl):
    scores = torch.tensor([[0.9, 0.1]])  # one layer: head 1 has the lowest score -> streaming
    mask = streaming_mask(1, HKV, scores, 0.5)
    assert mask.tolist() == [[False, True]]
    cache = _cache(DuoAttention(head_scores=scores, head_compression_ratio=0.5, sink=2, recent=3), impl)
    rows = _rows([L + 4 for L in LENGTHS], seed=8)
    _prefill(cache, [(q[:, :L], k[:, :L], v[:, :L]) for (q, k, v), L in zip(rows, LENGTHS)])
    for t in range(4):
        step = [torch.stack([x[:, L + t] for x, L in zip(xs, LENGTHS)])[:, :, None] for xs in zip(*rows)]
        attention_step(
            cache, 0, *step, torch.tensor([[L + t] for L in LENGTHS]), torch.ones(2, dtype=torch.long), impl=impl
        )
    for b, L in enumerate(LENGTHS):
        total = L + 4
        assert _kept(cache, b, 0) == naive_duo_keep(total, False, 2, 3)
        assert _kept(cache, b, 1) == naive_duo_keep(total, True, 2, 3)


def test_duo_attention_refuses_to_invent_a_pattern():
    with pytest.raises(ValueError, match="head_scores"):
        streaming_mask(2, 2, None, 0.5)


def test_expected_attention_scores_equal_the_spec():
    inv_freq = 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D))
    L = 11
    q, k, v = _rows([L], seed=9)[0]
    # rotate the stand-ins so that the queries really are post-RoPE at positions 0..L-1
    from reference_impls.decode.kv.expected_attention import _rotate

    q = _rotate(q.double(), torch.arange(L)[None], inv_freq).float()
    got = expected_attention_scores(
        q[None], torch.arange(L)[None], k[None], v[None], torch.tensor([L]), inv_freq, n_future=7, n_sink=2
    )[0]
    want = naive_expected_attention(q, k, v, inv_freq, n_future=7, n_sink=2)
    assert rel_rms_err(got, want) < 1e-5


@pytest.mark.parametrize("impl", IMPLS)
def test_expected_attention_keeps_the_top_scored_rows(impl):
    inv_freq = 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D))
    rows = _rows(LENGTHS, seed=10)
    policy = ExpectedAttention(compression_ratio=0.5, n_sink=2, n_future_positions=16)
    cache = _cache(policy, impl, _spec(inv_freq=inv_freq))
    _prefill(cache, rows)
    for b, (q, k, v) in enumerate(rows):
        L = q.shape[1]
        scores = naive_expected_attention(q, k, v, inv_freq, n_future=16, n_sink=2)
        n = int(L * 0.5)
        for h in range(HKV):
            want = sorted(sorted(range(L), key=lambda j: (-float(scores[h, j]), j))[:n])
            assert _kept(cache, b, h) == want


def test_expected_attention_needs_1d_rope():
    with pytest.raises(ValueError, match="M-RoPE"):
        ExpectedAttention(compression_ratio=0.5).make_cache(_spec(inv_freq=None), 1)


def test_qfilter_direction_equals_power_iteration():
    q = randn(40, D, seed=11) + 2.0 * randn(1, D, seed=12)  # a dominant direction
    u = qfilters_from_queries([q[:, None, :].expand(40, G, D).reshape(40, G, D)], 1)[0, 0]
    ref = naive_qfilter_direction(q)
    assert float(u.double() @ ref) > 1 - 1e-5  # same direction and orientation


@pytest.mark.parametrize("impl", IMPLS)
def test_qfilters_keep_the_largest_projections(impl):
    rows = _rows(LENGTHS, seed=13)
    filters = randn(1, HKV, D, seed=14)
    cache = _cache(QFilters(filters=filters, compression_ratio=0.5), impl)
    _prefill(cache, rows)
    for b, (_, k, _) in enumerate(rows):
        L = k.shape[1]
        for h in range(HKV):
            proj = [float(k[h, j] @ filters[0, h]) for j in range(L)]
            want = sorted(sorted(range(L), key=lambda j: (-proj[j], j))[: int(L * 0.5)])
            assert _kept(cache, b, h) == want


def test_self_calibrated_qfilters_use_the_prompt_queries():
    rows = _rows(LENGTHS, seed=15)
    cache = QFilters(compression_ratio=0.5).make_cache(_spec(), 2)
    _prefill(cache, rows)
    for b, (q, k, _) in enumerate(rows):
        L = k.shape[1]
        for h in range(HKV):
            u = naive_qfilter_direction(q[h * G : (h + 1) * G].reshape(-1, D))
            proj = [float(k[h, j].double() @ u) for j in range(L)]
            want = sorted(sorted(range(L), key=lambda j: (-proj[j], j))[: int(L * 0.5)])
            assert _kept(cache, b, h) == want


@pytest.mark.parametrize(
    "make",
    [
        lambda: Knorm(compression_ratio=1.0),
        lambda: TOVA(budget=0),
        lambda: AdaKV(alpha_safeguard=2.0),
        lambda: ChunkKV(chunk_length=0),
        lambda: ThinK(key_channel_ratio=-0.1),
        lambda: DuoAttention(recent=0),
        lambda: ExpectedAttention(n_future_positions=0),
        lambda: AdaKV(scorer=3),
        lambda: QFilters(filters=torch.zeros(2, 2)),
    ],
)
def test_bad_arguments_get_one_clear_error(make):
    with pytest.raises(ValueError) as err:
        make()
    assert "\n" not in str(err.value)
