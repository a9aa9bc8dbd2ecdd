"""Fused recurrent gated-delta-rule kernel (decode step and short recurrent chunks), Gated DeltaNet arXiv 2412.06464.

One program per (batch*head, V-tile) keeps its ``S[:, v-tile]`` slice (K x BLOCK_V) in registers and, for each
time step, applies decay, delta update and output in one pass -- the state is read once and written once per
call. The decode step is the T = 1 case; longer T simply loops (used to test against the naive recurrence).
Plain pointer arithmetic (no block pointers) so it runs on triton 3.6 and 3.9; loads are upcast to fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from reference_impls.ops._triton import kernel, next_power_of_2


@kernel()
def _fused_recurrent_gdn_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    g_ptr,
    beta_ptr,
    s_in_ptr,
    s_out_ptr,
    o_ptr,
    T,
    H,
    K,
    V,
    scale,
    HAS_INITIAL: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    pid_bh = tl.program_id(0)
    pid_v = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_k = tl.arange(0, BLOCK_K)
    offs_v = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    mask_k = offs_k < K
    mask_v = offs_v < V
    mask_kv = mask_k[:, None] & mask_v[None, :]
    state_offs = (pid_bh * K + offs_k[:, None]) * V + offs_v[None, :]
    if HAS_INITIAL:
        S = tl.load(s_in_ptr + state_offs, mask=mask_kv, other=0.0).to(tl.float32)
    else:
        S = tl.zeros([BLOCK_K, BLOCK_V], dtype=tl.float32)
    for t in range(0, T):
        row = (b * T + t) * H + h
        q = tl.load(q_ptr + row * K + offs_k, mask=mask_k, other=0.0).to(tl.float32) * scale
        k = tl.load(k_ptr + row * K + offs_k, mask=mask_k, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + row * V + offs_v, mask=mask_v, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + row).to(tl.float32)
        beta = tl.load(beta_ptr + row).to(tl.float32)
        S = S * tl.exp(g)
        kv_mem = tl.sum(S * k[:, None], axis=0)
        u = beta * (v - kv_mem)
        S = S + k[:, None] * u[None, :]
        o = tl.sum(S * q[:, None], axis=0)
        tl.store(o_ptr + row * V + offs_v, o.to(o_ptr.dtype.element_ty), mask=mask_v)
    tl.store(s_out_ptr + state_offs, S, mask=mask_kv)


def triton_fused_recurrent_gated_delta_rule(
    q, k, v, g, beta, *, scale=None, initial_state=None, output_final_state=True, block_v: int | None = None
):
    """Same contract as ``naive_recurrent_gated_delta_rule``; state kept in fp32."""
    from reference_impls.ops.gated_delta.naive import _check

    _check(q, k, v, g, beta, initial_state)
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else float(scale)
    q, k, v, g, beta = (x.contiguous() for x in (q, k, v, g, beta))
    o = torch.empty_like(v)
    s_out = torch.empty(B, H, K, V, dtype=torch.float32, device=q.device)
    s_in = initial_state.float().contiguous() if initial_state is not None else s_out
    block_k = next_power_of_2(K)
    if block_v is None:
        block_v = min(next_power_of_2(V), max(16, 8192 // block_k))
    grid = (B * H, triton.cdiv(V, block_v))
    _fused_recurrent_gdn_kernel.launch(
        grid,
        q,
        k,
        v,
        g,
        beta,
        s_in,
        s_out,
        o,
        T,
        H,
        K,
        V,
        scale,
        device=q.device,
        meta=dict(HAS_INITIAL=initial_state is not None, BLOCK_K=block_k, BLOCK_V=block_v),
    )
    return o, (s_out if output_final_state else None)
