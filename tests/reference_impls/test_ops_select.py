"""select_topk (naive vs torch path, properties), gather_tokens and kv_compact (naive vs Triton interpreter)."""

import pytest
import torch

from reference_impls.ops import gather_tokens, kv_compact, select_topk
from reference_impls.ops._triton import launch_counts, triton_available
from tests.reference_impls._utils import ragged_lengths, randint, randn

needs_triton = pytest.mark.skipif(not triton_available(), reason="triton not importable")


def _check_topk_properties(idx, scores, k, lengths, protect):
    """Independent check of the contract, row by row."""
    lead, L = scores.shape[:-1], scores.shape[-1]
    k_max = int(k.max())
    assert idx.shape == (*lead, k_max) and idx.dtype == torch.int64
    for r in range(scores.reshape(-1, L).shape[0]):
        row, s = idx.reshape(-1, k_max)[r], scores.reshape(-1, L)[r]
        kr, n, p = int(k.reshape(-1)[r]), int(lengths.reshape(-1)[r]), protect.reshape(-1, L)[r]
        kept = row[:kr]
        assert torch.all(row[kr:] == -1) and torch.all(kept >= 0) and torch.all(kept < n)
        assert torch.all(kept[1:] > kept[:-1])
        kept_set = set(kept.tolist())
        assert set(torch.nonzero(p).flatten().tolist()) <= kept_set
        free_kept = [j for j in kept_set if not p[j]]
        dropped = [j for j in range(n) if j not in kept_set]
        if free_kept and dropped:
            worst_kept = min((float(s[j]), -j) for j in free_kept)
            best_dropped = max((float(s[j]), -j) for j in dropped)
            assert worst_kept > best_dropped  # score, then the lower index wins ties


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("three_d", [False, True])
def test_select_topk_torch_matches_naive(seed, three_d):
    B, H, L = 3, 4, 63
    shape = (B, H, L) if three_d else (B, L)
    ties = seed % 2 == 0  # integer-valued scores create many exact ties
    scores = randint(-3, 4, shape, seed=seed).float() if ties else randn(*shape, seed=seed)
    lengths = ragged_lengths(B, L, seed=seed + 10, min_len=8)
    lengths_lead = lengths[:, None].expand(B, H) if three_d else lengths
    k = torch.minimum(randint(0, 9, shape[:-1], seed=seed + 20), lengths_lead)
    protect = randint(0, 10, shape, seed=seed + 30) == 0
    protect &= torch.arange(L) < lengths_lead[..., None]
    # keep at most k protected per row: drop the later ones
    protect &= protect.cumsum(-1) <= k[..., None]
    idx_naive = select_topk(scores, k, lengths=lengths, protect_mask=protect, impl="naive")
    idx_torch = select_topk(scores, k, lengths=lengths, protect_mask=protect, impl="torch")
    assert torch.equal(idx_naive, idx_torch)
    _check_topk_properties(idx_torch, scores, k, lengths_lead, protect)


def test_select_topk_identity_and_broadcasts():
    scores = randn(2, 3, 577, seed=1)
    full = select_topk(scores, 577, impl="torch")
    assert torch.equal(full, torch.arange(577).expand(2, 3, 577))
    lengths = torch.tensor([577, 300])
    idx = select_topk(scores, torch.tensor([300, 300]), lengths=lengths, impl="torch")  # k [B] over heads
    assert torch.equal(idx[1], torch.arange(300).expand(3, 300))
    assert torch.equal(select_topk(scores[:, 0], 0, impl="torch"), torch.zeros(2, 0, dtype=torch.int64))
    protect = torch.zeros(2, 577, dtype=torch.bool)
    protect[:, 5] = True  # [B, L] protect mask broadcast over heads
    idx = select_topk(scores, 1, protect_mask=protect, impl="naive")
    assert torch.equal(idx, torch.full((2, 3, 1), 5))
    # ties -> lower index
    assert select_topk(torch.zeros(1, 7), 3, impl="torch").tolist() == [[0, 1, 2]]


