"""Confidence-based early exit during decoding, with hidden-state propagation.

A generic reference technique, closest to CALM (Schuster et al., "Confident Adaptive Language Modeling", arXiv
2207.07061); the catalogue's other early-exit papers (LayerSkip 2404.16710, SkipDecode 2307.02628, LITE 2310.18581,
FREE 2310.05424 ...) vary the exit rule, the training of the exit heads or the handling of skipped layers.

The rule, for every generated token (the prompt is always prefilled by the whole model):

* after each decoder layer ``l >= min_layer`` (counted from 1) the token's hidden state goes through the model's own
  final norm and LM head (shared exit head, no trained per-layer heads);
* its confidence is the *softmax response*: the top-1 minus the top-2 probability;
* the first layer whose confidence reaches ``threshold`` is the exit layer ``e``: the token is the argmax there;
* the layers after ``e`` still need this token's keys and values for later tokens: they are computed from the exit
  hidden state ``h_e`` (state propagation), and the layers' outputs for the token are discarded.

``threshold > 1`` never exits (the confidence is at most 1): the output is then exactly the model's greedy
``generate``.

Functions
- ``early_exit_generate(model, input_ids, ...)``: batched (ragged prompts via ``lengths``) on the minimal LVLM, one
  forward per step with a hook that freezes exited rows;
- ``naive_early_exit_generate``: the readable specification: one row at a time, each step first probes a copy of
  the cache with the full model to find the exit layer, then runs the step again with the exit layer's state fed to
  every later layer.

Deviations from CALM: decoder-only model (CALM: T5 encoder-decoder); one fixed threshold for every step (CALM
calibrates a decaying threshold with Learn-then-Test); exits may happen after any layer from ``min_layer`` (CALM
also evaluates a learned early-exit classifier and hidden-state saturation as confidence measures). This reference
still computes the skipped layers' attention and MLP for exited rows before discarding them, so it shows the
decisions and the outputs, not the saving; ``EarlyExitStats.layers_run`` counts the layers the rule would run. The
official code was not compared.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from reference_impls.models.hooks import Hook

__all__ = ["EarlyExitStats", "softmax_response", "early_exit_generate", "naive_early_exit_generate"]


@dataclass
class EarlyExitStats:
    """Exit layer of every generated token after the first (``[B, max_new_tokens - 1]``, 1-based; ``n_layers`` when
    the token ran the whole model) and the model depth."""

    exit_layers: Tensor
    n_layers: int

    @property
    def layers_run(self) -> int:
        """Decoder layers the rule runs for the generated tokens (the prefill and the first token excluded)."""
        return int(self.exit_layers.sum())

    @property
    def mean_exit_layer(self) -> float:
        return float(self.exit_layers.float().mean()) if self.exit_layers.numel() else float(self.n_layers)


def softmax_response(logits: Tensor) -> Tensor:
    """CALM's confidence: top-1 minus top-2 softmax probability, ``[..., V] -> [...]`` (fp32)."""
    top2 = logits.float().softmax(-1).topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def _check(model, threshold: float, min_layer: int, max_new_tokens: int) -> None:
    if not 1 <= min_layer <= model.cfg.n_layers:
        raise ValueError(f"min_layer must be in [1, n_layers={model.cfg.n_layers}], got {min_layer}")
    if threshold != threshold or threshold < 0:
        raise ValueError(f"threshold must be >= 0 (above 1 disables exits), got {threshold}")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")


class _ExitHook(Hook):
    """Decoder hook for one decode step (chunk width 1): freezes each row at its exit layer."""

    def __init__(self, model, threshold: float, min_layer: int):
        self.model, self.threshold, self.min_layer = model, threshold, min_layer
        self.n_layers = model.cfg.n_layers

    def before_layer(self, layer, state, ctx):
        if layer == 0:
            B = state.hidden.shape[0]
            self.exited = torch.zeros(B, dtype=torch.bool, device=state.hidden.device)
            self.exit_layer = torch.full((B,), self.n_layers, dtype=torch.long, device=state.hidden.device)
            self.frozen = torch.zeros_like(state.hidden)
        return state

    def after_layer(self, layer, state, ctx, colsum):
        # an exited row keeps h_e: the update is discarded and the next layer's K/V come from h_e
        state.hidden = torch.where(self.exited[:, None, None], self.frozen, state.hidden)
        depth = layer + 1
        if self.min_layer <= depth < self.n_layers:
            confident = softmax_response(self.model.logits(state.hidden[:, -1])) >= self.threshold
            new = confident & ~self.exited
            self.frozen = torch.where(new[:, None, None], state.hidden, self.frozen)
            self.exit_layer = torch.where(new, torch.full_like(self.exit_layer, depth), self.exit_layer)
            self.exited = self.exited | new
        return state


