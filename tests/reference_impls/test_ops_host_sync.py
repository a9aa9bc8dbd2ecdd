"""No host synchronisation on the hot paths of the ops (``validate=False``, the CUDA default): every public call of
a decode step, of KV compaction and of score-based selection runs under ``forbid_host_reads`` on CPU tensors through
the Triton interpreter, so a ``.item()``, ``bool(tensor)``, ``int(tensor)`` or host-to-device copy anywhere in our
code fails the test (a CUDA run would only show it as time, and as a failed CUDA-graph capture)."""

import pytest
import torch

from reference_impls.ops import gather_tokens, kv_compact, scored_attention, select_topk
from reference_impls.ops.decode_attention import (
    chunk_scores,
    chunk_summaries,
    decode_attention,
    packed_decode_attention,
    ring_decode_attention,
    select_chunks,
    sparse_decode_attention,
)
from reference_impls.ops.quant.kv_quant import quantize_kv
from reference_impls.ops.quant.weight_gemm import (
    fp8_linear,
    int8_weight_only_matmul,
    quantize_fp8_rowwise,
    quantize_weight_int8,
)
from tests.reference_impls._utils import forbid_host_reads, randint, randn

pytest.importorskip("triton")


def test_guard_catches_a_host_read():
    """The guard is live: the default value checks on CPU tensors read values, and are caught."""
    q, k, v = randn(1, 4, 16, seed=1), randn(1, 2, 20, 16, seed=2), randn(1, 2, 20, 16, seed=3)
    lens = torch.tensor([[20, 5]])
    with pytest.raises(AssertionError, match="host read"):
        with forbid_host_reads():
            decode_attention(q, k, v, lens, impl="triton")
    with pytest.raises(AssertionError, match="host data"):
        with forbid_host_reads():
            torch.tensor([1, 2])


def test_decode_step_without_host_reads():
    """Append a token to an int8 cache, attend (padded, packed, ring, chunk-sparse), all without reading back."""
    B, Hkv, G, L, D = 2, 2, 3, 80, 32
    q = randn(B, Hkv * G, D, seed=4)
    k_new, v_new = randn(B, Hkv, 1, D, seed=5), randn(B, Hkv, 1, D, seed=6)
    k_cache = torch.zeros(B, Hkv, L, D, dtype=torch.int8)
    v_cache = torch.zeros(B, Hkv, L, D, dtype=torch.int8)
    ks, vs = torch.ones(B, Hkv, L), torch.ones(B, Hkv, L)
    k_float, v_float = randn(B, Hkv, L, D, seed=7), randn(B, Hkv, L, D, seed=8)
    lens = randint(1, L, (B, Hkv), seed=9)
    flat_k, flat_v = randn(200, D, seed=10), randn(200, D, seed=11)
    row0 = torch.tensor([[0, 50], [100, 150]])
    pos = randint(0, 5000, (B, Hkv, L), seed=12)
    inv = 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D))
    with forbid_host_reads():
        quantize_kv(k_new, "int8", out=k_cache, out_scale=ks, start=lens, impl="triton", validate=False)
        quantize_kv(v_new, "int8", out=v_cache, out_scale=vs, start=lens, impl="triton", validate=False)
        o1, _ = decode_attention(q, k_cache, v_cache, lens + 1, k_scale=ks, v_scale=vs, impl="triton", validate=False)
        o2, _ = packed_decode_attention(q, flat_k, flat_v, row0, lens.clamp(max=50), impl="triton", validate=False)
        o3, _ = ring_decode_attention(q, k_float, v_float, lens, pos, inv, impl="triton", validate=False)
        kmin, kmax, nch = chunk_summaries(k_float, lens, 16)
        sel = select_chunks(chunk_scores(q, kmin, kmax, nch, impl="triton"), 3, n_chunks=nch, n_first=1, n_last=1)
        o4, _ = sparse_decode_attention(q, k_float, v_float, lens, sel, 16, impl="triton", validate=False)
        o5, _ = sparse_decode_attention(
            q, flat_k, flat_v, lens.clamp(max=50), sel.clamp(max=3), 16, row0=row0, impl="triton", validate=False
        )
    # the same calls with the default checks agree (the values were valid)
    ref, _ = decode_attention(q, k_cache, v_cache, lens + 1, k_scale=ks, v_scale=vs, impl="naive")
    assert torch.allclose(o1, ref, atol=1e-5)
    ref4, _ = sparse_decode_attention(q, k_float, v_float, lens, sel, 16, impl="naive")
    assert torch.allclose(o4, ref4, atol=1e-5)
    for o in (o2, o3, o5):
        assert torch.isfinite(o).all()


