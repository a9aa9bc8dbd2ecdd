"""One accounting for every technique: layer-averaged token count and theoretical FLOPs.

* Layer-averaged token count (SparseVLM issue #12, "equivalent token count"):
  ``sum_l tokens_l / n_layers`` -- e.g. FastV: ``(K*N + (L-K)*N')/L``.
* Prefill FLOPs of the decoder, layer by layer with that layer's token count ``n`` and cached prefix ``p``
  (FLOPs = 2 x multiply-accumulates; GQA-aware):
  projections ``2*n*C*(2*C + 2*C_kv)`` (q, o, and k, v with ``C_kv = Hkv*D``), SwiGLU MLP ``2*3*n*C*I``,
  attention ``2*2*C*ctx`` with ``ctx = n*p + n*(n+1)/2`` keys visited under a causal mask
  (``causal=False``: ``n*(p+n)``, the convention of the FastV/SparseVLM papers, which also count MACs:
  FastV's ``4nd^2 + 2n^2d + 2ndm`` is ``causal=False`` MACs with a 2-matrix MLP), plus the LM head for the
  rows whose logits are computed. Norms, RoPE and softmax are ignored (O(n*C)).
* Decode-step FLOPs: the same per layer with ``n = 1`` and the layer's cache length as context.

``timing_report`` puts these beside measured wall-clock times (used by benchmarks/).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import torch

Number = Union[int, float]


def _as_float_tensor(tokens_per_layer) -> torch.Tensor:
    t = torch.as_tensor(tokens_per_layer, dtype=torch.float64)
    if t.dim() not in (1, 2) or t.shape[0] == 0:
        raise ValueError("tokens_per_layer must be [n_layers] or [n_layers, B] with n_layers >= 1")
    if bool((t < 0).any()):
        raise ValueError("token counts must be non-negative")
    return t


def layer_averaged_tokens(tokens_per_layer) -> Union[float, torch.Tensor]:
    """``sum over layers / n_layers``; ``[n_layers]`` -> float, ``[n_layers, B]`` -> ``[B]``."""
    t = _as_float_tensor(tokens_per_layer)
    avg = t.sum(0) / t.shape[0]
    return float(avg) if avg.dim() == 0 else avg


def fastv_tokens_per_layer(n_layers: int, n_text: int, n_visual: int, K: int, R: float) -> list:
    """Tokens seen by each layer under FastV (visual keep count rounded half up, as ``prefill.fastv``)."""
    import math

    if not 1 <= K < n_layers or not 0 <= R < 1:
        raise ValueError("need 1 <= K < n_layers and 0 <= R < 1")
    kept = int(math.floor(n_visual * (1 - R) + 0.5))
    return [n_text + (n_visual if l < K else kept) for l in range(n_layers)]


def pyramiddrop_tokens_per_layer(
    n_layers: int, n_text: int, n_visual: int, layer_list: Sequence[int], ratio_list: Sequence[float]
) -> list:
    """Tokens per layer under PyramidDrop (``int(N * ratio)`` visual tokens from each boundary on)."""
    out, vis = [], n_visual
    for l in range(n_layers):
        if l in layer_list:
            vis = int(n_visual * ratio_list[list(layer_list).index(l)] + 1e-9)
        out.append(n_text + vis)
    return out


def _dims(cfg):
    C = cfg.hidden
    return C, cfg.n_kv_heads * cfg.head_dim, cfg.intermediate, cfg.vocab_size


def layer_flops(cfg, n: Number, prefix: Number = 0, causal: bool = True) -> float:
    """FLOPs of one decoder layer processing ``n`` new tokens after ``prefix`` cached ones."""
    C, Ckv, I, _ = _dims(cfg)
    ctx = n * prefix + (n * (n + 1) / 2 if causal else n * n)
    proj = 2 * n * C * (2 * C + 2 * Ckv)
    mlp = 2 * 3 * n * C * I
    attn = 2 * 2 * C * ctx
    return float(proj + mlp + attn)


def prefill_flops(
    cfg, tokens_per_layer, *, causal: bool = True, logits_rows: int = 1, breakdown: bool = False
) -> Union[float, Dict[str, float]]:
    """Decoder prefill FLOPs of one sequence given its token count per layer (``[n_layers]``)."""
    t = _as_float_tensor(tokens_per_layer)
    if t.dim() != 1 or t.shape[0] != cfg.n_layers:
        raise ValueError(f"tokens_per_layer must be [n_layers]={cfg.n_layers} for one sequence")
    C, Ckv, I, V = _dims(cfg)
    attn = sum(2 * 2 * C * (n * (n + 1) / 2 if causal else n * n) for n in t.tolist())
    proj = sum(2 * n * C * (2 * C + 2 * Ckv) for n in t.tolist())
    mlp = sum(2 * 3 * n * C * I for n in t.tolist())
    head = 2 * logits_rows * C * V
    total = attn + proj + mlp + head
    if breakdown:
        return {"attention": attn, "projections": proj, "mlp": mlp, "lm_head": head, "total": total}
    return float(total)


def scoring_flops(cfg, n_rows: Number, n_keys: Number) -> float:
    """Extra FLOPs of computing attention scores for ``n_rows`` query rows over ``n_keys`` keys
    (``ops.scored_attention`` on the requested rows: QK^T and PV, all query heads)."""
    return float(2 * 2 * cfg.hidden * n_rows * n_keys)


def decode_step_flops(cfg, context_per_layer, *, causal: bool = True) -> float:
    """FLOPs of one decode step (one token) given each layer's cache length before the step."""
    t = _as_float_tensor(context_per_layer)
    if t.dim() != 1 or t.shape[0] != cfg.n_layers:
        raise ValueError(f"context_per_layer must be [n_layers]={cfg.n_layers}")
    C, _, _, V = _dims(cfg)
    return float(sum(layer_flops(cfg, 1, p, causal) for p in t.tolist()) + 2 * C * V)


