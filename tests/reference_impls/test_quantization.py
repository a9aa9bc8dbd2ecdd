"""INT8 weight-only / FP8 W8A8: round-trip bounds, GEMM accuracy (naive + Triton int8), tiny-model agreement."""

import copy

import pytest
import torch

from reference_impls.decode.quantization import FP8Linear, Int8WeightOnlyLinear, quantize_model
from reference_impls.models.config import LVLMConfig
from reference_impls.models.minimal_lvlm import MinimalLVLM
from reference_impls.ops._triton import launch_counts
from reference_impls.ops.quant.weight_gemm import (
    dequantize_weight_int8,
    fp8_linear,
    int8_weight_only_matmul,
    naive_fp8_matmul,
    naive_int8_weight_only_matmul,
    quantize_fp8_rowwise,
    quantize_weight_int8,
)
from tests.reference_impls._utils import (
    randn,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _rel(a, b):
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm())


def test_int8_round_trip_within_half_step():
    w = randn(37, 53, seed=0) * torch.linspace(0.01, 10, 37)[:, None]  # very different channel ranges
    w[3] = 0  # an all-zero channel
    w_q, s = quantize_weight_int8(w)
    assert w_q.dtype == torch.int8 and s.shape == (37,)
    err = (w - dequantize_weight_int8(w_q, s)).abs()
    assert bool((err <= s[:, None] / 2 + 1e-6 * s[:, None]).all())
    assert bool((w_q[3] == 0).all())


def test_fp8_round_trip_relative_bound():
    w = randn(29, 64, seed=1) * 3
    w_q, s = quantize_fp8_rowwise(w)
    deq = w_q.float() * s[:, None]
    # E4M3 keeps 3 mantissa bits: normal values round within 2^-4 relative; subnormals within half of 2^-9 * s
    bound = torch.maximum(w.abs() * 2.0**-4, s[:, None] * 2.0**-10)
    assert bool(((w - deq).abs() <= bound + 1e-7).all())


@pytest.mark.parametrize("M", [1, 5, 33])
def test_int8_gemm_naive_and_triton(M):
    pytest.importorskip("triton")
    K, N = 100, 70  # not multiples of the block sizes
    x, w, b = randn(M, K, seed=M), randn(N, K, seed=2), randn(N, seed=3)
    w_q, s = quantize_weight_int8(w)
    ref = x @ w.t() + b
    naive = naive_int8_weight_only_matmul(x, w_q, s, b)
    assert _rel(naive, ref) <= 1e-2
    before = launch_counts["_int8_gemm_kernel"]
    tri = int8_weight_only_matmul(x, w_q, s, b, impl="triton")
    assert launch_counts["_int8_gemm_kernel"] == before + 1
    assert _rel(tri, naive) <= 1e-5 and _rel(tri, ref) <= 1e-2
    tri16 = int8_weight_only_matmul(x.half(), w_q, s, b.half(), impl="triton")
    assert tri16.dtype == torch.float16 and _rel(tri16, ref) <= 1e-2


def test_int8_gemm_every_autotune_tile_in_the_interpreter():
    """Every tile of the autotune space, forced, on a GEMM that none of them divides (CUDA picks among these)."""
    pytest.importorskip("triton")
    from reference_impls.ops.quant.weight_gemm import int8_gemm_configs, triton_int8_weight_only_matmul

    x, w, b = randn(19, 150, seed=31), randn(70, 150, seed=32), randn(70, seed=33)
    w_q, s = quantize_weight_int8(w)
    naive = naive_int8_weight_only_matmul(x, w_q, s, b)
    for cfg in int8_gemm_configs():
        tri = triton_int8_weight_only_matmul(
            x, w_q, s, b, block_m=cfg.kwargs["BLOCK_M"], block_n=cfg.kwargs["BLOCK_N"], block_k=cfg.kwargs["BLOCK_K"]
        )
        assert _rel(tri, naive) <= 1e-5, cfg.kwargs


@pytest.mark.parametrize("C", [77, 5000])
def test_fp8_activation_quantiser_kernel_matches_torch(C):
    """The fused kernel gives the same scales and fp8 codes as the PyTorch ops, bit for bit (rows of very different
    ranges, an all-zero row, a row longer than one tile)."""
    pytest.importorskip("triton")
    x = randn(9, C, seed=C) * torch.logspace(-4, 4, 9)[:, None]
    x[4] = 0
    before = launch_counts["_quantize_rows_fp8_kernel"]
    xq, sx = quantize_fp8_rowwise(x, impl="triton")
    assert launch_counts["_quantize_rows_fp8_kernel"] == before + 1
    xq_n, sx_n = quantize_fp8_rowwise(x, impl="naive")
    assert torch.equal(sx, sx_n) and torch.equal(xq.view(torch.uint8), xq_n.view(torch.uint8))


