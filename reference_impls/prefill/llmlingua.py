"""LLMLingua's iterative token-level prompt compression with a small language model (Jiang et al., "LLMLingua:
Compressing Prompts for Accelerated Inference of Large Language Models", arXiv 2310.05736).

Why this paper: LLMLingua is the most used prompt-compression method (its library also ships LongLLMLingua and
LLMLingua-2, both in the catalogue); its core -- drop the tokens a small LM finds predictable -- needs no training.

The method (iterative token-level compression, checked against the official code, github.com/microsoft/LLMLingua):
split the prompt into segments of ``segment_size`` tokens (official ``iterative_size``, default 200). For each
segment, a small LM scores every token by its surprisal ``-log p(x_i | context)`` where the context is the
*compressed* prompt so far followed by the segment's earlier tokens; the threshold is the ``floor(rate * n)``-th
largest loss among the ``n`` losses of the tokens kept so far plus the segment's, and the segment keeps its tokens
whose loss reaches it. ``rate`` is the fraction of tokens to keep (LLMLingua's ``rate``).

Functions and classes
- ``naive_llmlingua_keep(logits_fn, ids, ...)``: the specification; every segment is scored by one uncached forward
  of ``logits_fn`` over the compressed prefix plus the segment.
- ``llmlingua_keep(lm, ids, ...)``: KV-cache reuse as in the official code: the cache holds the compressed prefix,
  a segment is appended, scored and rolled back, and its kept tokens are encoded again after the prefix (so their
  keys see only the compressed context, as in the specification; the official code re-encodes them together with
  the next segment). ``lm`` follows ``decode/speculative/base.py``'s ``SpecLM``
  protocol with a fresh cache (``LVLMSpecLM`` for the minimal LVLM).
- ``LLMLingua``: the parameters and ``compress(lm, ids)`` -> kept ids and indices.

Deviations from the official code
- Only the token-level stage: the budget controller (demonstration- and sentence-level coarse compression, which
  adjusts each segment's ratio) and distribution alignment (instruction-tuning the small LM) are not implemented, so
  every segment uses ``rate``.
- Each token is judged by its *own* surprisal; the official ``get_compressed_input`` keeps token ``i`` when the loss
  at index ``i`` -- the surprisal of token ``i + 1`` -- exceeds the threshold, and always keeps the last token.
  Here the first token (no context) and ``protect``-ed tokens (e.g. image placeholders) are always kept.
- A token is kept when its loss is ``>=`` the threshold (official: ``>`` the same order statistic, which drops the
  token at the threshold).
- No KV truncation for prompts beyond the small LM's context window.

Identity: ``rate = 1`` keeps every token (the official threshold is then ``-inf``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

__all__ = ["naive_llmlingua_keep", "llmlingua_keep", "LLMLingua"]


def _check(ids, rate, segment_size):
    if ids.dim() != 1 or ids.numel() < 1:
        raise ValueError(f"ids must be a non-empty 1-D tensor, got {tuple(ids.shape)}")
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must lie in (0, 1], got {rate}")
    if not isinstance(segment_size, int) or segment_size < 1:
        raise ValueError(f"segment_size must be a positive int, got {segment_size!r}")


def _segment_losses(logits: Tensor, targets: Tensor, first: int) -> Tensor:
    """Surprisal of ``targets`` (the last ``len(targets)`` tokens of the scored sequence); ``logits [n, V]`` are the
    predictions at every position of that sequence; ``first`` = index of the first target in it."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    out = torch.full((targets.numel(),), float("inf"), dtype=torch.float64, device=logits.device)
    for j in range(targets.numel()):
        pos = first + j
        if pos > 0:
            out[j] = -logp[pos - 1, targets[j]]
    return out