@torch.no_grad()
def early_exit_generate(
    model,
    input_ids: Tensor,
    pixel_values: Optional[Tensor] = None,
    *,
    max_new_tokens: int = 16,
    threshold: float = 2.0,
    min_layer: int = 1,
    lengths: Optional[Tensor] = None,
    image_features=None,
) -> tuple[Tensor, EarlyExitStats]:
    """Greedy generation on a ``MinimalLVLM`` with early exit: ``([B, max_new_tokens] tokens, EarlyExitStats)``."""
    _check(model, threshold, min_layer, max_new_tokens)
    B = input_ids.shape[0]
    cache = model.new_cache(B, input_ids.shape[1] + max_new_tokens)
    res = model.prefill(input_ids, pixel_values, lengths=lengths, image_features=image_features, cache=cache)
    token = res.logits.argmax(-1)
    out, exits = [token], []
    hook = _ExitHook(model, threshold, min_layer)
    for _ in range(1, max_new_tokens):
        # the final logits of an exited row are the exit layer's: its frozen state ran through no later layer
        token = model.forward_tokens(input_ids=token[:, None], cache=res.cache, hooks=[hook])[:, 0].argmax(-1)
        out.append(token)
        exits.append(hook.exit_layer.clone())
    empty = torch.zeros(B, 0, dtype=torch.long, device=token.device)
    return torch.stack(out, 1), EarlyExitStats(torch.stack(exits, 1) if exits else empty, model.cfg.n_layers)


class _Record(Hook):
    """Hook that records the last position's hidden state after every layer (the probe pass)."""

    def __init__(self):
        self.hidden = []

    def after_layer(self, layer, state, ctx, colsum):
        self.hidden.append(state.hidden[:, -1].clone())
        return state


class _Propagate(Hook):
    """Hook that feeds ``h_exit`` to every layer after ``exit_layer`` and keeps it as their output."""

    def __init__(self, exit_layer: int, h_exit: Tensor):
        self.exit_layer, self.h_exit = exit_layer, h_exit

    def before_layer(self, layer, state, ctx):
        if layer >= self.exit_layer:
            state.hidden = self.h_exit[:, None].clone()
        return state

    def after_layer(self, layer, state, ctx, colsum):
        return self.before_layer(layer, state, ctx)  # the layer's own output for the token is discarded


@torch.no_grad()
def naive_early_exit_generate(
    model,
    input_ids: Tensor,
    pixel_values: Optional[Tensor] = None,
    *,
    max_new_tokens: int = 16,
    threshold: float = 2.0,
    min_layer: int = 1,
    lengths: Optional[Tensor] = None,
) -> tuple[Tensor, EarlyExitStats]:
    """Specification of :func:`early_exit_generate`: each row alone (its prompt unpadded); each step probes a copy
    of the cache with the whole model, picks the exit layer from the recorded states, then runs the step for real
    with the exit state propagated to the later layers."""
    _check(model, threshold, min_layer, max_new_tokens)
    n_layers = model.cfg.n_layers
    B, T = input_ids.shape
    lengths = torch.full((B,), T, dtype=torch.long) if lengths is None else lengths
    rows, row_exits = [], []
    n_images = 0 if pixel_values is None else pixel_values.shape[0] // B
    for b in range(B):
        ids = input_ids[b : b + 1, : int(lengths[b])]
        pix = None if pixel_values is None else pixel_values[b * n_images : (b + 1) * n_images]
        cache = model.new_cache(1, ids.shape[1] + max_new_tokens)
        token = model.prefill(ids, pix, cache=cache).logits.argmax(-1)
        tokens, exits = [int(token)], []
        for _ in range(1, max_new_tokens):
            probe = _Record()
            model.forward_tokens(input_ids=token[:, None], cache=copy.deepcopy(cache), hooks=[probe])
            exit_layer = n_layers
            for depth in range(min_layer, n_layers):
                if float(softmax_response(model.logits(probe.hidden[depth - 1]))[0]) >= threshold:
                    exit_layer = depth
                    break
            hooks = [_Propagate(exit_layer, probe.hidden[exit_layer - 1])] if exit_layer < n_layers else []
            token = model.forward_tokens(input_ids=token[:, None], cache=cache, hooks=hooks)[:, 0].argmax(-1)
            tokens.append(int(token))
            exits.append(exit_layer)
        rows.append(tokens)
        row_exits.append(exits)
    return torch.tensor(rows), EarlyExitStats(torch.tensor(row_exits, dtype=torch.long).reshape(B, -1), n_layers)
