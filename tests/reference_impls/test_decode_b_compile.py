"""Ahead-of-time sm_90 compile of the decode-side Triton kernels (GDN step, spec verify, int8 GEMM, fp8 activation
quantisation, PEVLM rows).

The interpreter tests check numerics; this catches what only the GPU compiler rejects. Runs in a subprocess
without TRITON_INTERPRET (same approach as test_ops_compile.py)."""

import pytest

from tests.reference_impls._utils import compile_for_sm90_or_exit as run
from tests.reference_impls._utils import require_triton_compiler, run_compile_script


def _compile_all():
    require_triton_compiler()
    from reference_impls.ops.gated_delta import triton_kernel as gdn
    from reference_impls.ops.quant import weight_gemm as wg
    from reference_impls.ops.spec_verify import triton_kernel as sv
    from reference_impls.prefill import pevlm_triton as pe

    bf, f32 = "*bf16", "*fp32"
    run(
        "gdn",
        gdn._fused_recurrent_gdn_kernel.fn,
        {
            "q_ptr": bf,
            "k_ptr": bf,
            "v_ptr": bf,
            "g_ptr": f32,
            "beta_ptr": f32,
            "s_in_ptr": f32,
            "s_out_ptr": f32,
            "o_ptr": bf,
        },
        {"HAS_INITIAL": True, "BLOCK_K": 128, "BLOCK_V": 64},
        float_args=("scale",),
    )
    for greedy in (True, False):
        run(
            f"spec_verify_greedy={greedy}",
            sv._spec_verify_kernel.fn,
            {
                "tok_ptr": "*i64",
                "tgt_ptr": f32,
                "dp_ptr": f32,
                "u_ptr": f32,
                "force_ptr": "*i8",
                "len_ptr": "*i64",
                "next_ptr": "*i64",
                "res_ptr": f32,
            },
            {"GREEDY": greedy, "HAS_FORCE": True, "BLOCK_V": 1024},
        )
    for dot_fp32 in (False, True):
        run(
            f"int8_gemm_fp32dot={dot_fp32}",
            wg._int8_gemm_kernel.fn,
            {"x_ptr": bf, "w_ptr": "*i8", "s_ptr": f32, "b_ptr": bf, "y_ptr": bf},
            {"HAS_BIAS": True, "DOT_FP32": dot_fp32, "BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64},
        )
    largest = wg.int8_gemm_configs()[-1]  # the autotune config with the largest tile (shared memory, registers)
    run(
        f"int8_gemm autotune {largest.kwargs}",
        wg._int8_gemm_kernel.fn,
        {"x_ptr": bf, "w_ptr": "*i8", "s_ptr": f32, "b_ptr": bf, "y_ptr": bf},
        {"HAS_BIAS": True, "DOT_FP32": False, **largest.kwargs},
        options={"num_warps": largest.num_warps, "num_stages": largest.num_stages},
    )
    run(
        "fp8_quantize_rows",
        wg._quantize_rows_fp8_kernel.fn,
        {"X": bf, "XQ": "*fp8e4nv", "SCALE": f32},
        {"BLOCK_C": 4096},
        float_args=("fp8_max", "tiny"),
    )
    for cfg in (pe.pevlm_configs()[0], pe.pevlm_configs()[-1]):
        run(
            f"pevlm_context {cfg.kwargs}",
            pe._pevlm_context_kernel.fn,
            {"q_ptr": bf, "k_ptr": bf, "v_ptr": bf, "o_ptr": bf, "row_lo_ptr": "*i32"},
            {"DOT_FP32": False, "BLOCK_D": 128, **cfg.kwargs},
            float_args=("scale",),
            options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages},
        )


@pytest.mark.slow
def test_decode_b_kernels_compile_for_sm90_bf16():
    run_compile_script(__file__, expected_kernels=9)


if __name__ == "__main__":
    _compile_all()
