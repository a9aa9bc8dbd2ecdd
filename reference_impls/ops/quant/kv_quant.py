"""KV-cache quantisation on append: INT8 (symmetric) and FP8-E4M3 with one scale per (token, head).

``x [B, H, T, D]`` -> ``(x_q [B, H, T, D] int8 | float8_e4m3fn, scale [B, H, T] fp32)`` with
``scale = amax_d |x| / qmax`` (qmax = 127 for int8, 448 for e4m3; an all-zero row gets scale 1) and
``x ~= x_q * scale``. INT8 rounds half away from zero, so ``|x - deq(x_q)| <= scale / 2`` elementwise; FP8 rounds to
nearest-even (relative error <= 2^-4 for normal values). ``quantize_kv(..., out=, out_scale=, start=)`` writes the
new tokens straight into a pre-allocated cache at per-row offsets (the append path); the Triton kernel fuses the
row amax, the scaling, the cast and the scatter into one pass; it reads no tensor value on the host (``validate``
as in ``reference_impls.ops._triton.check_values``: the capacity check runs on CPU tensors by default, and the kernel
drops writes outside the cache). Dequantisation happens inside the decode attention kernel
(``ops.decode_attention``), never as a separate dequantised copy.

Deviation: per-(token, head) dynamic scales only (no calibrated static per-head scales).
"""

from __future__ import annotations

import torch
import triton.language as tl

from reference_impls.ops._triton import check_values, kernel, next_power_of_2, resolve_impl

__all__ = ["KV_FORMATS", "quantize_kv", "naive_quantize_kv", "naive_dequantize_kv"]

#: format name -> (storage dtype, largest representable magnitude used for the scale)
KV_FORMATS = {"int8": (torch.int8, 127.0), "fp8_e4m3": (torch.float8_e4m3fn, 448.0)}


def _check(x, fmt):
    if fmt not in KV_FORMATS:
        raise ValueError(f"fmt must be one of {sorted(KV_FORMATS)}, got {fmt!r}")
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.dtype.is_floating_point:
        raise ValueError(f"x must be a floating-point tensor [B, H, T, D], got {getattr(x, 'shape', type(x))}")


def naive_quantize_kv(x: torch.Tensor, fmt: str = "int8"):
    """Reference quantiser (fp32 math). Returns ``(x_q, scale [B, H, T] fp32)``."""
    _check(x, fmt)
    dtype, qmax = KV_FORMATS[fmt]
    xf = x.to(torch.float32)
    amax = xf.abs().amax(dim=-1)
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    y = xf / scale[..., None]
    if fmt == "int8":
        y = torch.sign(y) * torch.floor(y.abs() + 0.5)
        return y.clamp(-127, 127).to(torch.int8), scale
    return y.clamp(-qmax, qmax).to(dtype), scale


