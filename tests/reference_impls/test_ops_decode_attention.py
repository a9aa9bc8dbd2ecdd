"""Decode attention over compressed / quantized / ring / chunk-sparse caches: naive spec vs Triton, identities."""

import pytest
import torch

from reference_impls.ops._triton import launch_counts
from reference_impls.ops.decode_attention import (
    chunk_scores,
    chunk_summaries,
    decode_attention,
    naive_decode_attention,
    ring_decode_attention,
    rope_rotate,
    select_chunks,
    sparse_decode_attention,
)
from reference_impls.ops.quant.kv_quant import naive_dequantize_kv, naive_quantize_kv, quantize_kv
from tests.reference_impls._utils import eager_attention_probs, randint, randn, rel_rms_err

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(B, Hkv, G, L, D, seed, dtype=torch.float32):
    q = randn(B, Hkv * G, D, seed=seed, dtype=dtype, device=DEV)
    k = randn(B, Hkv, L, D, seed=seed + 1, dtype=dtype, device=DEV)
    v = randn(B, Hkv, L, D, seed=seed + 2, dtype=dtype, device=DEV)
    lens = randint(0, L + 1, (B, Hkv), seed=seed + 3, device=DEV)
    lens[0, 0] = L
    lens.view(-1)[-1] = 1
    return q, k, v, lens


def _eager(q, k, v, lens):
    """Independent reference via the shared eager probabilities (fp64)."""
    p = eager_attention_probs(q[:, :, None].cpu(), k.cpu(), causal=False, kv_lengths=lens.cpu())[:, :, 0]
    G = q.shape[1] // k.shape[1]
    return torch.einsum("bhl,bhld->bhd", p, v.cpu().double().repeat_interleave(G, dim=1))


@pytest.mark.parametrize("B,Hkv,G,L,D", [(1, 1, 1, 1, 16), (3, 2, 4, 63, 32), (2, 2, 3, 100, 24)])
def test_dense_matches_eager_and_naive(B, Hkv, G, L, D):
    q, k, v, lens = _inputs(B, Hkv, G, L, D, seed=L)
    o_ref = _eager(q, k, v, lens)
    o_n, lse_n = decode_attention(q, k, v, lens, impl="naive")
    before = launch_counts["_decode_split_kernel"]
    o_t, lse_t = decode_attention(q, k, v, lens, impl="triton")
    assert launch_counts["_decode_split_kernel"] == before + 1
    visible = (lens > 0).repeat_interleave(G, dim=1)
    assert rel_rms_err(o_n.cpu(), o_ref) < 1e-5
    assert rel_rms_err(o_t.cpu(), o_ref) < 1e-4
    assert torch.allclose(lse_t[visible], lse_n[visible], atol=1e-4)
    assert torch.isinf(lse_t[~visible]).all() and (o_t[~visible] == 0).all()


def test_four_dim_query_and_per_batch_lengths():
    q, k, v, _ = _inputs(2, 2, 2, 40, 16, seed=5)
    lens = torch.tensor([40, 7], device=DEV)
    o4, _ = decode_attention(q[:, :, None], k, v, lens, impl="triton")
    o3, _ = decode_attention(q, k, v, lens[:, None].expand(2, 2), impl="naive")
    assert o4.shape == (2, 4, 1, 16)
    assert rel_rms_err(o4[:, :, 0].cpu(), o3.cpu()) < 1e-5


def test_full_length_equals_sdpa():
    q, k, v, _ = _inputs(2, 2, 2, 57, 32, seed=9)
    lens = torch.full((2, 2), 57, device=DEV)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q[:, :, None], k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    )[:, :, 0]
    for impl in ("naive", "triton"):
        o, _ = decode_attention(q, k, v, lens, impl=impl)
        assert rel_rms_err(o.cpu(), ref.cpu()) < 1e-5


@pytest.mark.parametrize("fmt", ["int8", "fp8_e4m3"])
def test_quantized_kv_attention(fmt):
    q, k, v, lens = _inputs(2, 2, 3, 77, 32, seed=11)
    kq, ks = naive_quantize_kv(k, fmt)
    vq, vs = naive_quantize_kv(v, fmt)
    o_fp, _ = decode_attention(q, k, v, lens, impl="naive")
    o_n, _ = decode_attention(q, kq, vq, lens, k_scale=ks, v_scale=vs, impl="naive")
    o_t, _ = decode_attention(q, kq, vq, lens, k_scale=ks, v_scale=vs, impl="triton")
    # the kernel equals the spec on the same quantised cache ...
    assert rel_rms_err(o_t.cpu(), o_n.cpu()) < 1e-5
    # ... and quantised attention stays close to full precision (cosine per visible row)
    vis = (lens > 0).repeat_interleave(3, dim=1)
    cos = torch.nn.functional.cosine_similarity(o_t[vis].float(), o_fp[vis].float(), dim=-1)
    # int8: every row > 0.999; e4m3 (3 mantissa bits): mean > 0.999, worst row > 0.995
    assert cos.mean() > 0.999 and cos.min() > (0.999 if fmt == "int8" else 0.995)
    # the naive spec is literally attention over the dequantised cache
    o_deq, _ = naive_decode_attention(q, naive_dequantize_kv(kq, ks), naive_dequantize_kv(vq, vs), lens)
    assert rel_rms_err(o_n.cpu(), o_deq.cpu()) < 1e-6


