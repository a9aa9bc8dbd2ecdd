"""StreamingLLM ring buffer: == dense sink+window mask (original), ring == concatenation, rolled positions."""

import pytest
import torch

from reference_impls.decode.kv.base import attention_step as _step
from reference_impls.decode.kv.streaming import SinkWindowCache, naive_sink_window_attention, sink_window_mask
from reference_impls.ops.decode_attention import naive_decode_attention, rope_rotate
from tests.reference_impls._utils import randn, rel_rms_err

B, HKV, G, D = 2, 2, 2, 16


def _qkv(L, seed):
    return (randn(B, HKV * G, L, D, seed=seed), randn(B, HKV, L, D, seed=seed + 1), randn(B, HKV, L, D, seed=seed + 2))


def attention_step(*args):
    return _step(*args, impl="naive")  # the Triton decode kernels are checked through cache.attend below


def _inv():
    return 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D))


def _ones():
    return torch.ones(B, dtype=torch.long)


@pytest.mark.parametrize("n_sink,window", [(3, 8), (0, 5), (4, 1)])
def test_token_by_token_equals_dense_sink_window_mask(n_sink, window):
    L = 29
    q, k, v = _qkv(L, seed=n_sink + window)
    ref = naive_sink_window_attention(q, k, v, n_sink, window)
    cache = SinkWindowCache(1, B, HKV, D, n_sink=n_sink, window=window, pos_mode="original")
    pos = torch.arange(L).expand(B, L)
    outs = []
    for t in range(L):
        outs.append(
            attention_step(
                cache, 0, q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], pos[:, t : t + 1], _ones()
            )
        )
        assert int(cache.lengths(0).max()) <= n_sink + window
        assert cache.keys[0].shape[2] == n_sink + window  # memory is flat in L
    assert rel_rms_err(torch.cat(outs, 2), ref) < 1e-6


def test_mask_definition():
    m = sink_window_mask(6, 1, 2)
    assert m[5].tolist() == [True, False, False, False, True, True]
    assert m[1].tolist() == [True, True, False, False, False, False]


def test_ring_order_equals_concatenation_and_kernel():
    """Decode reads the ring in slot order; the same rows gathered chronologically give the same output, and the
    split-K kernel over the ring buffer (cache.attend) agrees."""
    L = 23
    q, k, v = _qkv(L, seed=7)
    cache = SinkWindowCache(1, B, HKV, D, n_sink=2, window=6, pos_mode="original")
    pos = torch.arange(L).expand(B, L)
    for t in range(L):
        o = attention_step(
            cache, 0, q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], pos[:, t : t + 1], _ones()
        )[:, :, 0]
        order = torch.argsort(cache.slot_tok[0], dim=1)
        n = cache.lengths(0)
        kk = torch.gather(cache.keys[0], 2, order[:, None, :, None].expand(B, HKV, -1, D))
        vv = torch.gather(cache.values[0], 2, order[:, None, :, None].expand(B, HKV, -1, D))
        empty = int((cache.slot_tok[0][0] < 0).sum())
        o_cat, _ = naive_decode_attention(q[:, :, t], kk[:, :, empty:], vv[:, :, empty:], n)
        assert rel_rms_err(o, o_cat) < 1e-6
        if t % 4 == 3:
            assert rel_rms_err(cache.attend(0, q[:, :, t], pos[:, t], impl="triton"), o) < 1e-5


def test_prefill_chunk_longer_than_ring_then_decode():
    """A ragged prompt chunk attends to itself fully; afterwards only sinks + last window survive."""
    L, P = 30, 20
    q, k, v = _qkv(L, seed=11)
    n_sink, window = 3, 8
    cache = SinkWindowCache(1, B, HKV, D, n_sink=n_sink, window=window, pos_mode="original")
    pos = torch.arange(L).expand(B, L)
    n_new = torch.tensor([P, 15])
    o = attention_step(cache, 0, q[:, :, :P], k[:, :, :P], v[:, :, :P], pos[:, :P], n_new)
    full = naive_sink_window_attention(q[:1, :, :P], k[:1, :, :P], v[:1, :, :P], P, P)  # plain causal
    assert rel_rms_err(o[:1], full) < 1e-6
    for b, n in enumerate(n_new.tolist()):
        kept = sorted(t for t in cache.slot_tok[0][b].tolist() if t >= 0)
        assert kept == list(range(n_sink)) + list(range(n - window, n))
    # decoding continues with the sink + window rule for row 0
    outs = []
    for t in range(P, L):
        row0 = [x[:1, :, t : t + 1].expand(B, -1, -1, -1) for x in (q, k, v)]
        outs.append(attention_step(cache, 0, *row0, pos[:, t : t + 1], _ones())[:1])
    ref = naive_sink_window_attention(q[:1], k[:1], v[:1], n_sink, window)[:, :, P:]
    assert rel_rms_err(torch.cat(outs, 2), ref) < 1e-6


