"""PEVLM: parallel encoding with a shared sink block for long-video prefill (arXiv 2506.19651).

Layout of the prefill sequence: ``[sink | block_1 | ... | block_m | query]``. The sink holds the leading text
(system prompt, BOS) and the first ``sink_frames`` video frames; the remaining frames are grouped into context
blocks of ``frames_per_block`` frames; the query block is the trailing text (question). Attention:

* sink tokens attend causally among themselves;
* a context-block token attends to the whole sink and causally inside its own block (never to other blocks);
* query tokens (and every later generated token) attend to everything before them.

Positions stay **sequential** (the index in the full sequence), which is how the paper aligns the blocks'
attention-weight distribution with full attention (instead of re-using the same positions for every block, as
earlier parallel-encoding methods do: ``position_mode="reused"`` reproduces that baseline for comparison).
Attention cost of the video part drops from O((T*N)^2) to O(T*N * (sink + block)). The KV cache after prefill
holds every token, so decoding is unchanged.

Paths: ``naive_pevlm_attention`` (dense boolean mask, fp32; the spec), ``pevlm_attention(impl="torch")``
(block-sparse: all context blocks batched as one SDPA call over ``[sink keys + own block keys]``, the sink and
query rows as two more calls; O(T*N) memory) and ``impl="triton"`` (context rows in one Triton kernel).
``pevlm_prefill`` runs the minimal LVLM with the PEVLM mask.

What could be read of the paper: the abstract (v1-v3), the introduction and a third-party summary (the sink =
initial text + first frames). Deviations / additions:
* ``sink_logit_bias`` (default 0 = off) is NOT from the paper: an optional additive bias on the sink logits of
  context-block queries (a ``log(m)`` correction for the m blocks sharing the sinks), kept for experiments and
  flagged here.
* Optimised paths: block-batched SDPA (``impl="torch"``) and a Triton kernel for the context rows
  (``impl="triton"``, ``pevlm_triton.py``; sink/query rows stay on SDPA). No FlexAttention ``BlockMask``.
* The block partition is by whole frames; the paper's exact sink size / block size choices are parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

SINK, QUERY = 0, -1


@dataclass(frozen=True)
class PEVLMLayout:
    """Segment boundaries of one prefill sequence (batch rows share the layout)."""

    sink_len: int
    block_starts: tuple
    block_lens: tuple
    query_len: int

    @property
    def n_blocks(self) -> int:
        return len(self.block_lens)

    @property
    def total_len(self) -> int:
        return self.sink_len + sum(self.block_lens) + self.query_len

    @property
    def query_start(self) -> int:
        return self.sink_len + sum(self.block_lens)

    def segment_ids(self, device=None) -> torch.Tensor:
        """``[L]`` int64: 0 = sink, b = context block b (1-based), -1 = query."""
        seg = torch.full((self.total_len,), QUERY, dtype=torch.long, device=device)
        seg[: self.sink_len] = SINK
        for b, (s, n) in enumerate(zip(self.block_starts, self.block_lens)):
            seg[s : s + n] = b + 1
        return seg

    @classmethod
    def from_frames(
        cls,
        prefix_len: int,
        n_frames: int,
        tokens_per_frame: int,
        suffix_len: int,
        *,
        sink_frames: int = 1,
        frames_per_block: int = 4,
    ) -> "PEVLMLayout":
        if min(prefix_len, suffix_len, sink_frames) < 0 or n_frames < 1 or tokens_per_frame < 1:
            raise ValueError("need prefix_len, suffix_len, sink_frames >= 0 and n_frames, tokens_per_frame >= 1")
        if frames_per_block < 1:
            raise ValueError(f"frames_per_block must be >= 1, got {frames_per_block}")
        if sink_frames > n_frames:
            raise ValueError(f"sink_frames ({sink_frames}) > n_frames ({n_frames})")
        sink_len = prefix_len + sink_frames * tokens_per_frame
        starts, lens = [], []
        f = sink_frames
        while f < n_frames:
            nf = min(frames_per_block, n_frames - f)
            starts.append(prefix_len + f * tokens_per_frame)
            lens.append(nf * tokens_per_frame)
            f += nf
        return cls(sink_len, tuple(starts), tuple(lens), suffix_len)


def pevlm_mask(layout: PEVLMLayout, device=None) -> torch.Tensor:
    """Dense boolean mask ``[L, L]`` (True = may attend), built from segment ids."""
    seg = layout.segment_ids(device)
    L = seg.numel()
    causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()
    same = seg[:, None] == seg[None, :]
    allowed = (seg[None, :] == SINK) | (seg[:, None] == QUERY) | same
    return causal & allowed


def naive_pevlm_mask(layout: PEVLMLayout) -> torch.Tensor:
    """Loop reference of ``pevlm_mask`` (used by tests)."""
    seg = layout.segment_ids().tolist()
    L = len(seg)
    m = torch.zeros(L, L, dtype=torch.bool)
    for i in range(L):
        for j in range(i + 1):
            m[i, j] = seg[j] == SINK or seg[i] == QUERY or seg[i] == seg[j]
    return m


def pevlm_positions(layout: PEVLMLayout, mode: str = "sequential", device=None) -> torch.Tensor:
    """``[L]`` position ids. "sequential" (PEVLM): 0..L-1. "reused" (earlier parallel encoding, for comparison):
    every context block restarts right after the sink; the query continues after the longest block."""
    if mode == "sequential":
        return torch.arange(layout.total_len, device=device)
    if mode != "reused":
        raise ValueError(f"position mode must be 'sequential' or 'reused', got {mode!r}")
    pos = torch.arange(layout.total_len, device=device)
    for s, n in zip(layout.block_starts, layout.block_lens):
        pos[s : s + n] = layout.sink_len + torch.arange(n, device=device)
    q0 = layout.query_start
    pos[q0:] = layout.sink_len + max(layout.block_lens, default=0) + torch.arange(layout.query_len, device=device)
    return pos


def _check_qkv(q, k, v, layout):
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape:
        raise ValueError(
            f"q [B,Hq,L,D], k/v [B,Hkv,L,D] expected, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[2] != layout.total_len or k.shape[2] != layout.total_len:
        raise ValueError(f"sequence length {q.shape[2]} / {k.shape[2]} != layout length {layout.total_len}")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"Hq={q.shape[1]} must be a multiple of Hkv={k.shape[1]}")


def naive_pevlm_attention(q, k, v, layout: PEVLMLayout, *, scale: Optional[float] = None, sink_logit_bias: float = 0.0):
    """Dense-mask attention in fp32: the readable spec. ``q [B,Hq,L,D]``, ``k, v [B,Hkv,L,D]``."""
    _check_qkv(q, k, v, layout)
    G = q.shape[1] // k.shape[1]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    kk, vv = k.float().repeat_interleave(G, 1), v.float().repeat_interleave(G, 1)
    s = (q.float() @ kk.transpose(-1, -2)) * scale
    if sink_logit_bias:
        seg = layout.segment_ids(q.device)
        bias = ((seg[:, None] > 0) & (seg[None, :] == SINK)).float() * sink_logit_bias
        s = s + bias
    s = s.masked_fill(~pevlm_mask(layout, q.device), float("-inf"))
    return (s.softmax(-1) @ vv).to(q.dtype)


def _sdpa(q, k, v, mask, scale, G, causal=False):
    """4-D SDPA ``[N, H, L, D]`` with GQA handled by SDPA itself (``enable_gqa``), so fused backends can run."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=G > 1, is_causal=causal)