def test_int8_roundtrip_bound_and_append_kernel():
    x = randn(2, 3, 37, 24, seed=3, scale=3.0, device=DEV)
    xq, s = naive_quantize_kv(x, "int8")
    assert ((naive_dequantize_kv(xq, s) - x).abs() <= s[..., None] / 2 + 1e-6).all()
    xq_t, s_t = quantize_kv(x, "int8", impl="triton")
    assert torch.equal(xq_t, xq) and torch.allclose(s_t, s)
    # append into a pre-allocated cache at ragged per-row offsets
    out = torch.zeros(2, 3, 50, 24, dtype=torch.int8, device=DEV)
    osc = torch.zeros(2, 3, 50, device=DEV)
    start = torch.tensor([3, 11], device=DEV)
    quantize_kv(x[:, :, :5], "int8", out=out, out_scale=osc, start=start, impl="triton")
    out_n = torch.zeros_like(out)
    osc_n = torch.zeros_like(osc)
    quantize_kv(x[:, :, :5], "int8", out=out_n, out_scale=osc_n, start=start, impl="naive")
    assert torch.equal(out, out_n) and torch.equal(osc, osc_n)
    assert torch.equal(out[1, :, 11:16], xq[1, :, :5]) and (out[1, :, :11] == 0).all()


def test_fp8_roundtrip_relative_bound():
    x = randn(2, 2, 19, 32, seed=4, scale=2.0, device=DEV)
    xq, s = naive_quantize_kv(x, "fp8_e4m3")
    err = (naive_dequantize_kv(xq, s) - x).abs()
    # e4m3: 3 mantissa bits -> half-ulp relative error 2^-4; subnormals (< 2^-6 * scale) have absolute ulp 2^-9
    assert (err <= x.abs() * 2**-4 + s[..., None] * 2**-10 + 1e-7).all()


@pytest.mark.gpu
def test_fp8_quantize_kernel_matches_naive_gpu():
    x = randn(2, 4, 129, 128, seed=6, device="cuda", dtype=torch.bfloat16)
    a, sa = quantize_kv(x, "fp8_e4m3", impl="naive")
    b, sb = quantize_kv(x, "fp8_e4m3", impl="triton")
    assert torch.allclose(sa, sb) and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def test_ring_rope_on_read_matches_prerotated_keys():
    B, Hkv, G, L, D = 2, 2, 2, 45, 32
    q, k, v, lens = _inputs(B, Hkv, G, L, D, seed=21)
    pos = randint(0, 300, (B, Hkv, L), seed=22, device=DEV)
    inv = 1.0 / (10000 ** (torch.arange(0, D, 2, device=DEV).float() / D))
    o_rot, _ = decode_attention(q, rope_rotate(k, pos, inv), v, lens, impl="naive")
    o_n, _ = ring_decode_attention(q, k, v, lens, pos, inv, impl="naive")
    o_t, _ = ring_decode_attention(q, k, v, lens, pos, inv, impl="triton")
    assert rel_rms_err(o_n.cpu(), o_rot.cpu()) < 1e-6
    assert rel_rms_err(o_t.cpu(), o_rot.cpu()) < 1e-4
    # slot order is irrelevant: a permuted ring gives the same output
    perm = torch.randperm(L, generator=torch.Generator().manual_seed(0)).to(DEV)
    full = torch.full((B, Hkv), L, device=DEV)
    o_a, _ = ring_decode_attention(q, k, v, full, pos, inv, impl="triton")
    o_b, _ = ring_decode_attention(q, k[:, :, perm], v[:, :, perm], full, pos[:, :, perm], inv, impl="triton")
    assert rel_rms_err(o_a.cpu(), o_b.cpu()) < 1e-5


