"""Ahead-of-time compile of the paged decode kernel (``ops.paged_attention``) for an sm_90 GPU, bf16 and fp32 pools
(no GPU needed; see ``test_ops_compile.py`` for why this runs in a subprocess)."""

import pytest

from tests.reference_impls._utils import compile_for_sm90_or_exit, require_triton_compiler, run_compile_script


def _compile_all():
    require_triton_compiler()
    from reference_impls.ops.paged_attention import triton_kernel as paged_tk

    for dtype in ("*bf16", "*fp32"):
        compile_for_sm90_or_exit(
            f"{paged_tk._paged_decode_kernel.name} {dtype}",
            paged_tk._paged_decode_kernel.fn,
            {"Q": dtype, "KP": dtype, "VP": dtype, "BT": "*i32", "LENS": "*i32", "O": dtype, "LSE": "*fp32"},
            {"G_PAD": 16, "BLOCK_SIZE": 16, "BLOCK_D": 128},
            float_args=("scale_log2",),
        )


@pytest.mark.slow
def test_paged_kernel_compiles_for_sm90():
    run_compile_script(__file__, expected_kernels=2)


if __name__ == "__main__":
    _compile_all()