def blocksparse_pevlm_attention(
    q, k, v, layout: PEVLMLayout, *, scale: Optional[float] = None, sink_logit_bias: float = 0.0
):
    """Block-sparse path: never forms the L x L mask; context blocks batched in one SDPA call."""
    _check_qkv(q, k, v, layout)
    B, Hq, L, D = q.shape
    G = Hq // k.shape[1]
    scale = D**-0.5 if scale is None else scale
    dev = q.device
    out = torch.empty_like(q)
    S = layout.sink_len
    if S:
        out[:, :, :S] = _sdpa(q[:, :, :S], k[:, :, :S], v[:, :, :S], None, scale, G, causal=True)
    if layout.n_blocks:
        m, Lb = layout.n_blocks, max(layout.block_lens)
        starts = torch.tensor(layout.block_starts, device=dev)
        lens = torch.tensor(layout.block_lens, device=dev)
        ar = torch.arange(Lb, device=dev)
        valid = ar[None, :] < lens[:, None]  # [m, Lb]
        idx = (starts[:, None] + torch.minimum(ar[None, :], lens[:, None] - 1)).flatten()
        Hkv = k.shape[1]
        # (batch, block) folded into SDPA's batch dimension: [B*m, H, Lb, D]
        qb = q[:, :, idx].view(B, Hq, m, Lb, D).transpose(1, 2).reshape(B * m, Hq, Lb, D)
        kb = k[:, :, idx].view(B, Hkv, m, Lb, D).transpose(1, 2)
        vb = v[:, :, idx].view(B, Hkv, m, Lb, D).transpose(1, 2)
        ks = k[:, None, :, :S].expand(B, m, Hkv, S, D)
        vs = v[:, None, :, :S].expand(B, m, Hkv, S, D)
        kc = torch.cat([ks, kb], 3).reshape(B * m, Hkv, S + Lb, D)
        vc = torch.cat([vs, vb], 3).reshape(B * m, Hkv, S + Lb, D)
        in_block = (ar[None, :, None] >= ar[None, None, :]) & valid[:, None, :]  # [m, Lb, Lb]
        mask = torch.cat([torch.ones(m, Lb, S, dtype=torch.bool, device=dev), in_block], 2)
        if sink_logit_bias:
            bias = torch.zeros(m, Lb, S + Lb, device=dev, dtype=q.dtype)
            bias[..., :S] = sink_logit_bias
            mask = bias.masked_fill(~mask, float("-inf"))
        mask = mask[None, :, None].expand(B, m, 1, Lb, S + Lb).reshape(B * m, 1, Lb, S + Lb)
        ob = _sdpa(qb, kc, vc, mask, scale, G).view(B, m, Hq, Lb, D).transpose(1, 2).reshape(B, Hq, m * Lb, D)
        keep = valid.flatten()
        out[:, :, idx[keep]] = ob[:, :, keep]
    Q0 = layout.query_start
    if layout.query_len:
        qmask = torch.arange(L, device=dev)[None, :] <= (Q0 + torch.arange(layout.query_len, device=dev))[:, None]
        out[:, :, Q0:] = _sdpa(q[:, :, Q0:], k, v, qmask, scale, G)
    return out