def test_compaction_and_selection_without_host_reads():
    B, H, L, D = 2, 2, 90, 16
    k, v = randn(B, H, L, D, seed=13), randn(B, H, L, D, seed=14)
    scores = randn(B, H, L, seed=15)
    lengths = torch.tensor([90, 61])
    protect = torch.zeros(B, L, dtype=torch.bool)
    protect[:, :4] = True
    hidden = randn(B, L, 24, seed=16)
    with forbid_host_reads():
        idx = select_topk(scores, 40, lengths=lengths, protect_mask=protect, impl="torch", validate=False)
        k_out, v_out, n_out = kv_compact(k, v, idx, impl="triton", validate=False)
        k_in, v_in, n_in = kv_compact(k.clone(), v.clone(), idx, inplace=True, impl="triton", validate=False)
        tok = select_topk(scores[:, 0], 30, lengths=lengths, impl="torch", validate=False)
        out, pos = gather_tokens(hidden, tok, impl="triton", validate=False)
    assert torch.equal(idx, select_topk(scores, 40, lengths=lengths, protect_mask=protect, impl="naive"))
    assert torch.equal(k_in[:, :, :40], k_out) and torch.equal(v_in[:, :, :40], v_out)
    assert torch.equal(out, gather_tokens(hidden, tok, impl="naive")[0])


def test_scored_attention_without_host_reads():
    q, k, v = randn(2, 4, 1, 16, seed=17), randn(2, 2, 70, 16, seed=18), randn(2, 2, 70, 16, seed=19)
    lens = torch.tensor([70, 33])
    qp = randn(2, 4, 9, 16, seed=20)
    sel = torch.zeros(2, 9, dtype=torch.bool)
    sel[:, -3:] = True
    with forbid_host_reads():
        o, lse, colsum = scored_attention(q, k, v, kv_lengths=lens, score_q_range=(0, 1), impl="triton", validate=False)
        o2, _, colsum2 = scored_attention(qp, k, v, kv_lengths=lens, score_q_mask=sel, impl="triton", validate=False)
    o_n, _, c_n = scored_attention(q, k, v, kv_lengths=lens, score_q_range=(0, 1), impl="naive")
    assert torch.allclose(o, o_n, atol=1e-5) and torch.allclose(colsum, c_n, atol=1e-5)
    assert torch.isfinite(o2).all() and torch.isfinite(colsum2).all()


def test_quantised_linears_without_host_reads():
    x = randn(5, 64, seed=21)
    w = randn(48, 64, seed=22)
    w8, s8 = quantize_weight_int8(w)
    wf, sf = quantize_fp8_rowwise(w, impl="naive")
    with forbid_host_reads():
        y8 = int8_weight_only_matmul(x, w8, s8, impl="triton")
        xq, sx = quantize_fp8_rowwise(x, impl="triton")
        yf = fp8_linear(x, wf, sf, impl="torch")
    assert y8.shape == (5, 48) and yf.shape == (5, 48)
    xq_n, sx_n = quantize_fp8_rowwise(x, impl="naive")
    assert torch.equal(sx, sx_n) and torch.equal(xq.view(torch.uint8), xq_n.view(torch.uint8))
