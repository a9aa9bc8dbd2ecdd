"""Ahead-of-time compile of the ops' Triton kernels for an sm_90 GPU (no GPU needed).

The interpreter tests check numerics; this catches what only the GPU compiler rejects (types, layouts,
shared memory). Uses triton's own CUDA backend (ptxas ships with triton). Runs in a subprocess without
TRITON_INTERPRET: once that is set before triton is imported, triton's own library functions are
interpreter objects and nothing can be compiled in that process.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

SKIP_EXIT = 77
H100_SHARED_BYTES = 227 * 1024


def _compile_all():
    try:
        import triton  # noqa: F401
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
        from triton.compiler import compile as triton_compile
        from triton.runtime.jit import JITFunction
    except Exception as exc:  # no triton / another compiler layout
        print(f"triton compiler API not available: {exc}")
        sys.exit(SKIP_EXIT)
    from reference_impls.ops.cosine_match import triton_kernel as cosine_tk
    from reference_impls.ops.scored_attention import triton_kernel as attn_tk
    from reference_impls.ops.select import triton_kernel as select_tk

    def compile_sm90(dual_kernel, pointer_types, constexprs, float_args=()):
        jit_fn = JITFunction(dual_kernel.fn)
        signature = {name: "constexpr" if name in constexprs else pointer_types.get(
            name, "fp32" if name in float_args else "i32") for name in jit_fn.arg_names}
        try:
            compiled = triton_compile(ASTSource(fn=jit_fn, signature=signature, constexprs=constexprs),
                                      target=GPUTarget("cuda", 90, 32))
        except (ImportError, FileNotFoundError) as exc:  # no CUDA backend / ptxas in this install
            print(f"cannot compile for CUDA here: {exc}")
            sys.exit(SKIP_EXIT)
        assert compiled.metadata.shared <= H100_SHARED_BYTES, (dual_kernel.name, compiled.metadata.shared)
        print(dual_kernel.name, "compiled, shared bytes", compiled.metadata.shared)

    bf = "*bf16"
    compile_sm90(attn_tk._attn_fwd_kernel, {"Q": bf, "K": bf, "V": bf, "O": bf, "LSE": "*fp32", "KV_LEN": "*i32"},
                 {"CAUSAL": True, "BLOCK_D": 128, "EVEN_D": True, "DOT_PREC": "tf32", "BLOCK_M": 64, "BLOCK_N": 64},
                 float_args=("qk_scale_log2",))
    compile_sm90(attn_tk._colsum_kernel,
                 {"Q": bf, "K": bf, "LSE": "*fp32", "COLSUM": "*fp32", "KV_LEN": "*i32", "SEL_IDX": "*i32",
                  "SEL_CNT": "*i32"},
                 {"CAUSAL": True, "BLOCK_D": 128, "DOT_PREC": "tf32", "BLOCK_M": 16, "BLOCK_N": 64},
                 float_args=("qk_scale_log2",))
    compile_sm90(select_tk._gather_rows_kernel, {"SRC": bf, "DST": bf, "IDX": "*i64"}, {"BLOCK_K": 64, "BLOCK_D": 128})
    compile_sm90(select_tk._compact_rows_inplace_kernel, {"X": bf, "IDX": "*i64"}, {"BLOCK_K": 128, "BLOCK_D": 32})
    compile_sm90(cosine_tk._cosine_max_argmax_kernel,
                 {"A": bf, "B": bf, "B_MASK": "*i8", "OUT_MAX": "*fp32", "OUT_ARG": "*i64"},
                 {"HAS_MASK": True, "DOT_PREC": "tf32", "BLOCK_A": 64, "BLOCK_B": 64, "BLOCK_C": 32},
                 float_args=("eps",))


@pytest.mark.slow
def test_kernels_compile_for_sm90_bf16():
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, str(Path(__file__).resolve())], env=env, cwd=root, capture_output=True,
                         text=True, timeout=600)
    if out.returncode == SKIP_EXIT:
        pytest.skip(out.stdout.strip())
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("compiled, shared bytes") == 5, out.stdout


if __name__ == "__main__":
    _compile_all()
