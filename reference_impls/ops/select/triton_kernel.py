"""Triton gather / compaction of rows ``src[r0, r1, idx[r0, r1, t], :]`` (plain pointers, triton 3.6 / 3.9).

Both kernels move one or two tensors of the same row layout (K and V of a cache, possibly of different dtypes and
widths) in a single launch, and mask indices outside ``[0, L)`` so that unchecked bad input stays in bounds.

``triton_gather_rows``: out of place, grid (block of kept rows, r0 x r1, tensor); ``-1`` rows are zero.

``triton_compact_rows_inplace``: in place into the same tensors. Destination row ``t`` receives source row
``idx[t] >= t`` (kept indices are ascending), so a block of destinations only ever overwrites rows that *earlier*
blocks of the same row (r0, r1) may still have to read. One program per block of kept rows (all of D), ordered by
a ticket taken from a global counter in launch order (as in decoupled look-back scans: a program only waits for
programs that took a ticket before it, hence are already running, so the wait cannot deadlock). A program loads
its whole block of source rows into registers, publishes "read done" in a per-block flag, waits until every
earlier block of its row has published, and only then stores. The reads of all blocks therefore run in parallel
and the grid is as wide as the out-of-place gather (blocks x rows x tensors), instead of one program walking each
row in order. The flags and the ticket counter are a zeroed scratch buffer per call (a memset, capturable in a
CUDA graph).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from reference_impls.ops._triton import kernel, next_power_of_2


@triton.jit
def _gather_block(
    SRC,
    DST,
    IDX,
    r0,
    r1,
    pid_k,
    K,
    L,
    D,
    stride_s0,
    stride_s1,
    stride_sl,
    stride_sd,
    stride_d0,
    stride_d1,
    stride_dk,
    stride_dd,
    stride_i0,
    stride_i1,
    stride_ik,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    k_valid = offs_k < K
    idx = tl.load(IDX + r0 * stride_i0 + r1 * stride_i1 + offs_k * stride_ik, mask=k_valid, other=-1)
    keep = (idx >= 0) & (idx < L)
    src = SRC + r0 * stride_s0 + r1 * stride_s1 + idx[:, None] * stride_sl
    dst = DST + r0 * stride_d0 + r1 * stride_d1 + offs_k[:, None].to(tl.int64) * stride_dk
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        d_valid = offs_d < D
        rows = tl.load(src + offs_d[None, :] * stride_sd, mask=keep[:, None] & d_valid[None, :], other=0.0)
        tl.store(dst + offs_d[None, :] * stride_dd, rows, mask=k_valid[:, None] & d_valid[None, :])


@kernel()
def _gather_rows_kernel(
    SRC0,
    DST0,
    SRC1,
    DST1,
    IDX,
    R1,
    K,
    L,
    D0,
    D1,
    s0_0,
    s0_1,
    s0_l,
    s0_d,
    d0_0,
    d0_1,
    d0_k,
    d0_d,
    s1_0,
    s1_1,
    s1_l,
    s1_d,
    d1_0,
    d1_1,
    d1_k,
    d1_d,
    stride_i0,
    stride_i1,
    stride_ik,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_k = tl.program_id(0)
    pid_r = tl.program_id(1)
    r0 = (pid_r // R1).to(tl.int64)
    r1 = (pid_r % R1).to(tl.int64)
    if tl.program_id(2) == 0:
        _gather_block(
            SRC0,
            DST0,
            IDX,
            r0,
            r1,
            pid_k,
            K,
            L,
            D0,
            s0_0,
            s0_1,
            s0_l,
            s0_d,
            d0_0,
            d0_1,
            d0_k,
            d0_d,
            stride_i0,
            stride_i1,
            stride_ik,
            BLOCK_K,
            BLOCK_D,
        )
    else:
        _gather_block(
            SRC1,
            DST1,
            IDX,
            r0,
            r1,
            pid_k,
            K,
            L,
            D1,
            s1_0,
            s1_1,
            s1_l,
            s1_d,
            d1_0,
            d1_1,
            d1_k,
            d1_d,
            stride_i0,
            stride_i1,
            stride_ik,
            BLOCK_K,
            BLOCK_D,
        )


@triton.jit
def _compact_block(
    X,
    IDX,
    FLAGS,
    r0,
    r1,
    j,
    K,
    L,
    D,
    stride_x0,
    stride_x1,
    stride_xl,
    stride_xd,
    stride_i0,
    stride_i1,
    stride_ik,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_F: tl.constexpr,
):
    """Block ``j`` of row (r0, r1): read its sources, publish flag ``FLAGS[j]``, wait for flags 0..j-1, store."""
    offs_k = j * BLOCK_K + tl.arange(0, BLOCK_K)
    k_valid = offs_k < K
    idx = tl.load(IDX + r0 * stride_i0 + r1 * stride_i1 + offs_k * stride_ik, mask=k_valid, other=-1)
    keep = (idx >= 0) & (idx < L)
    offs_d = tl.arange(0, BLOCK_D)
    d_valid = offs_d < D
    base = X + r0 * stride_x0 + r1 * stride_x1 + offs_d[None, :] * stride_xd
    rows = tl.load(base + idx[:, None] * stride_xl, mask=keep[:, None] & d_valid[None, :], other=0.0)
    tl.debug_barrier()  # every thread's reads of this block are done ...
    tl.atomic_xchg(FLAGS + j, 1, sem="release")  # ... before the block says so
    offs_f = tl.arange(0, BLOCK_F)
    for f0 in range(0, j, BLOCK_F):  # wait until every earlier block of this row has read its sources
        earlier = f0 + offs_f < j
        done = tl.min(tl.where(earlier, tl.atomic_add(FLAGS + f0 + offs_f, 0, mask=earlier, sem="acquire"), 1), 0)
        while done == 0:
            done = tl.min(tl.where(earlier, tl.atomic_add(FLAGS + f0 + offs_f, 0, mask=earlier, sem="acquire"), 1), 0)
    tl.debug_barrier()
    tl.store(base + offs_k[:, None].to(tl.int64) * stride_xl, rows, mask=k_valid[:, None] & d_valid[None, :])


@kernel()
def _compact_rows_inplace_kernel(
    X0,
    X1,
    IDX,
    FLAGS,
    n_blocks,
    n_rows,
    R1,
    K,
    L,
    D0,
    D1,
    x0_0,
    x0_1,
    x0_l,
    x0_d,
    x1_0,
    x1_1,
    x1_l,
    x1_d,
    stride_i0,
    stride_i1,
    stride_ik,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_F: tl.constexpr,
):
    # FLAGS: [n_tensors * n_rows * n_blocks] per-block "sources read" flags, then the ticket counter
    n_tickets = tl.num_programs(0)
    ticket = tl.atomic_add(FLAGS + n_tickets, 1)  # launch order: blocks 0..j-1 of a row got earlier tickets
    j = ticket % n_blocks
    group = ticket // n_blocks  # tensor x row
    row = group % n_rows
    r0 = (row // R1).to(tl.int64)
    r1 = (row % R1).to(tl.int64)
    flags = FLAGS + group * n_blocks
    if group < n_rows:
        _compact_block(
            X0,
            IDX,
            flags,
            r0,
            r1,
            j,
            K,
            L,
            D0,
            x0_0,
            x0_1,
            x0_l,
            x0_d,
            stride_i0,
            stride_i1,
            stride_ik,
            BLOCK_K,
            BLOCK_D,
            BLOCK_F,
        )
    else:
        _compact_block(
            X1,
            IDX,
            flags,
            r0,
            r1,
            j,
            K,
            L,
            D1,
            x1_0,
            x1_1,
            x1_l,
            x1_d,
            stride_i0,
            stride_i1,
            stride_ik,
            BLOCK_K,
            BLOCK_D,
            BLOCK_F,
        )


def _block_sizes(D: int, K: int, device: torch.device) -> tuple[int, int]:
    """(BLOCK_K, BLOCK_D): all of D in one tile, at most 8192 elements per tile on CUDA (registers)."""
    block_d = max(16, next_power_of_2(D))
    cap = 8192 if device.type == "cuda" else 4096
    return max(16, min(64, next_power_of_2(K), cap // block_d)), block_d


def triton_gather_rows(srcs, idx: torch.Tensor):
    """``srcs``: one tensor ``[R0, R1, L, D]`` or a pair with the same ``R0, R1, L`` (own dtype and D each);
    ``idx [R0, R1, K]`` int64 in ``[-1, L)`` -> new ``[R0, R1, K, D]`` tensor(s), one launch for all."""
    single = isinstance(srcs, torch.Tensor)
    srcs = (srcs,) if single else tuple(srcs)
    R0, R1, L, _ = srcs[0].shape
    K = idx.shape[-1]
    dsts = tuple(torch.empty(R0, R1, K, s.shape[3], dtype=s.dtype, device=s.device) for s in srcs)
    if dsts[0].numel() == 0 and (len(dsts) == 1 or dsts[1].numel() == 0):
        return dsts[0] if single else dsts
    pair = srcs + srcs if len(srcs) == 1 else srcs
    outs = dsts + dsts if len(dsts) == 1 else dsts
    block_k, _ = _block_sizes(1, K, srcs[0].device)
    block_d = min(128 if srcs[0].is_cuda else 256, max(16, next_power_of_2(max(s.shape[3] for s in srcs))))
    grid = (triton.cdiv(K, block_k), R0 * R1, len(srcs))
    _gather_rows_kernel.launch(
        grid,
        pair[0],
        outs[0],
        pair[1],
        outs[1],
        idx,
        R1,
        K,
        L,
        pair[0].shape[3],
        pair[1].shape[3],
        *pair[0].stride(),
        *outs[0].stride(),
        *pair[1].stride(),
        *outs[1].stride(),
        *idx.stride(),
        device=srcs[0].device,
        meta={"BLOCK_K": block_k, "BLOCK_D": block_d},
    )
    return dsts[0] if single else dsts


def triton_compact_rows_inplace(xs, idx: torch.Tensor):
    """In place, for each tensor ``x [R0, R1, L, D]`` of ``xs`` (one tensor or a pair sharing ``R0, R1, L``):
    ``x[r0, r1, t] = x[r0, r1, idx[r0, r1, t]]`` for ``t < K`` (zero where ``idx == -1``), one launch.

    ``idx`` must be ascending per row with ``-1`` only as trailing padding (checked by the caller when asked).
    """
    single = isinstance(xs, torch.Tensor)
    xs = (xs,) if single else tuple(xs)
    R0, R1, L, _ = xs[0].shape
    K = idx.shape[-1]
    if K == 0 or all(x.numel() == 0 for x in xs):
        return xs[0] if single else xs
    pair = xs + xs if len(xs) == 1 else xs
    block_k, block_d = _block_sizes(max(x.shape[3] for x in xs), K, xs[0].device)
    n_blocks = triton.cdiv(K, block_k)
    n_tickets = len(xs) * R0 * R1 * n_blocks
    flags = torch.zeros(n_tickets + 1, dtype=torch.int32, device=xs[0].device)
    _compact_rows_inplace_kernel.launch(
        (n_tickets,),
        pair[0],
        pair[1],
        idx,
        flags,
        n_blocks,
        R0 * R1,
        R1,
        K,
        L,
        pair[0].shape[3],
        pair[1].shape[3],
        *pair[0].stride(),
        *pair[1].stride(),
        *idx.stride(),
        device=xs[0].device,
        meta={"BLOCK_K": block_k, "BLOCK_D": block_d, "BLOCK_F": 128},
    )
    return xs[0] if single else xs
