"""scored_attention: naive spec vs an independent fp64 eager reference, Triton (interpreter on CPU) vs naive."""

import math

import pytest
import torch
import torch.nn.functional as F

from reference_impls.ops import colsum_to_kv_heads, scored_attention
from reference_impls.ops._triton import launch_counts, triton_available
from tests.reference_impls._utils import eager_attention_probs, make_qkv, ragged_lengths, randint

needs_triton = pytest.mark.skipif(not triton_available(), reason="triton not importable")


def _reference(q, k, v, *, causal, kv_lengths, sel):
    """fp64 eager: (o, lse, colsum) from softmax(QK^T) with the same masking conventions."""
    p = eager_attention_probs(q, k, causal=causal, kv_lengths=kv_lengths)
    G = q.shape[1] // k.shape[1]
    o = p @ v.double().repeat_interleave(G, dim=1)
    B, Hq, Lq, D = q.shape
    s = q.double() @ k.double().repeat_interleave(G, dim=1).transpose(-1, -2) / math.sqrt(D)
    lse = torch.logsumexp(s.masked_fill(p == 0, float("-inf")), dim=-1)  # p > 0 exactly where attended
    colsum = (p * sel[:, None, :, None].double()).sum(2) if sel is not None else None
    return o, lse, colsum


def _sdpa(q, k, v, *, causal, kv_lengths):
    """o from torch SDPA with an explicit boolean mask (rows that see no key are zeroed)."""
    B, Hq, Lq, D = q.shape
    Hkv = k.shape[1]
    G = Hq // Hkv
    allowed = eager_attention_probs(q, k, causal=causal, kv_lengths=kv_lengths) > 0
    seen = allowed.any(-1, keepdim=True)
    o = F.scaled_dot_product_attention(
        q.float(), k.float().repeat_interleave(G, 1), v.float().repeat_interleave(G, 1), attn_mask=allowed | ~seen
    )
    return o * seen


# (B, Hq, Hkv, Lq, Lk, D, causal, ragged: None | "B" | "BH", sel: "range" | "mask", dtype)
CASES = [
    (1, 2, 2, 1, 1, 64, True, None, "range", torch.float32),
    (1, 4, 1, 63, 63, 64, True, None, "mask", torch.float32),
    (3, 4, 4, 17, 63, 64, True, "B", "mask", torch.float32),
    (3, 8, 2, 63, 63, 64, True, "BH", "range", torch.float32),
    (3, 4, 1, 1, 63, 64, True, "B", "range", torch.float32),
    (2, 4, 4, 63, 63, 64, False, "B", "mask", torch.float32),
    (1, 2, 2, 577, 577, 64, True, None, "range", torch.float32),
    (2, 4, 1, 5, 577, 128, True, "BH", "mask", torch.float32),
    (3, 4, 1, 63, 63, 64, True, "B", "mask", torch.float16),
    (1, 4, 4, 1, 63, 64, True, None, "range", torch.float16),
]


