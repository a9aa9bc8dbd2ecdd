"""Fused speculative verification kernel: one program per candidate path does the per-position test (greedy
argmax match or rejection ``u * p(x) < q(x)``), the cumulative accepted-prefix length, and the correction
(greedy argmax) or residual distribution ``norm(relu(q - p))`` -- no host synchronisation in between.
Same contract as ``naive.naive_verify_paths``. Plain pointer arithmetic; loads upcast to fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from reference_impls.ops._triton import kernel, next_power_of_2


@triton.jit
def _row_argmax(row_ptr, V, offs, BLOCK_V: tl.constexpr):
    """Index of the largest of ``V`` values at ``row_ptr`` (ties -> lowest index), scanned in ``BLOCK_V`` chunks."""
    best = float("-inf")
    best_idx = 0
    for v0 in range(0, V, BLOCK_V):
        x = tl.load(row_ptr + v0 + offs, mask=v0 + offs < V, other=float("-inf")).to(tl.float32)
        m = tl.max(x, axis=0)
        i = tl.argmax(x, axis=0) + v0
        upd = m > best
        best_idx = tl.where(upd, i, best_idx)
        best = tl.where(upd, m, best)
    return best_idx


@kernel()
def _spec_verify_kernel(
    tok_ptr,
    tgt_ptr,
    dp_ptr,
    u_ptr,
    force_ptr,
    len_ptr,
    next_ptr,
    res_ptr,
    D,
    V,
    GREEDY: tl.constexpr,
    HAS_FORCE: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = tl.arange(0, BLOCK_V)
    alive = 1
    length = 0
    for d in range(0, D):
        tok = tl.load(tok_ptr + pid * D + d)
        valid = tok >= 0
        tok_c = tl.where(valid, tok, 0)
        row = (pid * (D + 1) + d) * V
        if GREEDY:
            ok = _row_argmax(tgt_ptr + row, V, offs, BLOCK_V) == tok_c
        else:
            qx = tl.load(tgt_ptr + row + tok_c).to(tl.float32)
            px = tl.load(dp_ptr + (pid * D + d) * V + tok_c).to(tl.float32)
            u = tl.load(u_ptr + pid * D + d).to(tl.float32)
            ok = u * px < qx
        if HAS_FORCE:
            ok = ok | (tl.load(force_ptr + pid * D + d) != 0)
        ok = ok & valid
        alive = alive * ok.to(tl.int32)
        length += alive
    tl.store(len_ptr + pid, length.to(tl.int64))
    row = (pid * (D + 1) + length) * V
    if GREEDY:
        tl.store(next_ptr + pid, _row_argmax(tgt_ptr + row, V, offs, BLOCK_V).to(tl.int64))
    else:
        has_p = length < D
        prow = (pid * D + tl.where(has_p, length, 0)) * V
        p_limit = tl.where(has_p, V, 0)  # no draft row after a fully accepted path: p = 0
        total = 0.0
        for v0 in range(0, V, BLOCK_V):
            msk = v0 + offs < V
            q = tl.load(tgt_ptr + row + v0 + offs, mask=msk, other=0.0).to(tl.float32)
            p = tl.load(dp_ptr + prow + v0 + offs, mask=v0 + offs < p_limit, other=0.0).to(tl.float32)
            total += tl.sum(tl.maximum(q - p, 0.0), axis=0)
        use_res = total > 0
        denom = tl.where(use_res, total, 1.0)
        for v0 in range(0, V, BLOCK_V):
            msk = v0 + offs < V
            q = tl.load(tgt_ptr + row + v0 + offs, mask=msk, other=0.0).to(tl.float32)
            p = tl.load(dp_ptr + prow + v0 + offs, mask=v0 + offs < p_limit, other=0.0).to(tl.float32)
            r = tl.where(use_res, tl.maximum(q - p, 0.0) / denom, q)
            tl.store(res_ptr + pid * V + v0 + offs, r, mask=msk)


def triton_verify_paths(
    draft_tokens,
    target,
    draft_probs=None,
    uniforms=None,
    *,
    greedy: bool,
    force_accept=None,
    block_v: int | None = None,
):
    from reference_impls.ops.spec_verify.naive import check_verify_args

    check_verify_args(draft_tokens, target, draft_probs, uniforms, greedy, force_accept)
    P, D = draft_tokens.shape
    V = target.shape[-1]
    dev = target.device
    tok = draft_tokens.contiguous()
    tgt = target.contiguous()
    dp = draft_probs.contiguous() if not greedy else tgt
    u = uniforms.float().contiguous() if not greedy else tgt
    force = force_accept.to(torch.int8).contiguous() if force_accept is not None else tok
    accept_len = torch.empty(P, dtype=torch.int64, device=dev)
    next_tok = torch.empty(P, dtype=torch.int64, device=dev)
    residual = torch.empty(P, V, dtype=torch.float32, device=dev) if not greedy else accept_len
    block_v = block_v or min(next_power_of_2(V), 1024)
    _spec_verify_kernel.launch(
        (P,),
        tok,
        tgt,
        dp,
        u,
        force,
        accept_len,
        next_tok,
        residual,
        D,
        V,
        device=dev,
        meta=dict(GREEDY=greedy, HAS_FORCE=force_accept is not None, BLOCK_V=block_v),
    )
    return (accept_len, next_tok) if greedy else (accept_len, residual)
