"""Ahead-of-time compile of the ops' Triton kernels for an sm_90 GPU (no GPU needed).

The interpreter tests check numerics; this catches what only the GPU compiler rejects (types, layouts,
shared memory). Uses triton's own CUDA backend (ptxas ships with triton). Runs in a subprocess without
TRITON_INTERPRET: once that is set before triton is imported, triton's own library functions are
interpreter objects and nothing can be compiled in that process.
"""

import pytest

from tests.reference_impls._utils import compile_for_sm90_or_exit, require_triton_compiler, run_compile_script


def _compile_all():
    require_triton_compiler()
    from reference_impls.ops.cosine_match import triton_kernel as cosine_tk
    from reference_impls.ops.scored_attention import triton_kernel as attn_tk
    from reference_impls.ops.select import triton_kernel as select_tk

    def compile_sm90(dual_kernel, pointer_types, constexprs, float_args=()):
        compile_for_sm90_or_exit(dual_kernel.name, dual_kernel.fn, pointer_types, constexprs, float_args)

    bf = "*bf16"
    compile_sm90(
        attn_tk._attn_fwd_kernel,
        {"Q": bf, "K": bf, "V": bf, "O": bf, "LSE": "*fp32", "KV_LEN": "*i32"},
        {"CAUSAL": True, "BLOCK_D": 128, "EVEN_D": True, "DOT_PREC": "tf32", "BLOCK_M": 64, "BLOCK_N": 64},
        float_args=("qk_scale_log2",),
    )
    compile_sm90(
        attn_tk._colsum_kernel,
        {"Q": bf, "K": bf, "LSE": "*fp32", "COLSUM": "*fp32", "KV_LEN": "*i32", "SEL_IDX": "*i32", "SEL_CNT": "*i32"},
        {"CAUSAL": True, "BLOCK_D": 128, "DOT_PREC": "tf32", "BLOCK_M": 16, "BLOCK_N": 64},
        float_args=("qk_scale_log2",),
    )
    compile_sm90(
        attn_tk._combine_kernel,
        {"OP": "*fp32", "LSEP": "*fp32", "O": bf, "LSE": "*fp32"},
        {"BLOCK_S": 16, "BLOCK_D": 128},
    )
    compile_sm90(
        select_tk._gather_rows_kernel,
        {"SRC0": bf, "DST0": bf, "SRC1": "*i8", "DST1": "*i8", "IDX": "*i64"},
        {"BLOCK_K": 64, "BLOCK_D": 128},
    )
    compile_sm90(
        select_tk._compact_rows_inplace_kernel,
        {"X0": bf, "X1": "*i8", "IDX": "*i64", "FLAGS": "*i32"},
        {"BLOCK_K": 64, "BLOCK_D": 128, "BLOCK_F": 128},
    )
    compile_sm90(
        cosine_tk._cosine_max_argmax_kernel,
        {"A": bf, "B": bf, "B_MASK": "*i8", "OUT_MAX": "*fp32", "OUT_ARG": "*i64"},
        {"HAS_MASK": True, "DOT_PREC": "tf32", "BLOCK_A": 64, "BLOCK_B": 64, "BLOCK_C": 32},
        float_args=("eps",),
    )


@pytest.mark.slow
def test_kernels_compile_for_sm90_bf16():
    run_compile_script(__file__, expected_kernels=6)


if __name__ == "__main__":
    _compile_all()