def test_select_topk_bad_arguments():
    s = randn(2, 10, seed=0)
    with pytest.raises(ValueError, match="larger than"):
        select_topk(s, 11)
    with pytest.raises(ValueError, match="larger than"):
        select_topk(s, torch.tensor([3, 6]), lengths=torch.tensor([10, 5]))
    with pytest.raises(ValueError, match="more positions than k"):
        select_topk(s, 1, protect_mask=torch.ones(2, 10, dtype=torch.bool))
    beyond = torch.zeros(2, 10, dtype=torch.bool)
    beyond[1, 6] = True
    with pytest.raises(ValueError, match="beyond lengths"):
        select_topk(s, 3, lengths=torch.tensor([10, 4]), protect_mask=beyond)
    for bad in [
        dict(scores=s[0], k=1),
        dict(scores=s.long(), k=1),
        dict(scores=s, k=2.0),
        dict(scores=s, k=-1),
        dict(scores=s, k=torch.tensor([1, 2, 3])),
        dict(scores=s, k=torch.tensor([1.0, 2.0])),
        dict(scores=s, k=1, lengths=torch.tensor([11, 3])),
        dict(scores=s, k=1, protect_mask=torch.ones(2, 9, dtype=torch.bool)),
        dict(scores=s, k=1, protect_mask=torch.ones(2, 10)),
        dict(scores=s, k=1, impl="fast"),
    ]:
        with pytest.raises(ValueError):
            select_topk(**bad)


