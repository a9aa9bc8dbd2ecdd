"""Ahead-of-time compile of the ops' Triton kernels for an sm_90 GPU (no GPU needed).

The interpreter tests check numerics; this catches what only the GPU compiler rejects (types, layouts,
shared memory). Uses triton's own CUDA backend (ptxas ships with triton); skipped when unavailable.
"""
import pytest

triton = pytest.importorskip("triton")
try:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler import compile as triton_compile
except Exception:  # pragma: no cover - other triton layouts
    pytest.skip("triton compiler API not available", allow_module_level=True)

from reference_impls.ops.cosine_match import triton_kernel as cosine_tk  # noqa: E402
from reference_impls.ops.scored_attention import triton_kernel as attn_tk  # noqa: E402
from reference_impls.ops.select import triton_kernel as select_tk  # noqa: E402

H100_SHARED_BYTES = 227 * 1024


def _compile_sm90(dual_kernel, pointer_types, constexprs, float_args=()):
    jit_fn = triton.jit(dual_kernel.fn)
    signature = {}
    for name in jit_fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in pointer_types:
            signature[name] = pointer_types[name]
        else:
            signature[name] = "fp32" if name in float_args else "i32"
    try:
        compiled = triton_compile(ASTSource(fn=jit_fn, signature=signature, constexprs=constexprs),
                                  target=GPUTarget("cuda", 90, 32))
    except (ImportError, FileNotFoundError, OSError) as exc:  # no CUDA backend / ptxas in this install
        pytest.skip(f"cannot compile for CUDA here: {exc}")
    assert compiled.metadata.shared <= H100_SHARED_BYTES
    return compiled


@pytest.mark.slow
def test_kernels_compile_for_sm90_bf16():
    bf = "*bf16"
    _compile_sm90(attn_tk._attn_fwd_kernel,
                  {"Q": bf, "K": bf, "V": bf, "O": bf, "LSE": "*fp32", "KV_LEN": "*i32"},
                  {"CAUSAL": True, "BLOCK_D": 128, "EVEN_D": True, "DOT_PREC": "tf32", "BLOCK_M": 64, "BLOCK_N": 64},
                  float_args=("qk_scale_log2",))
    _compile_sm90(attn_tk._colsum_kernel,
                  {"Q": bf, "K": bf, "LSE": "*fp32", "COLSUM": "*fp32", "KV_LEN": "*i32", "SEL_IDX": "*i32",
                   "SEL_CNT": "*i32"},
                  {"CAUSAL": True, "BLOCK_D": 128, "DOT_PREC": "tf32", "BLOCK_M": 16, "BLOCK_N": 64},
                  float_args=("qk_scale_log2",))
    _compile_sm90(select_tk._gather_rows_kernel, {"SRC": bf, "DST": bf, "IDX": "*i64"}, {"BLOCK_K": 64, "BLOCK_D": 128})
    _compile_sm90(select_tk._compact_rows_inplace_kernel, {"X": bf, "IDX": "*i64"}, {"BLOCK_K": 128, "BLOCK_D": 32})
    _compile_sm90(cosine_tk._cosine_max_argmax_kernel,
                  {"A": bf, "B": bf, "B_MASK": "*i8", "OUT_MAX": "*fp32", "OUT_ARG": "*i64"},
                  {"HAS_MASK": True, "DOT_PREC": "tf32", "BLOCK_A": 64, "BLOCK_B": 64, "BLOCK_C": 32},
                  float_args=("eps",))