def test_packed_store_matches_padded():
    """Packed per-head segments (only kept rows stored) == the same rows padded, float and quantised, and with
    chunk-sparse selection; empty heads give zeros."""
    from reference_impls.ops.decode_attention import packed_decode_attention, unpack_rows

    B, H, G, D = 2, 3, 2, 16
    lens = torch.tensor([[5, 40, 0], [17, 1, 33]], device=DEV)
    row0 = torch.tensor([[0, 9, 60], [61, 90, 95]], device=DEV)
    kf, vf = randn(140, D, seed=1, device=DEV), randn(140, D, seed=2, device=DEV)
    q = randn(B, H * G, D, seed=3, device=DEV)
    ref, _ = decode_attention(q, unpack_rows(kf, row0, lens), unpack_rows(vf, row0, lens), lens, impl="naive")
    for impl in ("naive", "triton"):
        o, _ = packed_decode_attention(q, kf, vf, row0, lens, impl=impl)
        assert rel_rms_err(o.cpu(), ref.cpu()) < 1e-5
    assert (o[0, 4:6] == 0).all()
    kq, ks = naive_quantize_kv(kf[None, None], "int8")
    vq, vs = naive_quantize_kv(vf[None, None], "int8")
    a, _ = packed_decode_attention(q, kq[0, 0], vq[0, 0], row0, lens, k_scale=ks[0, 0], v_scale=vs[0, 0], impl="naive")
    b, _ = packed_decode_attention(q, kq[0, 0], vq[0, 0], row0, lens, k_scale=ks[0, 0], v_scale=vs[0, 0], impl="triton")
    assert rel_rms_err(b.cpu(), a.cpu()) < 1e-5
    sel = torch.tensor([[[0, -1], [0, 2], [-1, -1]], [[1, -1], [0, -1], [0, 1]]], device=DEV)
    s_n, _ = sparse_decode_attention(q, kf, vf, lens, sel, 16, row0=row0, impl="naive")
    s_t, _ = sparse_decode_attention(q, kf, vf, lens, sel, 16, row0=row0, impl="triton")
    s_p, _ = sparse_decode_attention(
        q, unpack_rows(kf, row0, lens), unpack_rows(vf, row0, lens), lens, sel, 16, impl="naive"
    )
    assert rel_rms_err(s_t.cpu(), s_n.cpu()) < 1e-5 and rel_rms_err(s_n.cpu(), s_p.cpu()) < 1e-6
    with pytest.raises(ValueError, match="segments"):
        packed_decode_attention(q, kf, vf, row0 + 100, lens)


def test_rope_rotate_inverse():
    x = randn(1, 2, 9, 16, seed=1)
    pos = torch.arange(9)
    inv = 1.0 / (10000 ** (torch.arange(0, 16, 2).float() / 16))
    assert torch.allclose(rope_rotate(rope_rotate(x, pos, inv), -pos, inv), x, atol=1e-5)


