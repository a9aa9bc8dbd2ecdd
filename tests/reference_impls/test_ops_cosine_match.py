"""cosine_max_argmax: naive vs brute force, Triton (interpreter on CPU) vs naive."""

import pytest
import torch
import torch.nn.functional as F

from reference_impls.ops import cosine_max_argmax
from reference_impls.ops._triton import launch_counts, triton_available
from tests.reference_impls._utils import randint, randn

needs_triton = pytest.mark.skipif(not triton_available(), reason="triton not importable")


def _brute_force(a, b, b_mask=None):
    B, Na, _ = a.shape
    best = torch.full((B, Na), float("-inf"), dtype=torch.float64)
    arg = torch.full((B, Na), -1, dtype=torch.int64)
    for bi in range(B):
        for i in range(Na):
            for j in range(b.shape[1]):
                if b_mask is not None and not b_mask[bi, j]:
                    continue
                c = float(F.cosine_similarity(a[bi, i].double(), b[bi, j].double(), dim=0, eps=1e-8))
                if c > best[bi, i]:
                    best[bi, i], arg[bi, i] = c, j
    return best, arg


def test_naive_matches_brute_force():
    a, b = randn(2, 5, 7, seed=1), randn(2, 9, 7, seed=2)
    mask = randint(0, 2, (2, 9), seed=3).bool()
    for m in (None, mask):
        best, arg = cosine_max_argmax(a, b, b_mask=m, impl="naive")
        ref_best, ref_arg = _brute_force(a, b, m)
        assert torch.equal(arg, ref_arg)
        torch.testing.assert_close(best.double(), ref_best, rtol=1e-5, atol=1e-6)


def _assert_agree(a, b, mask, best, arg, atol):
    ref_best, ref_arg = cosine_max_argmax(a, b, b_mask=mask, impl="naive")
    torch.testing.assert_close(best, ref_best, rtol=0, atol=atol)
    differ = arg != ref_arg
    if differ.any():  # only allowed on near-ties: the chosen candidate must be (nearly) as good
        sim = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).transpose(1, 2)
        chosen = sim.gather(2, arg.clamp(min=0)[..., None])[..., 0]
        assert torch.all((ref_best - chosen)[differ].abs() <= atol)
    return differ.float().mean().item()


@needs_triton
@pytest.mark.parametrize(
    "B,Na,Nb,C,dtype,masked",
    [
        (1, 1, 1, 16, torch.float32, False),
        (3, 63, 64, 64, torch.float32, True),
        (2, 17, 577, 33, torch.float32, False),
        (1, 63, 40, 128, torch.float32, False),
        (2, 63, 63, 64, torch.float16, True),
        (1, 20, 30, 16, torch.bfloat16, False),  # CPU: upcast to fp32 (the interpreter's bf16 math is wrong)
    ],
)
def test_triton_matches_naive(B, Na, Nb, C, dtype, masked):
    a, b = randn(B, Na, C, seed=4, dtype=dtype), randn(B, Nb, C, seed=5, dtype=dtype)
    mask = randint(0, 4, (B, Nb), seed=6) > 0 if masked else None
    before = launch_counts["_cosine_max_argmax_kernel"]
    best, arg = cosine_max_argmax(a, b, b_mask=mask, impl="triton")
    assert launch_counts["_cosine_max_argmax_kernel"] == before + 1
    assert best.dtype == torch.float32 and arg.dtype == torch.int64 and best.shape == arg.shape == (B, Na)
    frac = _assert_agree(a, b, mask, best, arg, atol=1e-5 if dtype == torch.float32 else 2e-3)
    if dtype == torch.float32:
        assert frac == 0.0


@pytest.mark.parametrize("impl", ["naive", pytest.param("triton", marks=needs_triton)])
def test_ties_zero_vectors_and_empty_masks(impl):
    # integer-valued vectors: all dot products are exact, so duplicated candidates tie exactly
    a = randint(-3, 4, (2, 37, 20), seed=7).float()
    b = randint(-3, 4, (2, 70, 20), seed=8).float()
    best, arg = cosine_max_argmax(a, torch.cat([b, b], 1), impl=impl)
    assert int(arg.max()) < 70  # the first copy always wins
    assert torch.equal(arg, cosine_max_argmax(a, b, impl="naive")[1])
    # a zero query has cosine 0 with everything -> index 0; a zero candidate scores 0
    a[0, 0] = 0
    best, arg = cosine_max_argmax(a, b, impl=impl)
    assert best[0, 0] == 0 and arg[0, 0] == 0
    # all candidates masked out in batch 1
    mask = torch.ones(2, 70, dtype=torch.bool)
    mask[1] = False
    best, arg = cosine_max_argmax(a, b, b_mask=mask, impl=impl)
    assert torch.all(torch.isneginf(best[1])) and torch.all(arg[1] == -1) and torch.all(arg[0] >= 0)
    # identical sets: each a_i finds itself (unless an earlier duplicate exists)
    u = randn(1, 50, 16, seed=9)
    best, arg = cosine_max_argmax(u, u, impl=impl)
    assert torch.equal(arg[0], torch.arange(50))
    torch.testing.assert_close(best, torch.ones(1, 50), rtol=0, atol=1e-6)


def test_empty_inputs_and_bad_arguments():
    best, arg = cosine_max_argmax(randn(2, 3, 4), randn(2, 0, 4))
    assert torch.all(torch.isneginf(best)) and torch.all(arg == -1)
    assert cosine_max_argmax(randn(2, 0, 4), randn(2, 3, 4))[0].shape == (2, 0)
    a, b = randn(2, 3, 4), randn(2, 5, 4)
    for args, kwargs in [
        ((a[0], b), {}),
        ((a, b[:1]), {}),
        ((a, b[..., :3]), {}),
        ((a, b.half()), {}),
        ((a.long(), b.long()), {}),
        ((a, b), {"b_mask": torch.ones(2, 5)}),
        ((a, b), {"b_mask": torch.ones(2, 4, dtype=torch.bool)}),
        ((a, b), {"impl": "gpu"}),
    ]:
        with pytest.raises(ValueError):
            cosine_max_argmax(*args, **kwargs)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gpu_vs_naive_and_every_config(dtype):
    from reference_impls.ops.cosine_match import triton_kernel as tk

    a = torch.randn(4, 1025, 64, device="cuda", dtype=dtype)
    b = torch.randn(4, 1031, 64, device="cuda", dtype=dtype)
    mask = torch.rand(4, 1031, device="cuda") > 0.1
    atol = 1e-5 if dtype == torch.float32 else 2e-2
    best, arg = cosine_max_argmax(a, b, b_mask=mask, impl="auto")
    _assert_agree(a, b, mask, best, arg, atol)
    for cfg in tk._configs():
        meta = dict(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        best, arg = tk.triton_cosine_max_argmax(a, b, mask, meta=meta)
        _assert_agree(a, b, mask, best, arg, atol)
