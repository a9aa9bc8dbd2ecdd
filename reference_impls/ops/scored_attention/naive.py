"""Readable specification of scored attention (pure PyTorch, fp32 math, materialises Lq x Lk)."""

from __future__ import annotations

import torch


def allowed_keys(
    B: int, Hq: int, Lq: int, Lk: int, n_kv_heads: int, *, causal: bool, kv_lengths=None, attn_mask=None, device=None
) -> torch.Tensor:
    """Bool ``[B, Hq, Lq, Lk]``: may query ``i`` of head ``h`` attend to key ``j``?

    Key ``j`` is valid when ``j < kv_len[b, h // G]`` (``kv_len = Lk`` without ``kv_lengths``).
    Causal (bottom-right aligned, as with a KV cache): query ``i`` sits at key index ``kv_len - Lq + i``
    and sees keys ``j <= kv_len - Lq + i``. ``attn_mask`` (True = may attend) is AND-ed in.
    """
    G = Hq // n_kv_heads
    if kv_lengths is None:
        kv_len = torch.full((B, Hq), Lk, dtype=torch.int64, device=device)
    else:
        kv_len = kv_lengths.to(device=device, dtype=torch.int64).repeat_interleave(G, dim=1)  # [B, Hq]
    j = torch.arange(Lk, device=device)
    i = torch.arange(Lq, device=device)
    allowed = (j[None, None, None, :] < kv_len[:, :, None, None]).expand(B, Hq, Lq, Lk)
    if causal:
        query_pos = kv_len[:, :, None] - Lq + i[None, None, :]  # [B, Hq, Lq]
        allowed = allowed & (j[None, None, None, :] <= query_pos[..., None])
    if attn_mask is not None:
        allowed = allowed & attn_mask.to(device)
    return allowed


def naive_scored_attention(q, k, v, *, causal=True, scale, kv_lengths=None, score_q_mask=None, attn_mask=None):
    """Eager attention that also sums softmax probabilities of the selected query rows per key.

    Arguments are already validated (see ``_checks``). Rows with no visible key give ``o = 0`` and
    ``lse = -inf`` and add nothing to ``colsum``.
    """
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    G = Hq // Hkv
    qf, kf, vf = q.float(), k.float().repeat_interleave(G, dim=1), v.float().repeat_interleave(G, dim=1)
    s = torch.matmul(qf, kf.transpose(-1, -2)) * scale  # [B, Hq, Lq, Lk]
    allowed = allowed_keys(
        B, Hq, Lq, Lk, Hkv, causal=causal, kv_lengths=kv_lengths, attn_mask=attn_mask, device=q.device
    )
    s = s.masked_fill(~allowed, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)  # -inf for rows with no visible key
    p = torch.exp(s - lse.masked_fill(torch.isinf(lse), 0.0)[..., None])  # exp(-inf) = 0 on masked keys
    o = torch.matmul(p, vf).to(q.dtype)
    colsum = None
    if score_q_mask is not None:
        colsum = (p * score_q_mask[:, None, :, None].to(p.dtype)).sum(dim=2)
    return o, lse, colsum
