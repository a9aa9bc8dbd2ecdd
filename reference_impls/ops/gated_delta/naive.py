"""Gated delta rule (Gated DeltaNet, arXiv 2412.06464): fp32 reference recurrence and a naive chunked form.

Shapes: q, k ``[B, T, H, K]``, v ``[B, T, H, V]``, g (log decay, <= 0) and beta ``[B, T, H]``,
state ``S [B, H, K, V]``. One step, with the decay applied before the delta update:

    S   <- exp(g_t) * S
    u_t  = beta_t * (v_t - S^T k_t)
    S   <- S + k_t u_t^T
    o_t  = S^T (q_t * scale)            scale = K ** -0.5 unless given

q and k are expected to be L2-normalised by the caller (the layer does it), as in the paper.

The chunked form (paper Sec. 3 / the WY/UT representation of the fla kernels) is written here from the
recurrence: inside a chunk with cumulative log decay ``G_t = sum_{s<=t} g_s`` and entry state ``S0``,

    S_t = e^{G_t} S0 + sum_{s<=t} e^{G_t - G_s} k_s u_s^T
    (I + A) U = beta * (V - e^{G} K S0),  A[t,s] = beta_t e^{G_t-G_s} (k_t.k_s) for s < t
    O = e^{G} (Q S0) + (causal incl. diagonal  e^{G_t-G_s} (q_t.k_s)) U

solved with one unit-lower-triangular solve per chunk. Deviation from the paper's kernel: no WY
factorisation into (W, U) matrices and no Triton here -- this is the readable specification.
"""

from __future__ import annotations

import torch


def _check(q, k, v, g, beta, initial_state):
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(f"q and k must be [B, T, H, K] with equal shapes, got {tuple(q.shape)} and {tuple(k.shape)}")
    B, T, H, K = q.shape
    if v.dim() != 4 or v.shape[:3] != (B, T, H):
        raise ValueError(f"v must be [B, T, H, V] matching q's [B, T, H] = {(B, T, H)}, got {tuple(v.shape)}")
    for name, x in (("g", g), ("beta", beta)):
        if x.shape != (B, T, H):
            raise ValueError(f"{name} must be [B, T, H] = {(B, T, H)}, got {tuple(x.shape)}")
    if initial_state is not None and initial_state.shape != (B, H, K, v.shape[-1]):
        raise ValueError(
            f"initial_state must be [B, H, K, V] = {(B, H, K, v.shape[-1])}, got {tuple(initial_state.shape)}"
        )


def naive_recurrent_gated_delta_rule(q, k, v, g, beta, *, scale=None, initial_state=None, output_final_state=True):
    """Token-by-token recurrence in fp32. Returns ``(o [B,T,H,V] in v.dtype, final_state [B,H,K,V] fp32 | None)``."""
    _check(q, k, v, g, beta, initial_state)
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    q, k, v, g, beta = (x.float() for x in (q, k, v, g, beta))
    S = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.float().clone()
    o = q.new_empty(B, T, H, V)
    for t in range(T):
        S = S * g[:, t].exp()[..., None, None]
        kv_mem = torch.einsum("bhkv,bhk->bhv", S, k[:, t])
        u = beta[:, t, :, None] * (v[:, t] - kv_mem)
        S = S + k[:, t, :, :, None] * u[:, :, None, :]
        o[:, t] = torch.einsum("bhkv,bhk->bhv", S, q[:, t] * scale)
    return o.to(v.dtype), (S if output_final_state else None)


def naive_chunk_gated_delta_rule(
    q, k, v, g, beta, *, scale=None, initial_state=None, output_final_state=True, chunk_size: int = 64
):
    """Chunked (parallel-within-chunk) form in fp32; equals the recurrence up to rounding."""
    _check(q, k, v, g, beta, initial_state)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    # [B, H, T, *] layout, fp32
    q, k, v = (x.float().transpose(1, 2) for x in (q, k, v))
    g, beta = (x.float().transpose(1, 2) for x in (g, beta))
    S = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.float().clone()
    o = q.new_empty(B, H, T, V)
    for start in range(0, T, chunk_size):
        end = min(start + chunk_size, T)
        C = end - start
        qc, kc, vc = q[:, :, start:end] * scale, k[:, :, start:end], v[:, :, start:end]
        bc = beta[:, :, start:end]
        G = g[:, :, start:end].cumsum(-1)  # [B,H,C]
        diff = G[..., :, None] - G[..., None, :]  # G_t - G_s
        strict = torch.ones(C, C, dtype=torch.bool, device=q.device).tril(-1)
        causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
        decay_strict = torch.where(strict, diff, float("-inf")).exp()
        decay_causal = torch.where(causal, diff, float("-inf")).exp()
        A = bc[..., :, None] * decay_strict * (kc @ kc.transpose(-1, -2))  # strictly lower
        rhs = bc[..., None] * (vc - G.exp()[..., None] * (kc @ S))
        eye = torch.eye(C, dtype=q.dtype, device=q.device)
        U = torch.linalg.solve_triangular(eye + A, rhs, upper=False, unitriangular=True)
        o[:, :, start:end] = G.exp()[..., None] * (qc @ S) + (decay_causal * (qc @ kc.transpose(-1, -2))) @ U
        G_last = G[..., -1:]
        S = G_last.exp()[..., None] * S + (kc * (G_last - G).exp()[..., None]).transpose(-1, -2) @ U
    return o.transpose(1, 2).to(v.dtype), (S if output_final_state else None)