@pytest.mark.parametrize("impl", ["naive", pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gather_tokens(impl, dtype):
    B, L, C = 3, 63, 40
    hidden = randn(B, L, C, seed=2, dtype=dtype)
    lengths = ragged_lengths(B, L, seed=3)
    k = torch.minimum(torch.tensor([17, 1, 9]), lengths)
    idx = select_topk(randn(B, L, seed=4), k, lengths=lengths, impl="torch")
    pos = randint(0, 1000, (B, L), seed=5)
    before = launch_counts["_gather_rows_kernel"]
    out, out_pos = gather_tokens(hidden, idx, pos, impl=impl)
    assert launch_counts["_gather_rows_kernel"] == before + (impl == "triton")
    ref = torch.stack(
        [torch.stack([hidden[b, j] if j >= 0 else torch.zeros(C, dtype=dtype) for j in idx[b]]) for b in range(B)]
    )
    assert torch.equal(out, ref)
    assert torch.equal(out_pos, torch.where(idx >= 0, pos.gather(1, idx.clamp(min=0)), -1))
    # identity: keeping everything returns the input and arange positions
    ident, ident_pos = gather_tokens(hidden, torch.arange(L).expand(B, L).contiguous(), impl=impl)
    assert torch.equal(ident, hidden) and torch.equal(ident_pos, torch.arange(L).expand(B, L))


def test_gather_tokens_bad_arguments():
    h = randn(2, 5, 3, seed=0)
    for args in [
        (h[0], torch.zeros(2, 1, dtype=torch.int64)),
        (h, torch.zeros(2, 1, dtype=torch.int32)),
        (h, torch.zeros(3, 1, dtype=torch.int64)),
        (h, torch.full((2, 1), 5)),
        (h, torch.full((2, 1), -2)),
        (h, torch.zeros(2, 1, dtype=torch.int64), torch.zeros(2, 4, dtype=torch.int64)),
    ]:
        with pytest.raises(ValueError):
            gather_tokens(*args)


def _per_head_idx(B, H, L, seed):
    lengths = ragged_lengths(B, L, seed=seed)
    k = torch.minimum(randint(1, L + 1, (B, H), seed=seed + 1), lengths[:, None])  # per-head variable K
    return select_topk(randn(B, H, L, seed=seed + 2), k, lengths=lengths, impl="torch")


@pytest.mark.parametrize("impl", ["naive", pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize(
    "shape,dtype", [((3, 4, 63, 64), torch.float32), ((1, 2, 577, 128), torch.float16), ((3, 2, 1, 64), torch.float32)]
)
def test_kv_compact_out_of_place_and_in_place(impl, shape, dtype):
    B, H, L, D = shape
    k, v = randn(*shape, seed=6, dtype=dtype), randn(*shape, seed=7, dtype=dtype)
    idx = _per_head_idx(B, H, L, seed=8)
    K = idx.shape[-1]
    k_out, v_out, new_len = kv_compact(k, v, idx, impl=impl)
    safe = idx.clamp(min=0)[..., None].expand(B, H, K, D)
    keep = (idx >= 0)[..., None]
    assert torch.equal(k_out, torch.gather(k, 2, safe) * keep) and torch.equal(v_out, torch.gather(v, 2, safe) * keep)
    assert torch.equal(new_len, (idx >= 0).sum(-1))
    k_in, v_in = k.clone(), v.clone()
    k_ret, v_ret, new_len_in = kv_compact(k_in, v_in, idx, inplace=True, impl=impl)
    assert k_ret.data_ptr() == k_in.data_ptr() and v_ret.data_ptr() == v_in.data_ptr()
    assert torch.equal(k_in[:, :, :K], k_out) and torch.equal(v_in[:, :, :K], v_out)
    assert torch.equal(k_in[:, :, K:], k[:, :, K:]) and torch.equal(new_len_in, new_len)
    # identity: keep every row
    full = torch.arange(L).expand(B, H, L).contiguous()
    k_id, v_id, n_id = kv_compact(k, v, full, impl=impl)
    assert torch.equal(k_id, k) and torch.equal(v_id, v) and torch.all(n_id == L)


@needs_triton
def test_kv_compact_in_place_strided_views():
    """In place into a non-contiguous static cache view (layer slice of a stacked cache)."""
    cache = randn(2, 3, 2, 100, 32, seed=9)  # [layers, B, H, L, D]
    k = cache[1]
    v = cache[0].transpose(-1, -2).contiguous().transpose(-1, -2)  # non-standard strides
    idx = _per_head_idx(3, 2, 100, seed=10)
    k_ref, v_ref, _ = kv_compact(k, v, idx, impl="naive")
    other = cache[0].clone()
    kv_compact(k, v, idx, inplace=True, impl="triton")
    K = idx.shape[-1]
    assert torch.equal(k[:, :, :K], k_ref) and torch.equal(v[:, :, :K], v_ref)
    assert torch.equal(cache[0], other)  # the other layer is untouched


def test_kv_compact_bad_arguments():
    k = randn(2, 2, 8, 4, seed=0)
    ok = torch.tensor([[[0, 2, 5], [1, 3, -1]]] * 2)
    with pytest.raises(ValueError, match="trailing"):
        kv_compact(k, k.clone(), torch.tensor([[[0, -1, 5], [1, 3, -1]]] * 2), inplace=True)
    with pytest.raises(ValueError, match="ascending"):
        kv_compact(k, k.clone(), torch.tensor([[[2, 0, 5], [1, 3, -1]]] * 2), inplace=True)
    for args in [(k[0], k[0], ok), (k, k[:, :1], ok), (k, k, ok[:1]), (k, k, ok.int()), (k, k, ok + 8)]:
        with pytest.raises(ValueError):
            kv_compact(*args)


def _far_and_near_idx(B, H, L, K):
    """Kept rows far above their destinations (the last K rows) and next to them (every other row), ragged by head."""
    idx = torch.full((B, H, K), -1, dtype=torch.int64)
    for b in range(B):
        for h in range(H):
            n = K - (b + h) % 3 * 5
            rows = torch.arange(L - n, L) if (b + h) % 2 == 0 else torch.arange(0, 2 * n, 2)
            idx[b, h, :n] = rows
    return idx


@needs_triton
def test_kv_compact_in_place_blocks_read_before_overwritten():
    """In place with many row blocks per head: each block's sources lie in later blocks' destinations (the last K
    rows kept, shifted down by L - K) or right next to them; K and V of different dtypes and widths in one launch."""
    B, H, L, K = 2, 3, 300, 137
    k, v = randn(B, H, L, 48, seed=21), randn(B, H, L, 20, seed=22, dtype=torch.float16)
    idx = _far_and_near_idx(B, H, L, K)
    k_ref, v_ref, n_ref = kv_compact(k, v, idx, impl="naive")
    before = launch_counts["_compact_rows_inplace_kernel"]
    k_in, v_in, n_in = kv_compact(k.clone(), v.clone(), idx, inplace=True, impl="triton")
    assert launch_counts["_compact_rows_inplace_kernel"] == before + 1  # K and V in one launch
    assert torch.equal(k_in[:, :, :K], k_ref) and torch.equal(v_in[:, :, :K], v_ref) and torch.equal(n_in, n_ref)
    assert torch.equal(k_in[:, :, K:], k[:, :, K:]) and torch.equal(v_in[:, :, K:], v[:, :, K:])
    k_out, v_out, _ = kv_compact(k, v, idx, impl="triton")
    assert torch.equal(k_out, k_ref) and torch.equal(v_out, v_ref)


@needs_triton
def test_unchecked_out_of_range_indices_stay_in_bounds():
    """validate=False: indices >= L are not checked and read as zero rows (the kernels mask them)."""
    k, v = randn(1, 2, 10, 8, seed=1), randn(1, 2, 10, 8, seed=2)
    idx = torch.tensor([[[1, 4, 12], [0, 30, -1]]])
    k_out, v_out, n = kv_compact(k, v, idx, impl="triton", validate=False)
    assert torch.equal(k_out[0, 0, :2], k[0, 0, [1, 4]]) and (k_out[0, 0, 2] == 0).all()
    assert (v_out[0, 1, 1:] == 0).all() and n.tolist() == [[3, 2]]
    with pytest.raises(ValueError, match="entries"):
        kv_compact(k, v, idx, impl="triton", validate=True)
    out, pos = gather_tokens(randn(1, 10, 4, seed=3), torch.tensor([[2, 11]]), impl="triton", validate=False)
    assert (out[0, 1] == 0).all() and pos[0, 0] == 2


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_kv_compact_large_in_place(dtype):
    """Many blocks of kept rows per head on real hardware (in-place ordering hazards show up here)."""
    B, H, L, D = 2, 8, 8192, 128
    k = torch.randn(B, H, L, D, device="cuda", dtype=dtype)
    v = torch.randn(B, H, L, D, device="cuda", dtype=dtype)
    idx = _per_head_idx(B, H, L, seed=3).cuda()
    k_ref, v_ref, n_ref = kv_compact(k, v, idx, impl="naive")
    k_t, v_t, n_t = kv_compact(k, v, idx, impl="auto")
    assert torch.equal(k_t, k_ref) and torch.equal(v_t, v_ref) and torch.equal(n_t, n_ref)
    kv_compact(k, v, idx, inplace=True, impl="triton")
    K = idx.shape[-1]
    assert torch.equal(k[:, :, :K], k_ref) and torch.equal(v[:, :, :K], v_ref)
    # blocks whose sources are all far above (last K rows) or interleaved, repeated: a write that overtook an
    # earlier block's read would show up as a mismatch
    for rep in range(4):
        k = torch.randn(B, H, L, D, device="cuda", dtype=dtype)
        v = torch.randn(B, H, L, D, device="cuda", dtype=dtype)
        idx = _far_and_near_idx(B, H, L, 5000 + 700 * rep).cuda()
        k_ref, v_ref, _ = kv_compact(k, v, idx, impl="naive")
        kv_compact(k, v, idx, inplace=True, impl="triton")
        assert torch.equal(k[:, :, : idx.shape[-1]], k_ref) and torch.equal(v[:, :, : idx.shape[-1]], v_ref), rep
    hidden = torch.randn(B, L, 4096, device="cuda", dtype=dtype)
    tok_idx = select_topk(torch.randn(B, L, device="cuda"), 3000, impl="auto")
    out, _ = gather_tokens(hidden, tok_idx, impl="auto")
    assert torch.equal(out, gather_tokens(hidden, tok_idx, impl="naive")[0])


@pytest.mark.parametrize("impl", ["naive", pytest.param("triton", marks=needs_triton)])
def test_kv_compact_quantized_cache_and_scales(impl):
    """int8 codes and their [B, H, L, 1] fp16 scales compact with the same indices (quantized KV caches)."""
    B, H, L, D = 2, 2, 50, 16
    codes_k = randint(-128, 128, (B, H, L, D), seed=11).to(torch.int8)
    codes_v = randint(0, 256, (B, H, L, D), seed=12).to(torch.uint8)
    scales = randn(B, H, L, 1, seed=13, dtype=torch.float16)
    idx = _per_head_idx(B, H, L, seed=14)
    K = idx.shape[-1]
    keep = (idx >= 0)[..., None]
    k_out, v_out, _ = kv_compact(codes_k, codes_v, idx, impl=impl)
    assert k_out.dtype == torch.int8 and v_out.dtype == torch.uint8
    assert torch.equal(k_out, torch.gather(codes_k, 2, idx.clamp(min=0)[..., None].expand(B, H, K, D)) * keep)
    assert torch.equal(v_out, torch.gather(codes_v, 2, idx.clamp(min=0)[..., None].expand(B, H, K, D)) * keep)
    s_in, s_in2 = scales.clone(), scales.clone()
    kv_compact(s_in, s_in2, idx, inplace=True, impl=impl)
    assert torch.equal(s_in[:, :, :K], torch.gather(scales, 2, idx.clamp(min=0)[..., None]) * keep)