def test_fp8_gemm_accuracy():
    x, w = randn(3, 7, 128, seed=4), randn(96, 128, seed=5)
    w_q, s = quantize_fp8_rowwise(w)
    y = fp8_linear(x, w_q, s)
    assert y.shape == (3, 7, 96)
    x_q, sx = quantize_fp8_rowwise(x.reshape(-1, 128))
    # identical maths to the dequantised reference on the same quantised operands
    assert _rel(y.reshape(-1, 96), naive_fp8_matmul(x_q, sx, w_q, s)) <= 1e-6
    # vs the unquantised fp32 GEMM. Deviation from the spec's 3e-2: with Gaussian operands E4M3 rounding of both
    # x and W gives ~3.8e-2 relative error (3 mantissa bits); we assert 5e-2 and record it in the docstring.
    assert _rel(y, x @ w.t()) <= 5e-2


def _agreement(model, ids, mode):
    ref = model.forward_tokens(ids)
    q = copy.deepcopy(model)
    report = quantize_model(q, mode, impl="naive")
    out = q.forward_tokens(ids)
    top2 = ref.topk(2, -1).values
    margin = top2[..., 0] - top2[..., 1]
    agree = out.argmax(-1) == ref.argmax(-1)
    return report, agree, margin


@pytest.mark.parametrize("mode,overall_min", [("int8", 0.95), ("fp8", 0.85)])
def test_tiny_model_top1_agreement(mode, overall_min):
    """Random-init tiny logits are nearly flat (median top-1 margin ~0.05), so agreement is asserted at >= 99%
    on positions whose fp32 top-1 margin is >= 0.05 (about half of them), plus a looser overall floor."""
    model = MinimalLVLM(LVLMConfig.tiny(), seed=0)
    ids = torch.randint(0, 250, (8, 32), generator=torch.Generator().manual_seed(0))
    report, agree, margin = _agreement(model, ids, mode)
    assert report.quantized and "lm_head" in report.skipped
    assert report.bytes_after < 0.3 * report.bytes_before
    decided = margin >= 0.05
    assert decided.float().mean() > 0.3
    assert agree[decided].float().mean() >= 0.99
    assert agree.float().mean() >= overall_min


def test_modules_and_bad_arguments():
    lin = torch.nn.Linear(16, 8)
    x = randn(2, 16, seed=6)
    assert _rel(Int8WeightOnlyLinear(lin, impl="naive")(x), lin(x)) <= 1e-2
    assert _rel(FP8Linear(lin, impl="naive")(x), lin(x)) <= 5e-2
    with pytest.raises(ValueError, match="mode"):
        quantize_model(torch.nn.Sequential(lin), "int4")
    with pytest.raises(ValueError, match="no nn.Linear"):
        quantize_model(torch.nn.Sequential(torch.nn.ReLU()))
    w_q, s = quantize_weight_int8(lin.weight)
    with pytest.raises(ValueError, match="last dim"):
        int8_weight_only_matmul(randn(2, 15, seed=0), w_q, s)
    with pytest.raises(ValueError, match="int8"):
        int8_weight_only_matmul(x, w_q.float(), s)
    with pytest.raises(ValueError, match=r"\[N, K\]"):
        quantize_weight_int8(torch.ones(3))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_fp8_activation_quantiser_bit_exact(dtype):
    """On CUDA the kernel casts to fp8 itself: codes and scales equal the PyTorch ops bit for bit."""
    rows = torch.logspace(-3, 3, 64, device="cuda")[:, None].to(dtype)
    x = randn(64, 4096, seed=5, device="cuda", dtype=dtype) * rows
    xq, sx = quantize_fp8_rowwise(x, impl="triton")
    xq_n, sx_n = quantize_fp8_rowwise(x, impl="naive")
    assert torch.equal(sx, sx_n) and torch.equal(xq.view(torch.uint8), xq_n.view(torch.uint8))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_int8_gemm_and_scaled_mm(dtype):
    x = randn(64, 4096, seed=0, device="cuda", dtype=dtype)
    w = randn(4096, 4096, seed=1, device="cuda")
    w_q, s = quantize_weight_int8(w)
    ref = x.float() @ w.t()
    assert _rel(int8_weight_only_matmul(x, w_q, s, impl="triton"), ref) <= 1e-2
    wf, sf = quantize_fp8_rowwise(w)
    y_torch = fp8_linear(x, wf, sf, impl="torch")
    y_naive = fp8_linear(x, wf, sf, impl="naive")
    assert _rel(y_torch, y_naive) <= 1e-2 and _rel(y_torch, ref) <= 5e-2