def _make_case(B, Hq, Hkv, Lq, Lk, D, causal, ragged, sel_kind, dtype, seed):
    q, k, v = make_qkv(B, Hq, Hkv, Lq, Lk, D, seed=seed, dtype=dtype)
    if ragged == "B":
        kv_lengths = ragged_lengths(B, Lk, seed=seed + 5, min_len=max(1, Lk // 3))
    elif ragged == "BH":
        kv_lengths = randint(max(1, Lk // 3), Lk + 1, (B, Hkv), seed=seed + 6)
        kv_lengths[0, 0] = Lk
    else:
        kv_lengths = None
    if sel_kind == "range":
        a = int(randint(0, Lq, (1,), seed=seed + 7))
        sel_arg = {"score_q_range": (a, Lq)}
        sel = torch.zeros(B, Lq, dtype=torch.bool)
        sel[:, a:] = True
    else:
        sel = randint(0, 2, (B, Lq), seed=seed + 8).bool()
        sel_arg = {"score_q_mask": sel}
    return q, k, v, kv_lengths, sel, sel_arg


@pytest.mark.parametrize("case", CASES[:6] + CASES[8:], ids=lambda c: "-".join(map(str, c[:8])) + str(c[9])[-7:])
def test_naive_matches_fp64_eager(case):
    q, k, v, kv_lengths, sel, sel_arg = _make_case(*case, seed=11)
    causal = case[6]
    o, lse, colsum = scored_attention(q, k, v, causal=causal, kv_lengths=kv_lengths, impl="naive", **sel_arg)
    o_ref, lse_ref, colsum_ref = _reference(q, k, v, causal=causal, kv_lengths=kv_lengths, sel=sel)
    assert o.dtype == q.dtype and lse.dtype == torch.float32 and colsum.dtype == torch.float32
    torch.testing.assert_close(colsum.double(), colsum_ref, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(lse.double(), lse_ref, rtol=1e-5, atol=1e-5)
    tol = 1e-5 if q.dtype == torch.float32 else 2e-3
    torch.testing.assert_close(o.double(), o_ref, rtol=tol, atol=tol)


@needs_triton
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c[:8])) + str(c[9])[-7:])
def test_triton_matches_reference(case):
    q, k, v, kv_lengths, sel, sel_arg = _make_case(*case, seed=3)
    causal = case[6]
    before = launch_counts["_colsum_kernel"]
    o, lse, colsum = scored_attention(q, k, v, causal=causal, kv_lengths=kv_lengths, impl="triton", **sel_arg)
    assert launch_counts["_colsum_kernel"] == before + 1, "the Triton score kernel did not run"
    o_ref, lse_ref, colsum_ref = _reference(q, k, v, causal=causal, kv_lengths=kv_lengths, sel=sel)
    torch.testing.assert_close(colsum.double(), colsum_ref, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(lse.double(), lse_ref, rtol=1e-4, atol=1e-4)
    o_sdpa = _sdpa(q, k, v, causal=causal, kv_lengths=kv_lengths)
    tol = 1e-5 if q.dtype == torch.float32 else 2e-3
    torch.testing.assert_close(o.float(), o_sdpa, rtol=tol, atol=tol)
    # property: each selected row that sees at least one key contributes exactly 1 per head
    sees_key = torch.isfinite(lse_ref)  # [B, Hq, Lq]
    expected = (sees_key & sel[:, None, :]).sum(-1).double()
    torch.testing.assert_close(colsum.double().sum(-1), expected, rtol=1e-4, atol=1e-4)


@needs_triton
@pytest.mark.parametrize(
    "num_splits,Lq,causal,dtype",
    [
        (2, 1, True, torch.float32),
        (5, 7, True, torch.float32),
        (3, 40, False, torch.float32),
        (4, 1, True, torch.float16),
    ],
)
def test_triton_split_k_matches_naive(num_splits, Lq, causal, dtype):
    """Pass 1 split over key ranges (used on CUDA for few queries) + log-sum-exp merge equals one pass."""
    from reference_impls.ops.scored_attention.triton_kernel import triton_scored_attention

    B, Hq, Hkv, Lk = 3, 4, 2, 577
    q, k, v = make_qkv(B, Hq, Hkv, Lq, Lk, 64, seed=31, dtype=dtype)
    kv_lengths = randint(1, Lk + 1, (B, Hkv), seed=32)
    kv_lengths[0, 0], kv_lengths[1, 1] = Lk, 0  # a full row and a row with no keys at all
    sel = torch.ones(B, Lq, dtype=torch.bool)
    o, lse, colsum = triton_scored_attention(
        q, k, v, causal=causal, scale=64**-0.5, kv_lengths=kv_lengths, score_q_mask=sel, num_splits=num_splits
    )
    o_ref, lse_ref, colsum_ref = _reference(q, k, v, causal=causal, kv_lengths=kv_lengths, sel=sel)
    torch.testing.assert_close(colsum.double(), colsum_ref, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(lse.double(), lse_ref, rtol=1e-4, atol=1e-4)
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(o.double(), o_ref, rtol=tol, atol=tol)
    assert torch.all(o[1, 2:] == 0) and torch.all(torch.isneginf(lse[1, 2:]))  # kv head 1 of batch 1 is empty


@needs_triton
def test_split_combine_kernel_matches_torch_merge():
    """The Triton merge of split partials equals the PyTorch one, with empty splits and a row no split saw; more
    splits than one tile of the kernel."""
    from reference_impls.ops.scored_attention import triton_kernel as tk

    g = torch.Generator().manual_seed(4)
    S, B, Hq, Lq, D = 37, 2, 3, 5, 24
    o_part = torch.randn(S, B, Hq, Lq, D, generator=g)
    lse_part = torch.randn(S, B, Hq, Lq, generator=g) * 5
    lse_part[3:, 0, 1] = float("-inf")  # only the first three splits saw keys
    lse_part[:, 1, 2, 4] = float("-inf")  # this row saw none
    o_ref, lse_ref = tk.combine_splits(o_part, lse_part, torch.float32)
    o = torch.empty(B, Hq, Lq, D)
    lse = torch.empty(B, Hq, Lq)
    R = B * Hq * Lq
    tk._combine_kernel.launch(
        (R,),
        o_part,
        lse_part,
        o,
        lse,
        S,
        R,
        Hq,
        Lq,
        D,
        *o.stride(),
        lse.stride(0),
        lse.stride(1),
        device=o.device,
        meta=dict(BLOCK_S=16, BLOCK_D=32),
    )
    torch.testing.assert_close(o, o_ref.nan_to_num(0.0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lse, lse_ref, rtol=1e-5, atol=1e-6)
    assert (o[1, 2, 4] == 0).all() and torch.isneginf(lse[1, 2, 4])


@needs_triton
def test_triton_deterministic_and_agrees_with_naive_topk():
    q, k, v = make_qkv(2, 4, 2, 40, 200, 64, seed=21)
    outs = [scored_attention(q, k, v, score_q_range=(30, 40), impl="triton")[2] for _ in range(2)]
    assert torch.equal(outs[0], outs[1])
    naive = scored_attention(q, k, v, score_q_range=(30, 40), impl="naive")[2]
    top_t, top_n = outs[0].topk(20, dim=-1).indices.sort(-1).values, naive.topk(20, dim=-1).indices.sort(-1).values
    assert (top_t == top_n).float().mean() >= 0.99


@needs_triton
def test_triton_bf16_on_cpu_runs_in_fp32():
    """The interpreter's bf16 arithmetic is wrong; the CPU Triton path upcasts, so it matches naive."""
    q, k, v = make_qkv(2, 4, 2, 20, 33, 64, seed=17, dtype=torch.bfloat16)
    o, lse, c = scored_attention(q, k, v, score_q_range=(10, 20), impl="triton")
    o_n, lse_n, c_n = scored_attention(q, k, v, score_q_range=(10, 20), impl="naive")
    assert o.dtype == torch.bfloat16
    torch.testing.assert_close(c, c_n, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(o.float(), o_n.float(), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("impl", ["naive", pytest.param("triton", marks=needs_triton)])
def test_degenerate_rows_and_selections(impl):
    q, k, v = make_qkv(3, 2, 1, 4, 6, 64, seed=5)
    kv_lengths = torch.tensor([6, 0, 2])  # row 1 has no keys; row 2: causal queries 0, 1 see nothing
    o, lse, colsum = scored_attention(
        q, k, v, kv_lengths=kv_lengths, score_q_mask=torch.zeros(3, 4, dtype=torch.bool), impl=impl
    )
    assert torch.equal(colsum, torch.zeros(3, 2, 6))
    assert torch.all(o[1] == 0) and torch.all(torch.isneginf(lse[1]))
    assert torch.all(o[2, :, :2] == 0) and torch.all(torch.isneginf(lse[2, :, :2]))
    assert torch.isfinite(lse[2, :, 2:]).all() and torch.isfinite(lse[0]).all()
    o2, lse2, none = scored_attention(q, k, v, kv_lengths=kv_lengths, impl=impl)
    assert none is None and torch.equal(o2, o) and torch.equal(lse2, lse)
    # a single key: every query that sees it puts probability 1 on it and returns v exactly
    q1, k1, v1 = make_qkv(1, 2, 2, 1, 1, 64, seed=9)
    o1, _, c1 = scored_attention(q1, k1, v1, score_q_range=(0, 1), impl=impl)
    torch.testing.assert_close(o1, v1, rtol=0, atol=1e-6)
    torch.testing.assert_close(c1, torch.ones(1, 2, 1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("impl", ["naive", pytest.param("triton", marks=needs_triton)])
def test_attn_mask_tree(impl):
    """A dense mask (tree attention) is honoured; the Triton request falls back to the naive path."""
    q, k, v = make_qkv(2, 4, 2, 5, 9, 64, seed=13)
    mask = randint(0, 2, (2, 1, 5, 9), seed=14).bool()
    mask[..., 0] = True
    o, lse, colsum = scored_attention(q, k, v, causal=False, attn_mask=mask, score_q_range=(0, 5), impl=impl)
    ref = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), attn_mask=mask)
    torch.testing.assert_close(o, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(colsum.sum(-1), torch.full((2, 4), 5.0), rtol=1e-5, atol=1e-5)
    assert torch.all(colsum[mask[:, :, :, :].expand(2, 4, 5, 9).sum(2) == 0] == 0)


def test_colsum_to_kv_heads():
    c = torch.arange(2 * 6 * 3, dtype=torch.float32).reshape(2, 6, 3)
    mean = colsum_to_kv_heads(c, 2)
    assert mean.shape == (2, 2, 3)
    torch.testing.assert_close(mean[1, 1], c[1, 3:6].mean(0))
    torch.testing.assert_close(colsum_to_kv_heads(c, 3, reduce="max")[0, 2], c[0, 5])
    assert torch.equal(colsum_to_kv_heads(c, 6), c)
    with pytest.raises(ValueError, match="multiple"):
        colsum_to_kv_heads(c, 4)
    with pytest.raises(ValueError, match="reduce"):
        colsum_to_kv_heads(c, 2, reduce="sum")
    with pytest.raises(ValueError, match="3-D"):
        colsum_to_kv_heads(c[0], 2)


def test_bad_arguments_raise_value_error():
    q, k, v = make_qkv(2, 4, 2, 3, 5, 16, seed=1)
    bad = [
        dict(q=q[0], k=k, v=v),
        dict(q=q, k=k[:, :, :, :8], v=v[:, :, :, :8]),
        dict(q=q, k=k, v=v[:, :, :4]),
        dict(q=q, k=k[:1], v=v[:1]),
        dict(q=q[:, :3], k=k, v=v),  # Hq=3 not a multiple of Hkv=2
        dict(q=q.to(torch.int32), k=k, v=v),
        dict(q=q.double(), k=k.double(), v=v.double()),
        dict(q=q.half(), k=k, v=v),
        dict(q=q, k=k, v=v, kv_lengths=torch.tensor([5, 6])),
        dict(q=q, k=k, v=v, kv_lengths=torch.tensor([5.0, 4.0])),
        dict(q=q, k=k, v=v, kv_lengths=torch.tensor([5, 4, 3])),
        dict(q=q, k=k, v=v, score_q_range=(2, 1)),
        dict(q=q, k=k, v=v, score_q_range=(0, 4)),
        dict(q=q, k=k, v=v, score_q_range=(0, 1), score_q_mask=torch.ones(2, 3, dtype=torch.bool)),
        dict(q=q, k=k, v=v, score_q_mask=torch.ones(2, 3)),
        dict(q=q, k=k, v=v, score_q_mask=torch.ones(2, 4, dtype=torch.bool)),
        dict(q=q, k=k, v=v, attn_mask=torch.ones(2, 2, 3, 5, dtype=torch.bool)),
        dict(q=q, k=k, v=v, attn_mask=torch.ones(2, 1, 3, 5)),
        dict(q=q, k=k, v=v, scale=float("nan")),
        dict(q=q, k=k, v=v, impl="cuda"),
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            scored_attention(**kwargs)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_gpu_triton_vs_reference(dtype):
    torch.manual_seed(0)
    for B, Hq, Hkv, Lq, Lk, D, ragged in [
        (3, 8, 2, 577, 577, 128, "B"),
        (2, 32, 8, 64, 4099, 128, "BH"),
        (1, 4, 4, 1, 1025, 64, None),
    ]:
        q, k, v, kv_lengths, sel, sel_arg = _make_case(B, Hq, Hkv, Lq, Lk, D, True, ragged, "mask", dtype, seed=7)
        q, k, v = q.cuda(), k.cuda(), v.cuda()
        kv_lengths = None if kv_lengths is None else kv_lengths.cuda()
        sel_arg = {"score_q_mask": sel.cuda()}
        o, lse, colsum = scored_attention(q, k, v, kv_lengths=kv_lengths, impl="auto", **sel_arg)
        o_n, lse_n, colsum_n = scored_attention(q, k, v, kv_lengths=kv_lengths, impl="naive", **sel_arg)
        torch.testing.assert_close(colsum, colsum_n, rtol=1e-3, atol=1e-5)
        torch.testing.assert_close(lse, lse_n, rtol=1e-3, atol=1e-3)
        o_ref = _sdpa(
            q.cpu().float(),
            k.cpu().float(),
            v.cpu().float(),
            causal=True,
            kv_lengths=None if kv_lengths is None else kv_lengths.cpu(),
        ).cuda()
        tol = 2e-2 if dtype == torch.bfloat16 else (2e-3 if dtype == torch.float16 else 1e-4)
        torch.testing.assert_close(o.float(), o_ref, rtol=tol, atol=tol)


@needs_triton
def test_unchecked_out_of_range_lengths_are_clamped():
    """validate=False: kv_lengths outside [0, Lk] are not checked; the kernels clamp them to the buffer."""
    q, k, v = make_qkv(2, 4, 2, 5, 40, 16, seed=12)
    bad = torch.tensor([[40 + 30, 7], [-2, 40]])
    sel = torch.ones(2, 5, dtype=torch.bool)
    o, lse, c = scored_attention(q, k, v, kv_lengths=bad, score_q_mask=sel, impl="triton", validate=False)
    o_n, lse_n, c_n = scored_attention(q, k, v, kv_lengths=bad.clamp(0, 40), score_q_mask=sel, impl="naive")
    torch.testing.assert_close(o, o_n, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(c, c_n, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="kv_lengths"):
        scored_attention(q, k, v, kv_lengths=bad, impl="triton", validate=True)


@pytest.mark.gpu
def test_gpu_autotune_configs():
    """Each config of ``autotune_configs_under_test`` (the first and the last by default, every one with
    ATLAS_FULL_AUTOTUNE_SWEEP=1) forced in turn, against the naive path."""
    from reference_impls.ops.scored_attention import triton_kernel as tk
    from tests.reference_impls._utils import autotune_configs_under_test

    q, k, v = make_qkv(2, 8, 2, 300, 1000, 128, seed=4, dtype=torch.float16, device="cuda")
    kv_lengths = torch.tensor([1000, 777], device="cuda")
    sel = torch.zeros(2, 300, dtype=torch.bool, device="cuda")
    sel[:, -37:] = True
    o_n, lse_n, c_n = scored_attention(q, k, v, kv_lengths=kv_lengths, score_q_mask=sel, impl="naive")
    kv2 = kv_lengths[:, None].expand(2, 2)
    for cfg in autotune_configs_under_test(tk._attn_fwd_configs()):
        meta = dict(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        o, lse, c = tk.triton_scored_attention(
            q,
            k,
            v,
            causal=True,
            scale=128**-0.5,
            kv_lengths=kv2,
            score_q_mask=sel,
            meta_fwd=meta,
            meta_colsum={"BLOCK_M": 16, "BLOCK_N": 64},
        )
        torch.testing.assert_close(o.float(), o_n.float(), rtol=2e-3, atol=2e-3)
        torch.testing.assert_close(c, c_n, rtol=1e-3, atol=1e-5)
    for cfg in autotune_configs_under_test(tk._colsum_configs()):
        meta = dict(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        _, _, c = tk.triton_scored_attention(
            q,
            k,
            v,
            causal=True,
            scale=128**-0.5,
            kv_lengths=kv2,
            score_q_mask=sel,
            meta_fwd={"BLOCK_M": 64, "BLOCK_N": 64},
            meta_colsum=meta,
        )  # a forced pass 1: no autotuning of it here
        torch.testing.assert_close(c, c_n, rtol=1e-3, atol=1e-5)
