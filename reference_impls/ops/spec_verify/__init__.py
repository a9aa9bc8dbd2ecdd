"""Fused speculative verification: ``verify_paths(..., impl="auto"|"naive"|"triton")``."""

from __future__ import annotations

from reference_impls.ops._triton import resolve_impl
from reference_impls.ops.spec_verify.naive import naive_verify_paths

__all__ = ["verify_paths", "naive_verify_paths"]


def verify_paths(
    draft_tokens, target, draft_probs=None, uniforms=None, *, greedy: bool, force_accept=None, impl: str = "auto"
):
    """See ``naive.py`` for the contract. Returns ``(accept_len [P], next_token [P])`` when greedy, else
    ``(accept_len [P], residual [P, V])``."""
    if resolve_impl(impl, target.device) == "triton":
        from reference_impls.ops.spec_verify.triton_kernel import triton_verify_paths

        return triton_verify_paths(
            draft_tokens, target, draft_probs, uniforms, greedy=greedy, force_accept=force_accept
        )
    return naive_verify_paths(draft_tokens, target, draft_probs, uniforms, greedy=greedy, force_accept=force_accept)
