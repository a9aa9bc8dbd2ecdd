"""Rotary position embedding, RoPE (Su et al., RoFormer, arXiv 2104.09864): the taxonomy's position-encoding
technique, and the scheme every decoder of this repository (and Llama / Qwen / LLaVA) uses.

Why this paper: RoPE is the position encoding of nearly every open LVLM decoder, and the variants in the catalogue
(M-RoPE, position-preserving schemes for compressed tokens, cache re-positioning) all rotate query/key pairs the way
it defines.

The method: split a d-dimensional query or key at position m into d/2 pairs; rotate pair i by the angle
m * theta_i with theta_i = base^(-2i/d) (paper: 10000^(-2(i-1)/d), i = 1..d/2). Then the attention score
<R_m q, R_n k> depends on m - n only (the relative-position property, paper eq. 16).

* ``naive_rope``: the specification, literally the paper's block-diagonal rotation matrix R_m (eq. 15) applied to
  each vector, pairs being adjacent dimensions (2i, 2i+1).
* ``rope(x, positions, layout="interleaved")``: the paper's efficient elementwise form (eq. 34),
  ``x * cos(m theta) + rotate_pairs(x) * sin(m theta)``.
* ``rope(x, positions, layout="half")``: the same rotation with pair i = dimensions (i, i + d/2) (GPT-NeoX / Hugging
  Face "rotate_half" layout). This is what ``models.minimal_lvlm.apply_rope`` and
  ``ops.decode_attention.rope_rotate`` compute; it equals the interleaved form on permuted dimensions
  (``interleaved_to_half``), and since the same permutation applies to queries and keys, attention scores are
  identical. Checkpoints trained in one layout need their projection rows permuted to use the other.

Deviations: none in the rotation itself. ``base`` is a parameter (the paper fixes 10000; Qwen2.5 uses 1e6). Angles
are computed in fp32 whatever the input dtype (as Hugging Face does).

Identity: position 0 rotates by angle 0, so ``rope(x, 0) == x`` exactly.
"""

from __future__ import annotations

import torch

__all__ = ["rope_inv_freq", "naive_rope", "rope", "interleaved_to_half"]


LAYOUTS = ("interleaved", "half")


def rope_inv_freq(dim: int, base: float = 10000.0, device=None) -> torch.Tensor:
    """theta_i = base^(-2i/dim), i = 0 .. dim/2 - 1 (fp32) -- the paper's theta_{i+1}."""
    if dim <= 0 or dim % 2:
        raise ValueError(f"RoPE needs an even, positive dimension, got {dim}")
    return base ** (-torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim)


def _check(x, positions):
    if x.dim() < 2 or x.shape[-1] % 2:
        raise ValueError(f"x must be [..., L, D] with even D, got {tuple(x.shape)}")
    positions = torch.as_tensor(positions, device=x.device)
    try:
        torch.broadcast_shapes(positions.shape, x.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"positions {tuple(positions.shape)} do not broadcast to x.shape[:-1] = {tuple(x.shape[:-1])}"
        ) from None
    return positions


def naive_rope(x: torch.Tensor, positions, base: float = 10000.0) -> torch.Tensor:
    """The paper's definition: ``R_m x`` with R_m block-diagonal, block i = [[cos m t_i, -sin m t_i],
    [sin m t_i, cos m t_i]] acting on dimensions (2i, 2i+1). x [..., L, D], positions broadcastable to
    x.shape[:-1]. Returns fp32."""
    positions = _check(x, positions)
    d = x.shape[-1]
    theta = rope_inv_freq(d, base, x.device).double()
    pos = positions.expand(x.shape[:-1]).reshape(-1).double()
    rows = x.reshape(-1, d).double()
    out = torch.empty_like(rows)
    for n in range(rows.shape[0]):
        R = torch.zeros(d, d, dtype=torch.float64, device=x.device)
        for i in range(d // 2):
            a = pos[n] * theta[i]
            R[2 * i, 2 * i], R[2 * i, 2 * i + 1] = torch.cos(a), -torch.sin(a)
            R[2 * i + 1, 2 * i], R[2 * i + 1, 2 * i + 1] = torch.sin(a), torch.cos(a)
        out[n] = R @ rows[n]
    return out.reshape(x.shape).float()


def rope(x: torch.Tensor, positions, base: float = 10000.0, layout: str = "interleaved") -> torch.Tensor:
    """Vectorised RoPE (paper eq. 34) in fp32: x [..., L, D], positions broadcastable to x.shape[:-1]."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    positions = _check(x, positions)
    angle = positions.to(torch.float32)[..., None] * rope_inv_freq(x.shape[-1], base, x.device)  # [..., L, D/2]
    cos, sin = angle.cos(), angle.sin()
    xf = x.to(torch.float32)
    if layout == "interleaved":
        even, odd = xf[..., 0::2], xf[..., 1::2]
        return torch.stack([even * cos - odd * sin, odd * cos + even * sin], dim=-1).flatten(-2)
    half = x.shape[-1] // 2
    first, second = xf[..., :half], xf[..., half:]
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)


def interleaved_to_half(x: torch.Tensor) -> torch.Tensor:
    """Reorder the last dimension from pairs (2i, 2i+1) to pairs (i, i + D/2):
    ``rope(x, p, layout="interleaved")`` maps to ``rope(interleaved_to_half(x), p, layout="half")``."""
    return torch.cat([x[..., 0::2], x[..., 1::2]], dim=-1)
