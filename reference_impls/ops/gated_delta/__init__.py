"""Gated delta rule ops (Gated DeltaNet, arXiv 2412.06464): naive recurrence (spec), naive chunked form,
Triton fused recurrent decode step. ``gated_delta_rule(..., mode="recurrent"|"chunk", impl=...)`` dispatches."""

from __future__ import annotations

from reference_impls.ops._triton import resolve_impl
from reference_impls.ops.gated_delta.naive import naive_chunk_gated_delta_rule, naive_recurrent_gated_delta_rule

__all__ = ["gated_delta_rule", "naive_recurrent_gated_delta_rule", "naive_chunk_gated_delta_rule"]


def gated_delta_rule(
    q, k, v, g, beta, *, scale=None, initial_state=None, output_final_state=True, mode: str = "auto", impl: str = "auto"
):
    """Dispatch. ``mode``: "recurrent" (token loop; the Triton kernel when allowed) or "chunk" (naive chunked,
    for prefill); "auto" = recurrent for T <= 16, else chunk. ``impl``: "naive" | "triton" | "auto"
    (see ``ops._triton.resolve_impl``)."""
    if mode not in ("auto", "recurrent", "chunk"):
        raise ValueError(f"mode must be 'auto', 'recurrent' or 'chunk', got {mode!r}")
    if mode == "auto":
        mode = "recurrent" if q.shape[1] <= 16 else "chunk"
    kw = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state)
    if mode == "chunk":
        return naive_chunk_gated_delta_rule(q, k, v, g, beta, **kw)
    if resolve_impl(impl, q.device) == "triton":
        from reference_impls.ops.gated_delta.triton_kernel import triton_fused_recurrent_gated_delta_rule

        return triton_fused_recurrent_gated_delta_rule(q, k, v, g, beta, **kw)
    return naive_recurrent_gated_delta_rule(q, k, v, g, beta, **kw)
