"""Shared Attention: reuse one layer's attention weights in the following layers (Liao & Vargas, "Beyond KV Caching:
Shared Attention for Efficient LLMs", arXiv 2407.12866).

Why this paper: it is the catalogue's attention-reuse method with public code that applies to a pretrained model
directly, and the most direct form of the technique (reuse the attention map itself, not the keys).

The method (checked against the official code, github.com/metacarbon/shareAtt): in a span of consecutive layers
``share_layers`` the attention weights are not computed; each of them takes the softmax attention weights of the
closest lower layer that computes its own, and multiplies them with its *own* values:
``out_l = softmax(q_s k_s^T / sqrt(d)) v_l``. Shared layers therefore need no query/key projection and no key cache
(they still cache values). The official code selects the span by hand (e.g. layers 23-26 of Llama-2-7B, reusing
layer 22's weights), which is what ``share_layers`` takes.

Functions and classes
- ``naive_shared_attention_forward``: the specification, the whole decoder in eager attention (explicit softmax
  weights in every layer), weights reused in the shared layers.
- ``SharedAttention``: the same on a ``MinimalLVLM`` with its own modules: non-shared layers run exactly as the
  model does (SDPA); only the layer feeding a shared span additionally computes its weights; shared layers skip
  the query/key projections and store no keys. ``forward`` (a chunk over a static cache), ``generate`` (greedy).
  ``kv_bytes`` counts the keys the shared layers do not store.

Deviations: the official code fine-tunes after sharing for the best accuracy; this reference applies sharing to the
model as it is (the paper's direct application). Ragged batches, GQA (weights of each query head applied to its
KV head's values) and the decode phase are supported.

Identity: an empty ``share_layers`` runs the unmodified model (logits bit for bit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from reference_impls.models.minimal_lvlm import chunk_attention_mask, sdpa_attend

__all__ = ["naive_shared_attention_forward", "SharedAttention"]


def _check(share_layers, n_layers):
    share = sorted(set(share_layers))
    if share and (share[0] < 1 or share[-1] >= n_layers):
        raise ValueError(
            f"share_layers must lie in [1, {n_layers - 1}] (layer 0 has no weights to reuse), got {list(share_layers)}"
        )
    return set(share)


def _eager_weights(q: Tensor, k: Tensor, kv_lengths: Tensor) -> Tensor:
    """Softmax weights ``[B, Hq, T, Lk]`` (fp32) of the chunk queries under the model's chunk mask."""
    Hq, T, D = q.shape[1:]
    Hkv, Lk = k.shape[1], k.shape[2]
    scores = q.float() @ k.float().repeat_interleave(Hq // Hkv, 1).transpose(-1, -2) * D**-0.5
    mask = chunk_attention_mask(kv_lengths, T, Lk)  # [B, h, T, Lk]
    mask = mask.repeat_interleave(Hq // mask.shape[1], 1) if mask.shape[1] > 1 else mask
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), -1).nan_to_num(0.0)


def _apply(weights: Tensor, v: Tensor) -> Tensor:
    Hq, Hkv = weights.shape[1], v.shape[1]
    return (weights @ v.float().repeat_interleave(Hq // Hkv, 1)).to(v.dtype)


def _layer(model, l, x, positions, n_new, cache, share, reuse, need_weights, eager):
    """One decoder layer; returns (x, weights for the next shared layer or None)."""
    layer = model.layers[l]
    B, T = x.shape[:2]
    h = layer.input_norm(x)
    weights = None
    if l in share:
        v = layer.attn._heads(layer.attn.v_proj(h), model.cfg.n_kv_heads)
        kv = cache.update(l, torch.zeros_like(v), v, positions, n_new)  # no keys are stored
        o = _apply(reuse, kv.v)
        weights = reuse
    else:
        q, k, v = layer.attn.project_qkv(h, positions)
        empty = cache.max_length_bound(l) == 0
        kv = cache.update(l, k, v, positions, n_new)
        if eager or need_weights:
            weights = _eager_weights(q, kv.k, kv.kv_lengths)
        o = _apply(weights, kv.v) if eager else sdpa_attend(q, kv, empty)
    x = x + layer.attn.o_proj(o.transpose(1, 2).reshape(B, T, -1))
    return x + layer.mlp(layer.post_norm(x)), weights


def _run(model, ids, cache, lengths, share, eager):
    B, T = ids.shape
    valid = (
        torch.ones(B, T, dtype=torch.bool, device=ids.device)
        if lengths is None
        else torch.arange(T, device=ids.device)[None, :] < lengths[:, None]
    )
    n_new = valid.sum(1)
    positions = torch.where(valid, cache.next_position[:, None] + torch.arange(T, device=ids.device), -1)
    x = model.embed_tokens(ids)
    reuse = None
    for l in range(model.cfg.n_layers):
        x, weights = _layer(model, l, x, positions, n_new, cache, share, reuse, (l + 1) in share, eager)
        reuse = weights if weights is not None else reuse
    cache.next_position = cache.next_position + n_new
    return model.logits(x)


@torch.no_grad()
def naive_shared_attention_forward(
    model, ids: Tensor, share_layers: Sequence[int], cache=None, lengths: Optional[Tensor] = None
) -> Tensor:
    """Logits ``[B, T, V]`` of a chunk with every layer's attention computed eagerly (the specification)."""
    share = _check(share_layers, model.cfg.n_layers)
    cache = model.new_cache(ids.shape[0], ids.shape[1]) if cache is None else cache
    return _run(model, ids, cache, lengths, share, eager=True)


@dataclass
class SharedAttention:
    """``SharedAttention(share_layers=(2, 3)).generate(model, ids, 16)``: layers 2 and 3 reuse layer 1's weights."""

    share_layers: tuple = ()

    @torch.no_grad()
    def forward(self, model, ids: Tensor, cache=None, lengths: Optional[Tensor] = None) -> Tensor:
        share = _check(self.share_layers, model.cfg.n_layers)
        cache = model.new_cache(ids.shape[0], ids.shape[1]) if cache is None else cache
        return _run(model, ids, cache, lengths, share, eager=False)

    @torch.no_grad()
    def generate(self, model, ids: Tensor, max_new_tokens: int, lengths: Optional[Tensor] = None) -> Tensor:
        cache = model.new_cache(ids.shape[0], ids.shape[1] + max_new_tokens)
        logits = self.forward(model, ids, cache, lengths)
        last = (lengths - 1) if lengths is not None else torch.full((ids.shape[0],), ids.shape[1] - 1)
        tok = logits[torch.arange(ids.shape[0]), last].argmax(-1)
        out = [tok]
        for _ in range(max_new_tokens - 1):
            tok = self.forward(model, tok[:, None], cache)[:, 0].argmax(-1)
            out.append(tok)
        return torch.stack(out, 1)

    def kv_bytes(self, model, n_tokens: int) -> int:
        """KV bytes for ``n_tokens`` tokens of one sequence: values in every layer, keys outside the shared span."""
        cfg = model.cfg
        per_layer = n_tokens * cfg.n_kv_heads * cfg.head_dim * model.dtype.itemsize
        return per_layer * (2 * cfg.n_layers - len(set(self.share_layers)))