def triton_pevlm_attention(q, k, v, layout: PEVLMLayout, *, scale: Optional[float] = None):
    """Context-block rows with the Triton kernel (``pevlm_triton.py``); sink and query rows with SDPA."""
    from reference_impls.prefill.pevlm_triton import triton_pevlm_context_rows

    _check_qkv(q, k, v, layout)
    B, Hq, L, D = q.shape
    G = Hq // k.shape[1]
    scale = D**-0.5 if scale is None else scale
    out = torch.empty_like(q).contiguous()
    S, Q0 = layout.sink_len, layout.query_start
    if S:
        out[:, :, :S] = _sdpa(q[:, :, :S], k[:, :, :S], v[:, :, :S], None, scale, G, causal=True)
    row_lo = torch.zeros(L, dtype=torch.int32, device=q.device)
    for s0, n in zip(layout.block_starts, layout.block_lens):
        row_lo[s0 : s0 + n] = s0
    triton_pevlm_context_rows(q, k, v, out, row_lo, S, Q0, scale)
    if layout.query_len:
        qmask = (
            torch.arange(L, device=q.device)[None, :] <= (Q0 + torch.arange(layout.query_len, device=q.device))[:, None]
        )
        out[:, :, Q0:] = _sdpa(q[:, :, Q0:], k, v, qmask, scale, G)
    return out


def pevlm_attention(q, k, v, layout: PEVLMLayout, *, scale=None, sink_logit_bias: float = 0.0, impl: str = "auto"):
    """``impl``: "naive" (dense mask), "torch" (block-sparse SDPA), "triton" (Triton kernel for the context rows;
    no ``sink_logit_bias``), "auto" (Triton on CUDA without a sink bias, else "torch")."""
    if impl not in ("auto", "naive", "torch", "triton"):
        raise ValueError(f"impl must be 'auto', 'naive', 'torch' or 'triton', got {impl!r}")
    if impl == "auto":
        impl = "triton" if q.is_cuda and not sink_logit_bias else "torch"
    if impl == "triton":
        if sink_logit_bias:
            raise ValueError("the Triton path does not implement sink_logit_bias; use impl='torch'")
        return triton_pevlm_attention(q, k, v, layout, scale=scale)
    fn = naive_pevlm_attention if impl == "naive" else blocksparse_pevlm_attention
    return fn(q, k, v, layout, scale=scale, sink_logit_bias=sink_logit_bias)


@torch.no_grad()
def pevlm_prefill(
    model,
    input_ids: torch.Tensor,
    layout: PEVLMLayout,
    *,
    image_features=None,
    position_mode: str = "sequential",
    cache=None,
    capacity: Optional[int] = None,
):
    """Prefill the minimal LVLM with the PEVLM mask (dense path through the decoder's chunk mask).
    Returns ``(last-token logits [B, V], cache)``; the cache holds all L tokens, so decoding is unchanged."""
    B, L = input_ids.shape
    if L != layout.total_len:
        raise ValueError(f"input length {L} != layout length {layout.total_len}")
    emb, vis = model.embed(input_ids, image_features)
    pos = pevlm_positions(layout, position_mode, input_ids.device)[None].expand(B, L)
    cache = cache if cache is not None else model.new_cache(B, capacity or max(L + 64, model.cfg.max_seq_len))
    mask = pevlm_mask(layout, input_ids.device)[None].expand(B, L, L)
    state, cache = model.run_decoder(emb, positions=pos, cache=cache, vis_mask=vis, chunk_mask=mask)
    if position_mode == "sequential":
        cache.next_position = torch.full((B,), L, dtype=torch.long, device=input_ids.device)
    return model.logits(state.hidden[:, -1]), cache