def _rolled_reference(q, k, v, pos, n_sink, window, inv):
    """Dense reference of rolled positions: at step t the kept keys (sinks + window, chronological) of rank r are
    rotated at t - (n - 1) + r; the query is rotated at t."""
    L = q.shape[2]
    outs = []
    for t in range(L):
        kept = [j for j in range(t + 1) if j < n_sink or j > t - window]
        n = len(kept)
        eff = torch.tensor([t - (n - 1) + r for r in range(n)])
        kk = rope_rotate(k[:, :, kept], eff, inv)
        qq = rope_rotate(q[:, :, t], torch.tensor(t), inv)
        o, _ = naive_decode_attention(qq, kk, v[:, :, kept], torch.full((B,), n))
        outs.append(o)
    return torch.stack(outs, 2)


def test_rolled_positions():
    L, n_sink, window = 21, 2, 5
    q, k, v = _qkv(L, seed=13)
    inv = _inv()
    pos = torch.arange(L).expand(B, L)
    qr, kr = rope_rotate(q, pos[:, None], inv), rope_rotate(k, pos[:, None], inv)  # what the model hands over
    rolled = SinkWindowCache(1, B, HKV, D, n_sink=n_sink, window=window, pos_mode="rolled")
    orig = SinkWindowCache(1, B, HKV, D, n_sink=n_sink, window=window, pos_mode="original")
    outs_r, outs_o = [], []
    for t in range(L):
        sl = slice(t, t + 1)
        outs_r.append(attention_step(rolled, 0, qr[:, :, sl], kr[:, :, sl], v[:, :, sl], pos[:, sl], _ones()))
        outs_o.append(attention_step(orig, 0, qr[:, :, sl], kr[:, :, sl], v[:, :, sl], pos[:, sl], _ones()))
        # RoPE-on-read kernel over the ring (pre-RoPE keys) == the materialised rolled keys
        if t % 4 == 3:
            assert rel_rms_err(rolled.attend(0, qr[:, :, t], pos[:, t], impl="triton"), outs_r[-1][:, :, 0]) < 1e-4
    o_r, o_o = torch.cat(outs_r, 2), torch.cat(outs_o, 2)
    # identical while nothing was evicted, different afterwards, and equal to the rolled reference
    cap = n_sink + window
    assert rel_rms_err(o_r[:, :, :cap], o_o[:, :, :cap]) < 1e-5
    assert rel_rms_err(o_r[:, :, cap:], o_o[:, :, cap:]) > 1e-3
    assert rel_rms_err(o_r, _rolled_reference(q, k, v, pos, n_sink, window, inv)) < 1e-5


def test_bad_arguments():
    with pytest.raises(ValueError, match="pos_mode"):
        SinkWindowCache(1, 1, 1, 8, pos_mode="shifted")
    with pytest.raises(ValueError, match="window"):
        SinkWindowCache(1, 1, 1, 8, window=0)
    cache = SinkWindowCache(1, 1, 1, 8)
    with pytest.raises(ValueError, match="match"):
        cache.update(
            0,
            torch.zeros(1, 2, 1, 8),
            torch.zeros(1, 2, 1, 8),
            torch.zeros(1, 1, dtype=torch.long),
            torch.ones(1, dtype=torch.long),
        )


def test_rolled_positions_follow_the_official_convention():
    """Upstream's pos_shift attention (mit-han-lab/streaming-llm) rotates the kept keys at their index in the cache
    (0 .. n - 1) and the query at its own index there (n - 1 for a decode step); the rolled ring gives the same
    attention, whatever absolute positions the model used."""
    L, n_sink, window = 19, 2, 4
    q, k, v = _qkv(L, seed=23)
    inv = _inv()
    pos = torch.arange(L).expand(B, L)
    qr, kr = rope_rotate(q, pos[:, None], inv), rope_rotate(k, pos[:, None], inv)
    rolled = SinkWindowCache(1, B, HKV, D, n_sink=n_sink, window=window)  # the default mode: "rolled"
    assert rolled.pos_mode == "rolled"
    for t in range(L):
        sl = slice(t, t + 1)
        o = attention_step(rolled, 0, qr[:, :, sl], kr[:, :, sl], v[:, :, sl], pos[:, sl], _ones())[:, :, 0]
        kept = [j for j in range(t + 1) if j < n_sink or j > t - window]  # upstream's start + recent
        n = len(kept)
        k_up = rope_rotate(k[:, :, kept], torch.arange(n), inv)  # keys at their cache index
        q_up = rope_rotate(q[:, :, t], torch.tensor(n - 1), inv)  # query at the last index
        ref, _ = naive_decode_attention(q_up, k_up, v[:, :, kept], torch.full((B,), n))
        assert rel_rms_err(o, ref) < 1e-5, t
