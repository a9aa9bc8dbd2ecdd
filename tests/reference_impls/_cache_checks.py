"""Shared check for the KV caches of the minimal LVLM: greedy generation that also returns every step's logits, so
identity tests compare numbers, not only the argmax."""

from __future__ import annotations

import torch


@torch.no_grad()
def greedy_logits(model, ids, pix, lengths, cache, n_new: int):
    """Greedy decoding with ``cache`` (a fresh static cache when None): ``(tokens [B, n_new], logits [n_new, B,
    V])``."""
    if cache is None:
        cache = model.new_cache(ids.shape[0], ids.shape[1] + n_new)
    res = model.prefill(ids, pix, lengths=lengths, cache=cache)
    logits = [res.logits]
    tok = res.logits.argmax(-1)
    tokens = [tok]
    for _ in range(n_new - 1):
        logits.append(model.decode_step(tok, cache))
        tok = logits[-1].argmax(-1)
        tokens.append(tok)
    return torch.stack(tokens, 1), torch.stack(logits)