def naive_dequantize_kv(x_q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x_q.float() * scale[..., None]``."""
    return x_q.to(torch.float32) * scale.to(torch.float32)[..., None]


@kernel()
def _quant_append_kernel(
    X,
    OUT,
    OSCALE,
    START,
    stride_xb,
    stride_xh,
    stride_xt,
    stride_ob,
    stride_oh,
    stride_ot,
    stride_sb,
    stride_sh,
    H,
    T,
    D,
    CAP,
    qmax,
    INT8: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_bh = tl.program_id(0)
    tb = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    start = tl.load(START + pid_bh)
    t = tb * BLOCK_T + tl.arange(0, BLOCK_T)
    d = tl.arange(0, BLOCK_D)
    mask = (t[:, None] < T) & (d[None, :] < D)
    x = tl.load(X + b * stride_xb + h * stride_xh + t[:, None] * stride_xt + d[None, :], mask=mask, other=0.0).to(
        tl.float32
    )
    amax = tl.max(tl.abs(x), axis=1)
    scale = tl.where(amax > 0, amax / qmax, 1.0)
    y = x / scale[:, None]
    slot = start + t
    inside = (slot >= 0) & (slot < CAP)  # an unchecked start never writes outside the cache
    mask = mask & inside[:, None]
    dst = OUT + b * stride_ob + h * stride_oh + slot[:, None] * stride_ot + d[None, :]
    if INT8:
        r = tl.floor(tl.abs(y) + 0.5)
        r = tl.where(y < 0, -r, r)
        r = tl.minimum(tl.maximum(r, -127.0), 127.0)
        tl.store(dst, r.to(tl.int8), mask=mask)
    else:
        y = tl.minimum(tl.maximum(y, -qmax), qmax)
        tl.store(dst, y.to(OUT.dtype.element_ty), mask=mask)
    tl.store(OSCALE + b * stride_sb + h * stride_sh + slot, scale, mask=(t < T) & inside)


def quantize_kv(
    x: torch.Tensor,
    fmt: str = "int8",
    *,
    out: torch.Tensor | None = None,
    out_scale: torch.Tensor | None = None,
    start: torch.Tensor | int | None = None,
    impl: str = "auto",
    validate: bool | None = None,
):
    """Quantise ``x [B, H, T, D]``; with ``out [B, H, Cap, D]`` / ``out_scale [B, H, Cap]`` write the T tokens of
    row (b, h) at slots ``start[b, h] .. start[b, h] + T - 1`` (``start``: int, [B] or [B, H]) and return
    ``(out, out_scale)``; otherwise return new ``(x_q, scale)``."""
    _check(x, fmt)
    B, H, T, D = x.shape
    dtype, qmax = KV_FORMATS[fmt]
    if out is None:
        out = torch.empty(B, H, T, D, dtype=dtype, device=x.device)
        out_scale = torch.empty(B, H, T, dtype=torch.float32, device=x.device)
        start = 0
    if out.dtype != dtype or out.shape[:2] != (B, H) or out.shape[3] != D or out.dim() != 4:
        raise ValueError(f"out must be {dtype} [B, H, Cap, D] matching x; got {out.dtype} {tuple(out.shape)}")
    if out_scale is None or out_scale.shape != out.shape[:3]:
        raise ValueError("out_scale must be [B, H, Cap] alongside out")
    if start is None or isinstance(start, int):  # torch.full, not a host-to-device copy (that would synchronise)
        start_t = torch.full((B, H), 0 if start is None else start, dtype=torch.long, device=x.device)
    else:
        start_t = start.to(device=x.device, dtype=torch.long)
        start_t = start_t.reshape(B, 1) if start_t.dim() == 1 else start_t
        start_t = start_t.expand(B, H).contiguous()
    if check_values(validate, start_t) and (bool((start_t < 0).any()) or bool((start_t + T > out.shape[2]).any())):
        raise ValueError(f"appending {T} tokens at {start_t.tolist()} overflows the cache capacity {out.shape[2]}")
    if T == 0:
        return out, out_scale
    if resolve_impl(impl, x.device) == "naive":
        xq, sc = naive_quantize_kv(x, fmt)
        slots = start_t[..., None] + torch.arange(T, device=x.device)  # [B, H, T]
        raw = torch.uint8 if fmt == "fp8_e4m3" else torch.int8  # CPU scatter has no fp8 kernel: move bytes
        out.view(raw).scatter_(2, slots[..., None].expand(B, H, T, D), xq.view(raw))
        out_scale.scatter_(2, slots, sc)
        return out, out_scale
    if x.stride(-1) != 1:
        x = x.contiguous()
    if out.stride(-1) != 1:
        raise ValueError("out must have a contiguous last dimension")
    BLOCK_T = 16
    _quant_append_kernel.launch(
        (B * H, -(-T // BLOCK_T)),
        x,
        out,
        out_scale,
        start_t.to(torch.int32),
        x.stride(0),
        x.stride(1),
        x.stride(2),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        out_scale.stride(0),
        out_scale.stride(1),
        H,
        T,
        D,
        out.shape[2],
        qmax,
        device=x.device,
        meta=dict(INT8=(fmt == "int8"), BLOCK_T=BLOCK_T, BLOCK_D=next_power_of_2(D)),
    )
    return out, out_scale
