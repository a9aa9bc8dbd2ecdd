"""Argument validation and normalisation for :func:`scored_attention` (shared by all paths)."""

from __future__ import annotations

import math

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_scored_attention_args(
    q, k, v, *, scale, kv_lengths, score_q_mask, score_q_range, attn_mask, values: bool = True
):
    """Validate arguments; return ``(scale, kv_lengths [B,Hkv] int64 or None, score_q_mask [B,Lq] or None)``.

    ``score_q_range`` is turned into an equivalent ``score_q_mask``. The range of the ``kv_lengths`` values is
    checked only when ``values`` (reading them is a host synchronisation on CUDA).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"{name} must be a 4-D tensor [B, H, L, D], got {getattr(t, 'shape', type(t))}")
        if t.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{name} must be float16, bfloat16 or float32, got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError("q, k, v must be on the same device")
    B, Hq, Lq, D = q.shape
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    Bk, Hkv, Lk, Dk = k.shape
    if Bk != B or Dk != D:
        raise ValueError(f"k {tuple(k.shape)} does not match q {tuple(q.shape)} in batch or head dim")
    if Hkv == 0 or Hq % Hkv != 0:
        raise ValueError(f"number of query heads ({Hq}) must be a multiple of key/value heads ({Hkv})")
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")

    if kv_lengths is not None:
        if (
            not isinstance(kv_lengths, torch.Tensor)
            or kv_lengths.dtype.is_floating_point
            or kv_lengths.dtype == torch.bool
        ):
            raise ValueError("kv_lengths must be an integer tensor of shape [B] or [B, Hkv]")
        if kv_lengths.shape == (B,):
            kv_lengths = kv_lengths[:, None].expand(B, Hkv)
        elif kv_lengths.shape != (B, Hkv):
            raise ValueError(
                f"kv_lengths must have shape [B]=({B},) or [B, Hkv]=({B}, {Hkv}), got {tuple(kv_lengths.shape)}"
            )
        kv_lengths = kv_lengths.to(device=q.device, dtype=torch.int64)
        if values and kv_lengths.numel() and (int(kv_lengths.min()) < 0 or int(kv_lengths.max()) > Lk):
            raise ValueError(f"kv_lengths must lie in [0, Lk={Lk}]")

    if score_q_mask is not None and score_q_range is not None:
        raise ValueError("give at most one of score_q_mask and score_q_range")
    if score_q_range is not None:
        try:
            a, b = (int(x) for x in score_q_range)
        except Exception as exc:
            raise ValueError(f"score_q_range must be a pair (start, stop), got {score_q_range!r}") from exc
        if not 0 <= a <= b <= Lq:
            raise ValueError(f"score_q_range must satisfy 0 <= start <= stop <= Lq={Lq}, got {(a, b)}")
        score_q_mask = torch.zeros(B, Lq, dtype=torch.bool, device=q.device)
        score_q_mask[:, a:b] = True
    elif score_q_mask is not None:
        if not isinstance(score_q_mask, torch.Tensor) or score_q_mask.dtype != torch.bool:
            raise ValueError("score_q_mask must be a bool tensor [B, Lq]")
        if score_q_mask.shape != (B, Lq):
            raise ValueError(f"score_q_mask must have shape [B, Lq]=({B}, {Lq}), got {tuple(score_q_mask.shape)}")
        score_q_mask = score_q_mask.to(q.device)

    if attn_mask is not None:
        if not isinstance(attn_mask, torch.Tensor) or attn_mask.dtype != torch.bool:
            raise ValueError("attn_mask must be a bool tensor [B, 1 or Hq, Lq, Lk] (True = may attend)")
        if (
            attn_mask.dim() != 4
            or attn_mask.shape[0] != B
            or attn_mask.shape[1] not in (1, Hq)
            or attn_mask.shape[2:] != (Lq, Lk)
        ):
            raise ValueError(
                f"attn_mask must have shape [B, 1 or Hq, Lq, Lk]=({B}, 1|{Hq}, {Lq}, {Lk}), "
                f"got {tuple(attn_mask.shape)}"
            )
    return scale, kv_lengths, score_q_mask
