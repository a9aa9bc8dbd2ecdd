"""impl dispatch (reference_impls/ops/_triton.py) and importing ops without triton."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from reference_impls.ops._triton import resolve_impl, triton_available


def test_resolve_impl(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert resolve_impl("auto", cpu) == "naive"
    assert resolve_impl("auto", cpu, optimized="torch") == "naive"
    assert resolve_impl("naive", torch.device("cuda")) == "naive"
    assert resolve_impl("torch", cpu, optimized="torch") == "torch"
    assert resolve_impl("triton", cpu, optimized="torch") == "torch"
    if triton_available():
        assert resolve_impl("triton", cpu) == "triton"
        assert resolve_impl("auto", torch.device("cuda")) == "triton"
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert resolve_impl("auto", cpu) == "triton"
    with pytest.raises(ValueError, match="impl"):
        resolve_impl("cuda", cpu)


def test_ops_import_and_run_without_triton():
    """With triton made unimportable, ops import, 'auto' runs the naive path and 'triton' fails clearly."""
    code = textwrap.dedent("""
        import sys
        sys.modules["triton"] = None  # "import triton" now raises ImportError; find_spec returns None
        import torch
        from reference_impls import ops
        q = torch.randn(1, 2, 3, 16)
        o, lse, c = ops.scored_attention(q, q, q, score_q_range=(0, 3))
        assert c.shape == (1, 2, 3)
        assert ops.cosine_max_argmax(q[0], q[0])[1].tolist() == [[0, 1, 2], [0, 1, 2]]
        try:
            ops.scored_attention(q, q, q, impl="triton")
        except RuntimeError as e:
            assert "triton" in str(e)
        else:
            raise AssertionError("impl='triton' without triton should fail")
        assert sys.modules["triton"] is None
        print("OK")
    """)
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.getcwd())
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OK"


@pytest.mark.skipif(not triton_available(), reason="triton not importable")
def test_auto_uses_triton_under_interpreter_env():
    """TRITON_INTERPRET=1 set before triton is imported: 'auto' on CPU runs the kernels."""
    code = textwrap.dedent("""
        import torch
        from reference_impls import ops
        from reference_impls.ops._triton import launch_counts
        q = torch.randn(2, 4, 5, 64)
        k = torch.randn(2, 2, 9, 64)
        o, lse, c = ops.scored_attention(q, k, k, score_q_range=(4, 5))
        n = ops.scored_attention(q, k, k, score_q_range=(4, 5), impl="naive")
        assert launch_counts["_attn_fwd_kernel"] == 1 and launch_counts["_colsum_kernel"] == 1
        torch.testing.assert_close(c, n[2], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(o, n[0], rtol=1e-4, atol=1e-5)
        print("OK")
    """)
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.getcwd())
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OK"