@pytest.mark.parametrize("chunk", [16, 5])
def test_sparse_matches_naive_and_masked_dense(chunk):
    B, Hkv, G, L, D = 2, 2, 2, 70, 16
    q, k, v, lens = _inputs(B, Hkv, G, L, D, seed=31 + chunk)
    n_ch = -(-L // chunk)
    cidx = torch.full((B, Hkv, 3), -1, dtype=torch.long, device=DEV)
    cidx[0, 0] = torch.tensor([0, 2, n_ch - 1])
    cidx[0, 1, :1] = 1
    cidx[1, 0, :2] = torch.tensor([1, 3])
    o_n, _ = sparse_decode_attention(q, k, v, lens, cidx, chunk, impl="naive")
    o_t, _ = sparse_decode_attention(q, k, v, lens, cidx, chunk, impl="triton" if chunk == 16 else "auto")
    assert rel_rms_err(o_t.cpu(), o_n.cpu()) < 1e-4
    # reference: gather the selected keys and run dense attention on them
    for b in range(B):
        for h in range(Hkv):
            ids = [c for c in cidx[b, h].tolist() if c >= 0]
            keys = [j for c in ids for j in range(c * chunk, min((c + 1) * chunk, int(lens[b, h])))]
            qs = q[b : b + 1, h * G : (h + 1) * G]
            if not keys:
                assert (o_n[b, h * G : (h + 1) * G] == 0).all()
                continue
            ks, vs = k[b : b + 1, h : h + 1, keys], v[b : b + 1, h : h + 1, keys]
            ref, _ = naive_decode_attention(qs, ks, vs, torch.tensor([[len(keys)]], device=DEV))
            assert rel_rms_err(o_n[b : b + 1, h * G : (h + 1) * G].cpu(), ref.cpu()) < 1e-6


def test_sparse_all_chunks_equals_dense():
    q, k, v, lens = _inputs(2, 2, 2, 64, 16, seed=41)
    cidx = torch.arange(4, device=DEV).expand(2, 2, 4).contiguous()
    o_s, _ = sparse_decode_attention(q, k, v, lens, cidx, 16, impl="triton")
    o_d, _ = decode_attention(q, k, v, lens, impl="naive")
    assert rel_rms_err(o_s.cpu(), o_d.cpu()) < 1e-5


def test_chunk_scores_kernel_and_quest_upper_bound():
    B, Hkv, G, L, D, c = 2, 2, 3, 83, 16, 16
    q, k, _, lens = _inputs(B, Hkv, G, L, D, seed=51)
    kmin, kmax, nch = chunk_summaries(k, lens, c)
    for reduce in ("max", "mean"):
        s_n = chunk_scores(q, kmin, kmax, nch, reduce=reduce, impl="naive")
        s_t = chunk_scores(q, kmin, kmax, nch, reduce=reduce, impl="triton")
        assert torch.equal(torch.isinf(s_n), torch.isinf(s_t))
        fin = torch.isfinite(s_n)
        assert torch.allclose(s_n[fin], s_t[fin], atol=1e-4)
    # property: the Quest bound is >= every head's true max q.k inside each live chunk
    s = chunk_scores(q, kmin, kmax, nch, reduce="max", impl="naive")
    qk = torch.einsum("bhd,bhld->bhl", q.float(), k.float().repeat_interleave(G, dim=1))
    for b in range(B):
        for h in range(Hkv):
            for ci in range(int(nch[b, h])):
                hi = min((ci + 1) * c, int(lens[b, h]))
                true_max = qk[b, h * G : (h + 1) * G, ci * c : hi].max()
                assert s[b, h, ci] >= true_max - 1e-4


def test_quest_bound_property_random():
    hyp = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")

    @hyp.settings(max_examples=25, deadline=None)
    @hyp.given(st.integers(1, 40), st.integers(1, 9), st.integers(0, 10_000))
    def prop(L, c, seed):
        q, k, _, _ = _inputs(1, 1, 2, L, 8, seed=seed)
        lens = torch.tensor([[L]], device=DEV)
        kmin, kmax, nch = chunk_summaries(k, lens, c)
        s = chunk_scores(q, kmin, kmax, nch, impl="naive")
        qk = torch.einsum("bhd,bld->bhl", q.float(), k[:, 0].float())
        for ci in range(int(nch)):
            assert s[0, 0, ci] >= qk[0, :, ci * c : (ci + 1) * c].max() - 1e-4

    prop()


def test_select_chunks_forced_and_ties():
    scores = torch.tensor([[[5.0, 1.0, 3.0, 3.0, 0.0, 2.0]]])
    ids = select_chunks(scores, 3, n_chunks=torch.tensor([[6]]), n_first=1, n_last=1)
    assert ids.tolist() == [[[0, 2, 5]]]  # forced 0 and 5, then best remaining (tie 2 vs 3 -> 2)
    ids = select_chunks(scores, 4, n_chunks=torch.tensor([[4]]), n_first=0, n_last=0)
    assert ids.tolist() == [[[0, 1, 2, 3]]]


def test_bad_arguments():
    q, k, v, lens = _inputs(1, 2, 2, 10, 8, seed=0)
    with pytest.raises(ValueError, match="multiple"):
        decode_attention(q[:, :3], k, v, lens)
    with pytest.raises(ValueError, match="kv_lengths"):
        decode_attention(q, k, v, lens + 100)
    with pytest.raises(ValueError, match="one query"):
        decode_attention(torch.zeros(1, 4, 2, 8), k, v, lens)
    with pytest.raises(ValueError, match="k_scale"):
        decode_attention(q, k.to(torch.int8), v.to(torch.int8), lens)
    with pytest.raises(ValueError, match="chunk ids"):
        sparse_decode_attention(q, k, v, lens, torch.full((1, 2, 1), 7), 5)
    with pytest.raises(ValueError, match="power-of-two"):
        sparse_decode_attention(q, k, v, lens, torch.zeros((1, 2, 1), dtype=torch.long), 5, impl="triton")
    with pytest.raises(ValueError, match="impl"):
        decode_attention(q, k, v, lens, impl="cuda")
    with pytest.raises(ValueError, match="fmt"):
        quantize_kv(k, "int4")
    with pytest.raises(ValueError, match="overflows"):
        quantize_kv(k, "int8", out=torch.zeros(1, 2, 12, 8, dtype=torch.int8), out_scale=torch.zeros(1, 2, 12), start=5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_half_precision_long(dtype):
    q, k, v, lens = _inputs(2, 8, 4, 8191, 128, seed=61, dtype=dtype)
    o_n, _ = decode_attention(q, k, v, lens, impl="naive")
    o_t, _ = decode_attention(q, k, v, lens, impl="triton")
    assert rel_rms_err(o_t.float(), o_n.float()) < 2e-2
    kq, ks = quantize_kv(k, "int8")
    vq, vs = quantize_kv(v, "int8")
    o_q, _ = decode_attention(q, kq, vq, lens, k_scale=ks, v_scale=vs, impl="triton")
    vis = (lens > 0).repeat_interleave(4, dim=1)
    cos = torch.nn.functional.cosine_similarity(o_q[vis].float(), o_n[vis].float(), dim=-1)
    assert cos.min() > 0.999


@pytest.mark.gpu
def test_gpu_bf16_fp8_ring_sparse_paths():
    q, k, v, lens = _inputs(2, 8, 4, 4099, 128, seed=71, dtype=torch.bfloat16)
    o_ref, _ = decode_attention(q, k, v, lens, impl="naive")
    if torch.cuda.get_device_capability() >= (8, 9):
        kq, ks = quantize_kv(k, "fp8_e4m3")
        vq, vs = quantize_kv(v, "fp8_e4m3")
        o_t, _ = decode_attention(q, kq, vq, lens, k_scale=ks, v_scale=vs, impl="triton")
        o_n, _ = decode_attention(q, kq, vq, lens, k_scale=ks, v_scale=vs, impl="naive")
        assert rel_rms_err(o_t.float(), o_n.float()) < 2e-2
    pos = randint(0, 10_000, (2, 8, 4099), seed=72, device="cuda")
    inv = 1.0 / (10000 ** (torch.arange(0, 128, 2, device="cuda").float() / 128))
    o_t, _ = ring_decode_attention(q, k, v, lens, pos, inv, impl="triton")
    o_n, _ = ring_decode_attention(q, k, v, lens, pos, inv, impl="naive")
    assert rel_rms_err(o_t.float(), o_n.float()) < 2e-2
    kmin, kmax, nch = chunk_summaries(k, lens, 64)
    sel = select_chunks(chunk_scores(q, kmin, kmax, nch, impl="triton"), 8, n_chunks=nch, n_first=1, n_last=1)
    o_t, _ = sparse_decode_attention(q, k, v, lens, sel, 64, impl="triton")
    o_n, _ = sparse_decode_attention(q, k, v, lens, sel, 64, impl="naive")
    assert rel_rms_err(o_t.float(), o_n.float()) < 2e-2


@pytest.mark.gpu
def test_gpu_decode_step_captured_in_a_cuda_graph():
    """A decode step of the public ops (append to an int8 cache, attend, score one row, compact in place) captured
    in a CUDA graph after one eager warm-up call (which runs the autotuner) and replayed: capture fails on any host
    synchronisation, and the replay equals the eager result."""
    from reference_impls.ops import kv_compact, scored_attention

    B, Hkv, G, L, D = 2, 8, 4, 4096, 128
    dev = "cuda"
    q = randn(B, Hkv * G, D, seed=101, device=dev, dtype=torch.bfloat16)
    k_new = randn(B, Hkv, 1, D, seed=102, device=dev, dtype=torch.bfloat16)
    kf = randn(B, Hkv, L, D, seed=103, device=dev, dtype=torch.bfloat16)
    lens = randint(L // 2, L - 1, (B, Hkv), seed=104, device=dev)
    k8, ks = quantize_kv(kf, "int8")
    v8, vs = quantize_kv(randn(B, Hkv, L, D, seed=105, device=dev, dtype=torch.bfloat16), "int8")
    vf = randn(B, Hkv, L, D, seed=106, device=dev, dtype=torch.bfloat16)
    keep = torch.arange(0, L, 2, device=dev).expand(B, Hkv, L // 2).contiguous()
    kc, vc = torch.empty_like(kf), torch.empty_like(vf)

    def step():
        quantize_kv(k_new, "int8", out=k8, out_scale=ks, start=lens, validate=False)
        o, _ = decode_attention(q, k8, v8, lens + 1, k_scale=ks, v_scale=vs, validate=False)
        _, _, colsum = scored_attention(
            q[:, :, None], kf, vf, kv_lengths=lens + 1, score_q_range=(0, 1), validate=False
        )
        kc.copy_(kf)
        vc.copy_(vf)
        kv_compact(kc, vc, keep, inplace=True, validate=False)
        return o, colsum

    eager_o, eager_c = step()
    eager_k = kc.clone()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graph_o, graph_c = step()
    kc.zero_()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(graph_o, eager_o) and torch.allclose(graph_c, eager_c)
    assert torch.equal(kc, eager_k) and torch.equal(kc[:, :, : L // 2], kf[:, :, ::2])


@pytest.mark.gpu
def test_gpu_validate_true_raises_and_far_rope_positions():
    q, k, v, lens = _inputs(1, 8, 4, 1000, 128, seed=111, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="kv_lengths"):
        decode_attention(q, k, v, lens + 5000, validate=True)
    pos = randint(100_000, 200_000, (1, 8, 1000), seed=112, device="cuda")
    inv = 1.0 / (10000 ** (torch.arange(0, 128, 2, device="cuda").float() / 128))
    o_t, _ = ring_decode_attention(q, k, v, lens, pos, inv, impl="triton")  # fast sin/cos after the reduction
    o_n, _ = ring_decode_attention(q, k, v, lens, pos, inv, impl="naive")
    assert rel_rms_err(o_t.float(), o_n.float()) < 2e-2


def test_split_combine_kernel_matches_torch_merge():
    from reference_impls.ops.decode_attention.triton_kernel import _combine_splits, _combine_splits_torch

    g = torch.Generator().manual_seed(3)
    BH, S, D = 6, 7, 24
    o_part = torch.randn(BH, S, D, generator=g)
    m_part = torch.randn(BH, S, generator=g) * 3
    l_part = torch.rand(BH, S, generator=g) + 0.1
    m_part[1, 2:] = -1.0e30  # empty splits (no visible key in them)
    l_part[1, 2:] = 0.0
    o_part[1, 2:] = 0.0
    m_part[4] = -1.0e30  # a row with no visible key at all
    l_part[4] = 0.0
    o_part[4] = 0.0
    o_t, lse_t = _combine_splits(o_part.to(DEV), m_part.to(DEV), l_part.to(DEV), 2, 3, D, torch.float32)
    o_n, lse_n = _combine_splits_torch(o_part, m_part, l_part, 2, 3, D, torch.float32)
    assert torch.allclose(o_t.cpu(), o_n, atol=1e-5)
    assert torch.equal(torch.isinf(lse_t.cpu()), torch.isinf(lse_n))
    fin = torch.isfinite(lse_n)
    assert torch.allclose(lse_t.cpu()[fin], lse_n[fin], atol=1e-5)
    assert (o_t.view(6, D)[4] == 0).all() and torch.isinf(lse_t.view(6)[4])


def _dense_block_sizes():
    from reference_impls.ops.decode_attention.triton_kernel import decode_configs

    return sorted({16} | {cfg.kwargs["BLOCK_N"] for cfg in decode_configs()})


@pytest.mark.parametrize("block_n", _dense_block_sizes())
def test_per_head_split_ranges_every_tile(block_n):
    """Each program takes its share of *its own* head's length (no length read on the host): any split count, with
    ragged heads (empty, one key, full), GQA 3, an odd head dim, at every key block of the autotune space."""
    from reference_impls.ops.decode_attention.triton_kernel import triton_decode_attention

    q, k, v, lens = _inputs(2, 2, 3, 150, 24, seed=block_n)
    lens[0, 1] = 0
    ref, lse_ref = decode_attention(q, k, v, lens, impl="naive")
    visible = (lens > 0).repeat_interleave(3, dim=1)
    for n_splits in (1, 3, 11):
        o, lse = triton_decode_attention(q, k, v, lens, n_splits=n_splits, block_n=block_n)
        assert rel_rms_err(o.cpu(), ref.cpu()) < 1e-5, n_splits
        assert torch.allclose(lse[visible], lse_ref[visible], atol=1e-4)
        assert (o[~visible] == 0).all() and torch.isinf(lse[~visible]).all()


def test_split_count_two_waves_from_the_sm_count():
    from reference_impls.ops.decode_attention.triton_kernel import MIN_KEYS_PER_SPLIT, WAVES, choose_num_splits

    cpu = torch.device("cpu")  # sm_count is 4 off CUDA
    assert choose_num_splits(1, 1 << 20, cpu) == WAVES * 4
    assert choose_num_splits(3, 1 << 20, cpu) == -(-WAVES * 4 // 3)
    assert choose_num_splits(64, 1 << 20, cpu) == 1
    assert choose_num_splits(1, 2 * MIN_KEYS_PER_SPLIT, cpu) == 2  # no split below MIN_KEYS_PER_SPLIT keys


def test_packed_many_splits_and_ragged_segments():
    from reference_impls.ops.decode_attention import packed_decode_attention, unpack_rows
    from reference_impls.ops.decode_attention.triton_kernel import triton_decode_attention

    lens = torch.tensor([[70, 0, 3], [129, 1, 44]], device=DEV)
    row0 = torch.cumsum(lens.reshape(-1), 0).sub(lens.reshape(-1)).view_as(lens)
    kf, vf = randn(300, 16, seed=5, device=DEV), randn(300, 16, seed=6, device=DEV)
    q = randn(2, 6, 16, seed=7, device=DEV)
    ref, _ = decode_attention(q, unpack_rows(kf, row0, lens), unpack_rows(vf, row0, lens), lens, impl="naive")
    for n_splits in (1, 5, 13):
        o, _ = triton_decode_attention(q, kf, vf, lens, row0=row0, n_splits=n_splits)
        assert rel_rms_err(o.cpu(), ref.cpu()) < 1e-5
    o, _ = packed_decode_attention(q, kf, vf, row0, lens, impl="triton")
    assert rel_rms_err(o.cpu(), ref.cpu()) < 1e-5


def test_unchecked_out_of_range_lengths_are_clamped():
    """validate=False: no value check, and the kernel clamps lengths / segments to the buffers (memory safety);
    the result is then that of the clamped lengths."""
    from reference_impls.ops.decode_attention import packed_decode_attention, unpack_rows

    q, k, v, lens = _inputs(2, 2, 2, 40, 16, seed=81)
    bad = lens.clone()
    bad[0, 0], bad[1, 1] = 40 + 25, -3
    o, _ = decode_attention(q, k, v, bad, impl="triton", validate=False)
    ref, _ = decode_attention(q, k, v, bad.clamp(0, 40), impl="naive")
    assert rel_rms_err(o.cpu(), ref.cpu()) < 1e-5
    with pytest.raises(ValueError, match="kv_lengths"):
        decode_attention(q, k, v, bad, impl="triton", validate=True)
    kf, vf = randn(50, 16, seed=1, device=DEV), randn(50, 16, seed=2, device=DEV)
    row0 = torch.tensor([[0, 30], [45, 60]], device=DEV)  # the last segment starts beyond the 50 rows
    seg = torch.tensor([[30, 15], [20, 4]], device=DEV)  # 45 + 20 > 50: cut to 5 rows
    o, _ = packed_decode_attention(q, kf, vf, row0, seg, impl="triton", validate=False)
    cut = torch.tensor([[30, 15], [5, 0]], device=DEV)
    ref, _ = decode_attention(
        q, unpack_rows(kf, row0.clamp(max=50), cut), unpack_rows(vf, row0.clamp(max=50), cut), cut, impl="naive"
    )
    assert rel_rms_err(o.cpu(), ref.cpu()) < 1e-5
    with pytest.raises(ValueError, match="segments"):
        packed_decode_attention(q, kf, vf, row0, seg, impl="triton")


def test_combine_kernel_many_splits_bounded_tile():
    """More splits than one tile of the combine kernel (the merge walks them in tiles with a running max)."""
    from reference_impls.ops.decode_attention.triton_kernel import COMBINE_TILE, _combine_splits, _combine_splits_torch

    g = torch.Generator().manual_seed(5)
    BH, S, D = 3, 5 * COMBINE_TILE + 7, 16
    o_part = torch.randn(BH, S, D, generator=g)
    m_part = torch.randn(BH, S, generator=g) * 20
    l_part = torch.rand(BH, S, generator=g) + 0.1
    m_part[2, : S - 1] = -1.0e30  # only the last split of this row saw keys
    l_part[2, : S - 1] = 0.0
    o_t, lse_t = _combine_splits(o_part.to(DEV), m_part.to(DEV), l_part.to(DEV), 1, 3, D, torch.float32)
    o_n, lse_n = _combine_splits_torch(o_part, m_part, l_part, 1, 3, D, torch.float32)
    assert torch.allclose(o_t.cpu(), o_n, atol=1e-5) and torch.allclose(lse_t.cpu(), lse_n, atol=1e-4)


def test_rope_on_read_far_positions():
    """The angle reduction before sin/cos holds at positions up to 2e5 (angles up to 2e5 rad)."""
    B, Hkv, G, L, D = 1, 2, 2, 37, 32
    q, k, v, lens = _inputs(B, Hkv, G, L, D, seed=91)
    pos = randint(100_000, 200_000, (B, Hkv, L), seed=92, device=DEV)
    inv = 1.0 / (10000 ** (torch.arange(0, D, 2, device=DEV).float() / D))
    o_n, _ = ring_decode_attention(q, k, v, lens, pos, inv, impl="naive")
    o_t, _ = ring_decode_attention(q, k, v, lens, pos, inv, impl="triton")
    assert rel_rms_err(o_t.cpu(), o_n.cpu()) < 1e-4


def test_sparse_many_chunks_forced_and_chosen_splits():
    from reference_impls.ops.decode_attention.triton_kernel import triton_decode_attention

    q, k, v, lens = _inputs(1, 2, 2, 200, 16, seed=95)
    cidx = torch.tensor([[[0, 2, 3, 5, 6, 8, 9, 11, 12, -1], [1, 4, 7, 10, -1, -1, -1, -1, -1, -1]]], device=DEV)
    ref, _ = sparse_decode_attention(q, k, v, lens, cidx, 16, impl="naive")
    for n_splits in (None, 1, 4, 10):
        o, _ = triton_decode_attention(q, k, v, lens, chunk_idx=cidx, chunk_size=16, n_splits=n_splits)
        assert rel_rms_err(o.cpu(), ref.cpu()) < 1e-5


def test_select_chunks_width():
    scores = torch.tensor([[[5.0, 1.0, 3.0, 3.0, 0.0, 2.0]], [[0.0, 9.0, 1.0, 2.0, 3.0, 4.0]]])
    nch = torch.tensor([[3], [6]])
    ids = select_chunks(scores, 4, n_chunks=nch)  # int budget: width min(4, C) = 4, the short row -1 padded
    assert ids.tolist() == [[[0, 1, 2, -1]], [[1, 3, 4, 5]]]
    assert select_chunks(scores, torch.tensor([[2], [3]]), n_chunks=nch).shape[-1] == 3  # tensor: largest count
    assert select_chunks(scores, torch.tensor([[2], [3]]), n_chunks=nch, width=5).tolist() == [
        [[0, 2, -1, -1, -1]],
        [[1, 4, 5, -1, -1]],
    ]


# ------------------------------------------------------------------ ahead-of-time sm_90 compile (no GPU needed)
def _compile_all():
    """Compile every kernel variant for sm_90 with triton's CUDA backend + bundled ptxas (run in a subprocess
    without TRITON_INTERPRET): catches what only the GPU compiler rejects, on machines without a GPU."""
    from tests.reference_impls._utils import compile_for_sm90_or_exit, require_triton_compiler

    require_triton_compiler()
    from reference_impls.ops.decode_attention import triton_kernel as tk
    from reference_impls.ops.quant import kv_quant as kq

    ptr = {
        "Q": "*bf16",
        "KS": "*fp32",
        "VS": "*fp32",
        "LENS": "*i32",
        "KPOS": "*i64",
        "INV_FREQ": "*fp32",
        "CIDX": "*i32",
        "ROW0": "*i64",
        "OP": "*fp32",
        "MP": "*fp32",
        "LP": "*fp32",
    }
    base = {"G_PAD": 16, "BLOCK_D": 128, "HALF_D": 64, "FAST_TRIG": True}
    for kdt, quant, rope, sparse, packed in [
        ("*bf16", False, False, False, False),
        ("*bf16", False, True, False, False),
        ("*bf16", False, False, True, False),
        ("*i8", True, False, False, False),
        ("*fp8e4nv", True, False, False, False),
        ("*i8", True, False, True, False),
        ("*bf16", False, False, False, True),
        ("*fp8e4nv", True, False, True, True),
        ("*bf16", False, True, False, True),
    ]:
        compile_for_sm90_or_exit(
            f"decode_split k={kdt} quant={quant} rope={rope} sparse={sparse} packed={packed}",
            tk._decode_split_kernel.fn,
            {**ptr, "K": kdt, "V": kdt},
            {**base, "BLOCK_N": 64, "QUANT": quant, "ROPE": rope, "SPARSE": sparse, "PACKED": packed},
            float_args=("scale_log2",),
        )
    # autotune configs: one per key block (the last listed with it; bf16), and the largest tile for int8
    configs = {}
    for cfg in tk.decode_configs():
        configs[cfg.kwargs["BLOCK_N"]] = cfg
    variants = [(cfg, "*bf16", False) for cfg in configs.values()] + [(configs[max(configs)], "*i8", True)]
    for cfg, kdt, quant in variants:
        compile_for_sm90_or_exit(
            f"decode_split autotune {cfg.kwargs} warps={cfg.num_warps} stages={cfg.num_stages} k={kdt}",
            tk._decode_split_kernel.fn,
            {**ptr, "K": kdt, "V": kdt},
            {**base, **cfg.kwargs, "QUANT": quant, "ROPE": False, "SPARSE": False, "PACKED": False},
            float_args=("scale_log2",),
            options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages},
        )
    compile_for_sm90_or_exit(
        "combine",
        tk._combine_kernel.fn,
        {"OP": "*fp32", "MP": "*fp32", "LP": "*fp32", "O": "*bf16", "LSE": "*fp32"},
        {"BLOCK_S": 32, "BLOCK_D": 128},
    )
    compile_for_sm90_or_exit(
        "chunk_scores",
        tk._chunk_score_kernel.fn,
        {"Q": "*bf16", "KMIN": "*fp32", "KMAX": "*fp32", "NCH": "*i32", "OUT": "*fp32"},
        {"MEAN": False, "G_PAD": 4, "BLOCK_C": 16, "BLOCK_D": 128},
    )
    for odt, int8 in (("*i8", True), ("*fp8e4nv", False)):
        compile_for_sm90_or_exit(
            f"kv_quant {odt}",
            kq._quant_append_kernel.fn,
            {"X": "*bf16", "OUT": odt, "OSCALE": "*fp32", "START": "*i32"},
            {"INT8": int8, "BLOCK_T": 16, "BLOCK_D": 128},
            float_args=("qmax",),
        )


@pytest.mark.slow
def test_kernels_compile_for_sm90():
    from tests.reference_impls._utils import run_compile_script

    run_compile_script(__file__, expected_kernels=13 + 4)


if __name__ == "__main__":
    _compile_all()
