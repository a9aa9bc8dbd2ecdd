"""Lookahead decoding: parallel decoding without a draft model (Fu et al., "Break the Sequential Dependency of LLM
Inference Using Lookahead Decoding", arXiv 2402.02057).

Why this paper: lookahead decoding is the most used training-free parallel decoder (TensorRT-LLM ships it); the
catalogue's other parallel decoders need extra heads, training or a diffusion LM.

The method (greedy), with window ``W``, n-gram size ``N`` and at most ``G`` candidate n-grams per key. Let ``y`` be the
newest token (not yet in the KV cache) at position ``p``. Each step runs **one** forward over

* ``y``;
* the *lookahead branch*: a 2-D window of ``N - 1`` levels of ``W`` tokens (Jacobi-iteration trajectories); token
  (level l, column i) sits at position ``p + 1 + i + l`` and attends to the cache, ``y``, level 0's columns
  ``0..i`` and column ``i`` of levels ``1..l``. The predictions of the last level give a new level;
* the *verification branch*: the candidate n-grams ``(c_0 .. c_{N-2})`` stored in the pool under key ``y``; ``c_j``
  sits at ``p + 1 + j`` and attends to the cache, ``y`` and ``c_0..c_j``.

Then: the longest candidate prefix that agrees with the model's own greedy predictions is accepted, plus the next
prediction (so every step emits at least the ordinary next token, and the output is exactly greedy decoding); each
column i of the full window yields the n-gram ``(level_0[i], level_1[i], .., level_{N-2}[i], new[i])`` for the pool
(key ``level_0[i]``, at most ``G`` continuations per key, least recently used dropped first); the window moves up one
level (``level_l <- level_{l+1}``, last level <- new). The cache keeps only ``y`` and the accepted tokens
(``keep_slots``). During the first ``N - 2`` steps the levels are filled and nothing is verified.

Functions
- ``lookahead_generate(lm, prompt_ids, max_new_tokens, window=7, ngram=5, max_candidates=7, fused=True)``: the
  decoder; ``fused=False`` is the readable specification: every window token and every candidate prefix is scored
  by its own forward (then rolled back), instead of one forward with the 2-D attention mask.
- ``lookahead_mask``: the step's attention mask and positions.
``lm`` follows ``decode/speculative/base.py``'s ``SpecLM`` protocol (``LVLMSpecLM`` for the minimal LVLM).
Defaults ``(N, W, G) = (5, 7, 7)`` are the official README's example.

Deviations from the official code (github.com/hao-ai-lab/LookaheadDecoding)
- Greedy only (the official sampling variant verifies candidates with a SpecInfer-style rule).
- Window positions are re-anchored at the newest token every step and the window moves by one level, not by the
  accepted count; level 0 starts as ``W`` tokens drawn from the prompt with a seeded generator (official: random
  prompt tokens, and a level 0 that is ``N - 2`` tokens longer).
- The pool is not pre-filled from the prompt (the official ``POOL_FROM_PROMPT`` is off by default too).

Identity: greedy lookahead decoding emits exactly the greedy autoregressive tokens (lossless for every setting);
``ngram = 1`` disables the lookahead and verification branches (one token per step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

__all__ = ["LookaheadStats", "lookahead_mask", "lookahead_generate"]


@dataclass
class LookaheadStats:
    steps: int = 0
    emitted: list = field(default_factory=list)  # tokens emitted per step
    forwards: int = 0  # model forwards after the prefill

    @property
    def tokens_per_step(self) -> float:
        return sum(self.emitted) / max(self.steps, 1)


def lookahead_mask(n_levels: int, window: int, candidates: int, ngram: int, device=None):
    """Mask ``[n, n]`` (True = may attend) and position offsets ``[n]`` (relative to ``y``) of one step's chunk
    ``[y, window (level-major), candidates]``: ``n = 1 + n_levels * window + candidates * (ngram - 1)``."""
    m = ngram - 1
    n = 1 + n_levels * window + candidates * m
    mask = torch.zeros(n, n, dtype=torch.bool, device=device)
    offset = torch.zeros(n, dtype=torch.long, device=device)
    mask[:, 0] = True  # everything sees y (and the cache)

    def slot(level, col):
        return 1 + level * window + col

    for level in range(n_levels):
        for col in range(window):
            r = slot(level, col)
            offset[r] = 1 + col + level
            mask[r, slot(0, 0) : slot(0, col) + 1] = True  # level 0, columns 0..col
            for above in range(1, level + 1):
                mask[r, slot(above, col)] = True  # column col of levels 1..level
    base = 1 + n_levels * window
    for c in range(candidates):
        for j in range(m):
            r = base + c * m + j
            offset[r] = 1 + j
            mask[r, base + c * m : r + 1] = True
    return mask, offset


def _pool_add(pool: dict, key: int, ngram: tuple, max_candidates: int) -> None:
    entries = pool.setdefault(key, [])
    if ngram in entries:
        entries.remove(ngram)
    elif len(entries) == max_candidates:
        entries.pop(0)
    entries.append(ngram)


def _argmax(logits) -> list:
    return logits.argmax(-1).tolist()


def _score_fused(lm, y, levels, candidates, ngram, position):
    """One forward with the lookahead mask: (prediction after y, predictions of the last level, per-candidate
    predictions after each of its tokens)."""
    W = len(levels[0]) if levels else 0
    mask, offset = lookahead_mask(len(levels), W, len(candidates), ngram, device=y.device)
    tokens = [int(y)] + [t for level in levels for t in level] + [t for c in candidates for t in c]
    ids = torch.tensor([tokens], device=y.device)
    logits = lm.forward(ids, positions=(position + offset)[None], chunk_mask=mask)[0]
    pred = _argmax(logits)
    last = 1 + (len(levels) - 1) * W
    m = ngram - 1
    base = 1 + len(levels) * W
    cand_preds = [pred[base + c * m : base + (c + 1) * m] for c in range(len(candidates))]
    return pred[0], (pred[last : last + W] if levels else []), cand_preds


def _score_separately(lm, y, levels, candidates, ngram, position):
    """The same predictions, each from its own causal forward (rolled back afterwards): the specification."""
    pred_y = None
    new = []
    W = len(levels[0]) if levels else 0

    def run(seq):
        ids = torch.tensor([seq], device=y.device)
        pos = torch.arange(position, position + len(seq), device=y.device)[None]
        logits = lm.forward(ids, positions=pos)[0]
        lm.rollback(len(seq))
        return _argmax(logits)

    pred_y = run([int(y)])[0]
    for col in range(W):
        context = [int(y)] + [levels[0][c] for c in range(col + 1)] + [levels[l][col] for l in range(1, len(levels))]
        new.append(run(context)[-1])
    cand_preds = [run([int(y)] + list(c))[1:] for c in candidates]
    return pred_y, new, cand_preds


@torch.no_grad()
def lookahead_generate(
    lm,
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    window: int = 7,
    ngram: int = 5,
    max_candidates: int = 7,
    fused: bool = True,
    eos_token_id: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    prefill_kwargs: Optional[dict] = None,
):
    """Greedy lookahead decoding of ``prompt_ids [1, T]``. Returns ``(tokens [n] int64, LookaheadStats)``."""
    if prompt_ids.dim() != 2 or prompt_ids.shape[0] != 1 or prompt_ids.shape[1] < 1:
        raise ValueError(f"prompt_ids must be [1, T] with T >= 1, got {tuple(prompt_ids.shape)}")
    for name, val, low in (
        ("max_new_tokens", max_new_tokens, 1),
        ("window", window, 1),
        ("ngram", ngram, 1),
        ("max_candidates", max_candidates, 0),
    ):
        if not isinstance(val, int) or val < low:
            raise ValueError(f"{name} must be an int >= {low}, got {val!r}")
    device = prompt_ids.device
    y = lm.prefill(prompt_ids, **(prefill_kwargs or {})).argmax()
    out = [int(y)]
    stats = LookaheadStats()
    prompt = prompt_ids[0]
    pick = torch.randint(0, prompt.numel(), (window,), generator=generator)
    levels = [prompt[pick.to(device)].tolist()] if ngram > 1 else []
    pool: dict = {}
    score = _score_fused if fused else _score_separately
    while len(out) < max_new_tokens and not (eos_token_id is not None and out[-1] == eos_token_id):
        full = len(levels) == ngram - 1 and ngram > 1
        candidates = list(pool.get(int(y), [])) if full else []
        cache_len = lm.cache_len
        position = lm.next_position
        pred_y, new, cand_preds = score(lm, y, levels, candidates, ngram, position)
        stats.forwards += 1 if fused else 1 + len(new) + len(candidates)
        # verification: the longest candidate prefix matching the model's own predictions
        best, best_len = None, 0
        for c, preds in zip(candidates, cand_preds):
            n_ok = 0
            expected = pred_y
            for j, tok in enumerate(c):
                if tok != expected:
                    break
                n_ok += 1
                expected = preds[j]
            if n_ok > best_len:
                best, best_len = c, n_ok
        emitted = list(best[:best_len]) if best is not None else []
        emitted.append(pred_y if best is None else ([pred_y] + cand_preds[candidates.index(best)])[best_len])
        # the cache keeps y and the accepted candidate tokens
        if fused:
            base = 1 + len(levels) * (len(levels[0]) if levels else 0)
            c_idx = candidates.index(best) if best is not None else 0
            accepted = [cache_len + base + c_idx * (ngram - 1) + j for j in range(best_len)]
            lm.keep_slots(torch.tensor(list(range(cache_len + 1)) + accepted, device=device))
        else:
            lm.forward(
                torch.tensor([[int(y)] + list(emitted[:-1])], device=device),
                positions=torch.arange(position, position + 1 + best_len, device=device)[None],
            )
            stats.forwards += 1
        lm.set_next_position(position + 1 + best_len)
        # lookahead: harvest n-grams once the window is full, then move it up one level
        if ngram > 1:
            if full:
                for col in range(window):
                    ngram_tokens = tuple(levels[l][col] for l in range(1, ngram - 1)) + (new[col],)
                    _pool_add(pool, levels[0][col], ngram_tokens, max_candidates)
                levels = levels[1:] + [new]
            else:
                levels = levels + [new]
        stats.steps += 1
        stats.emitted.append(len(emitted))
        out.extend(emitted)
        y = torch.tensor(out[-1], device=device)
    if eos_token_id is not None and eos_token_id in out:
        out = out[: out.index(eos_token_id) + 1]
    return torch.tensor(out[:max_new_tokens], dtype=torch.long), stats