def _keep_segment(pool: list, losses: Tensor, rate: float, forced: Tensor) -> Tensor:
    """Keep mask of one segment: losses reaching the floor(rate * n)-th largest of ``pool + losses``."""
    if rate >= 1.0:
        return torch.ones_like(losses, dtype=torch.bool)
    finite = [x for x in pool + losses.tolist() if x != float("inf")]
    k = int(len(finite) * rate)
    if k == 0:
        return forced | torch.isinf(losses)
    threshold = sorted(finite, reverse=True)[k - 1]
    return forced | (losses >= threshold)


def naive_llmlingua_keep(
    logits_fn: Callable[[Tensor], Tensor],
    ids: Tensor,
    rate: float = 0.5,
    segment_size: int = 200,
    protect: Optional[Tensor] = None,
) -> Tensor:
    """Indices (ascending) of the tokens of ``ids [n]`` to keep. ``logits_fn(ids [1, m]) -> logits [1, m, V]`` is the
    small LM (a plain causal forward); ``protect [n]`` bool marks tokens that are always kept."""
    _check(ids, rate, segment_size)
    protect = torch.zeros_like(ids, dtype=torch.bool) if protect is None else protect.bool()
    kept: list = []
    pool: list = []
    for start in range(0, ids.numel(), segment_size):
        seg = torch.arange(start, min(start + segment_size, ids.numel()))
        context = torch.cat([ids[kept], ids[seg]]) if kept else ids[seg]
        logits = logits_fn(context[None])[0]
        losses = _segment_losses(logits, ids[seg], len(kept))
        keep = _keep_segment(pool, losses, rate, protect[seg])
        kept += seg[keep].tolist()
        pool += losses[keep].tolist()
    return torch.tensor(kept, dtype=torch.long, device=ids.device)


@torch.no_grad()
def llmlingua_keep(
    lm, ids: Tensor, rate: float = 0.5, segment_size: int = 200, protect: Optional[Tensor] = None
) -> Tensor:
    """``naive_llmlingua_keep`` with the compressed prefix kept in ``lm``'s KV cache (``lm.cache_len == 0`` on
    entry). Positions are those of the compressed sequence."""
    _check(ids, rate, segment_size)
    if lm.cache_len != 0:
        raise ValueError("llmlingua_keep needs a language model with an empty cache")
    protect = torch.zeros_like(ids, dtype=torch.bool) if protect is None else protect.bool()
    kept: list = []
    pool: list = []
    last_logits = None  # the prediction after the compressed prefix (None before any token)
    for start in range(0, ids.numel(), segment_size):
        seg = torch.arange(start, min(start + segment_size, ids.numel()))
        offset = lm.cache_len
        positions = torch.arange(offset, offset + seg.numel(), device=ids.device)[None]
        logits = lm.forward(ids[seg][None], positions=positions)[0]
        if last_logits is None:
            losses = _segment_losses(logits, ids[seg], 0)
        else:
            losses = _segment_losses(torch.cat([last_logits[None], logits]), ids[seg], 1)
        keep = _keep_segment(pool, losses, rate, protect[seg])
        lm.rollback(seg.numel())  # back to the compressed prefix
        lm.set_next_position(offset)
        chosen = seg[keep]
        if chosen.numel():  # encode the kept tokens after the prefix only
            out = lm.forward(ids[chosen][None], positions=positions[:, : chosen.numel()])
            last_logits = out[0, -1]
        kept += chosen.tolist()
        pool += losses[keep].tolist()
    return torch.tensor(kept, dtype=torch.long, device=ids.device)


@dataclass
class LLMLingua:
    """``LLMLingua(rate=0.5).compress(lm, ids)`` -> ``(kept ids [k], kept indices [k])``. ``lm`` is a ``SpecLM``
    with an empty cache (cached path) or ``impl="naive"`` with ``logits_fn``."""

    rate: float = 0.5
    segment_size: int = 200

    def compress(self, lm, ids: Tensor, protect: Optional[Tensor] = None, impl: str = "auto"):
        if impl == "naive":
            keep = naive_llmlingua_keep(lm, ids, self.rate, self.segment_size, protect)
        else:
            keep = llmlingua_keep(lm, ids, self.rate, self.segment_size, protect)
        return ids[keep], keep