def vision_flops(cfg) -> float:
    """FLOPs of the vision tower for one image (patch embed + the blocks run) and the projector."""
    vc = cfg.vision
    n, W = vc.n_encoder_tokens, vc.width
    per_block = 2 * n * W * 4 * W + 2 * 2 * n * n * W + 2 * n * W * vc.mlp_dim * (3 if vc.mlp_act == "swiglu" else 2)
    embed = 2 * vc.n_patches * 3 * vc.patch_size**2 * W
    if cfg.projector == "patch_merger":
        m = cfg.merge_size**2
        proj = 2 * cfg.n_visual_tokens * (m * W * m * W + m * W * cfg.hidden)
    else:
        proj = 2 * cfg.n_visual_tokens * (W * cfg.hidden + cfg.hidden * cfg.hidden)
    return float(embed + vc.n_layers_run * per_block + proj)


def timing_report(
    cfg,
    *,
    name: str,
    tokens_per_layer,
    wall_ms: Optional[float] = None,
    baseline_tokens_per_layer=None,
    baseline_ms: Optional[float] = None,
    causal: bool = True,
    **extra,
) -> dict:
    """A result row: layer-averaged tokens, prefill FLOPs, FLOP-predicted and measured speedups."""
    row = {
        "name": name,
        "layer_avg_tokens": layer_averaged_tokens(tokens_per_layer),
        "prefill_tflops": prefill_flops(cfg, tokens_per_layer, causal=causal) / 1e12,
    }
    if wall_ms is not None:
        row["wall_ms"] = wall_ms
    if baseline_tokens_per_layer is not None:
        base = prefill_flops(cfg, baseline_tokens_per_layer, causal=causal)
        row["predicted_speedup"] = base / prefill_flops(cfg, tokens_per_layer, causal=causal)
        if wall_ms is not None and baseline_ms is not None:
            row["measured_speedup"] = baseline_ms / wall_ms
            row["fraction_of_predicted"] = row["measured_speedup"] / row["predicted_speedup"]
    row.update(extra)
    return row
