"""Argument validation for the select/gather/compaction ops (shared by all paths)."""

from __future__ import annotations

import numbers

import torch


def _is_int_tensor(t) -> bool:
    return (
        isinstance(t, torch.Tensor)
        and not t.dtype.is_floating_point
        and t.dtype != torch.bool
        and not t.dtype.is_complex
    )


def check_select_topk_args(scores, k, lengths, protect_mask, *, values: bool = True):
    """Validate; return ``(scores, k [lead] int64, lengths [lead] int64, protect [*, L] bool, k_max)`` with
    ``lead`` the leading dims of ``scores`` (``[B]`` or ``[B, H]``) and ``k_max`` the output width: ``k`` itself
    for an int ``k``, else the largest entry of the tensor (read on the host). The checks that read ``lengths``,
    ``k`` or ``protect_mask`` values run only when ``values``."""
    if not isinstance(scores, torch.Tensor) or scores.dim() not in (2, 3):
        raise ValueError(f"scores must be [B, L] or [B, H, L], got {getattr(scores, 'shape', type(scores))}")
    if not scores.dtype.is_floating_point:
        raise ValueError(f"scores must be floating point, got {scores.dtype}")
    lead, L = scores.shape[:-1], scores.shape[-1]
    dev = scores.device

    def broadcast_lead(t, name):
        t = t.to(device=dev)
        if t.shape == lead:
            return t
        if scores.dim() == 3 and t.shape == lead[:1]:
            return t[:, None].expand(lead)
        allowed = "[B]" if scores.dim() == 2 else "[B] or [B, H]"
        raise ValueError(f"{name} must have shape {allowed} = {tuple(lead)}, got {tuple(t.shape)}")

    if isinstance(k, bool):
        raise ValueError("k must be an int or an integer tensor")
    if _is_int_tensor(k) and k.dim() == 0:
        k = int(k)
    if isinstance(k, numbers.Integral):
        if k < 0:
            raise ValueError("k must be non-negative")
        k_t = torch.full(lead, int(k), dtype=torch.int64, device=dev)
        k_max = int(k)
    elif _is_int_tensor(k):
        k_t = broadcast_lead(k, "k").to(torch.int64)
        k_max = int(k_t.max()) if k_t.numel() else 0
    else:
        raise ValueError(f"k must be an int or an integer tensor, got {type(k)}")

    if lengths is None:
        len_t = torch.full(lead, L, dtype=torch.int64, device=dev)
    elif _is_int_tensor(lengths):
        len_t = broadcast_lead(lengths, "lengths").to(torch.int64)
    else:
        raise ValueError("lengths must be an integer tensor [B] (or [B, H] for 3-D scores)")
    if values and len_t.numel() and (int(len_t.min()) < 0 or int(len_t.max()) > L):
        raise ValueError(f"lengths must lie in [0, L={L}]")
    if k_t.numel() and k_max > L:
        raise ValueError(f"k larger than the number of available positions (k={k_max} > L={L})")
    if values and k_t.numel() and int(k_t.min()) < 0:
        raise ValueError("k must be non-negative")
    if values and k_t.numel() and bool((k_t > len_t).any()):
        bad = int((k_t - len_t).argmax())
        raise ValueError(
            f"k larger than the number of available positions (row {bad}: "
            f"k={int(k_t.flatten()[bad])} > length={int(len_t.flatten()[bad])})"
        )

    valid = torch.arange(L, device=dev) < len_t[..., None]
    if protect_mask is None:
        protect = torch.zeros_like(valid)
    else:
        if not isinstance(protect_mask, torch.Tensor) or protect_mask.dtype != torch.bool:
            raise ValueError("protect_mask must be a bool tensor shaped like scores (or [B, L] for 3-D scores)")
        protect_mask = protect_mask.to(dev)
        if protect_mask.shape == scores.shape:
            protect = protect_mask
        elif scores.dim() == 3 and protect_mask.shape == (scores.shape[0], L):
            protect = protect_mask[:, None, :].expand(scores.shape)
        else:
            raise ValueError(
                f"protect_mask must have shape {tuple(scores.shape)}"
                f"{' or [B, L]' if scores.dim() == 3 else ''}, got {tuple(protect_mask.shape)}"
            )
        if values and bool((protect & ~valid).any()):
            raise ValueError("protect_mask marks positions beyond lengths")
        if values and bool((protect.sum(-1) > k_t).any()):
            raise ValueError(
                "protect_mask marks more positions than k in some row (protected positions are counted inside k)"
            )
    return scores, k_t, len_t, protect, k_max


def check_index(idx, lead_shape, L, name="idx", *, values: bool = True):
    """``idx`` must be an int64 tensor of shape ``lead_shape + (K,)`` with entries in ``[-1, L)`` (the entries are
    checked only when ``values``: reading them is a host synchronisation on CUDA)."""
    if not isinstance(idx, torch.Tensor) or idx.dtype != torch.int64:
        raise ValueError(f"{name} must be an int64 tensor, got {getattr(idx, 'dtype', type(idx))}")
    if idx.dim() != len(lead_shape) + 1 or tuple(idx.shape[:-1]) != tuple(lead_shape):
        raise ValueError(f"{name} must have shape {tuple(lead_shape)} + (K,), got {tuple(idx.shape)}")
    if values and idx.numel() and (int(idx.min()) < -1 or int(idx.max()) >= L):
        raise ValueError(f"{name} entries must lie in [-1, {L}) (-1 = padding)")
