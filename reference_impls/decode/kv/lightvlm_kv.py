"""LightVLM decoding-stage KV-cache compression (arXiv 2509.00419) [paper-abs].

What the paper states (abstract; the method section could not be read with our look-up tools): VLM inference is
split into encoding (prefill) and decoding; prefill uses pyramid token merging (``prefill/lightvlm.py``, MODEL
helper) and decoding uses "KV cache compression to remove unnecessary caches" to raise throughput for long
outputs (3.21x less time at 4096 generated tokens).

Our specification (H2O/SnapKV-style compression over the
generated-token cache): the prompt rows -- already few after pyramid merging -- are kept intact; the rows of
generated tokens are bounded by ``gen_heavy + gen_recent`` per (row, KV head): the ``gen_recent`` latest
generated tokens plus the ``gen_heavy`` older generated tokens with the largest accumulated attention (every
decode query's probabilities, GQA-group mean). Eviction compacts the real cache in place, so decode cost and
memory stop growing with the output length.

    with LightVLMKV(gen_heavy=64, gen_recent=64)(model):
        model.generate(...)

Deviations / unverified: everything beyond "remove unnecessary caches during decoding" (the score, the split
between prompt and generated rows, the budgets) is our choice, not checked against the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

import torch

from reference_impls.decode.kv.base import LayerView, PolicyTechnique, keep_scored_plus_recent, last_rows

__all__ = ["LightVLMKV"]


@dataclass
class LightVLMKV(PolicyTechnique):
    """LightVLM's decoding KV compression: the prompt rows stay, generated rows are bounded per (row, KV head)."""

    name: ClassVar[str] = "lightvlm_kv"
    gen_heavy: int = 64
    gen_recent: int = 64
    score_reduce: str = "mean"
    impl: str = "auto"
    _prompt_rows: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        for name, val in (("gen_heavy", self.gen_heavy), ("gen_recent", self.gen_recent)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 0:
                raise ValueError(f"{name} must be a non-negative int, got {val!r}")
        if self.gen_heavy + self.gen_recent < 1:
            raise ValueError("gen_heavy + gen_recent must be >= 1")

    def budget_rows(self, layer: int, prompt_len) -> Optional[torch.Tensor]:
        rows = self._prompt_rows.get(layer)
        return None if rows is None else rows + self.gen_heavy + self.gen_recent

    def wants_scores(self, layer, phase, n_new, chunk_len):
        if phase == "prefill":  # prompt rows are protected: one row suffices to record their count
            return last_rows(n_new, chunk_len, 1)
        ar = torch.arange(chunk_len, device=n_new.device)[None, :]
        return ar < n_new[:, None]

    def keep(self, view: LayerView):
        if view.phase == "prefill":
            self._prompt_rows[view.layer] = view.lengths.clone()
            return None
        prompt = self._prompt_rows[view.layer]  # [B, Hkv]
        cap = view.scores.shape[-1]
        is_prompt = torch.arange(cap, device=view.scores.device)[None, None, :] < prompt[..., None]
        return keep_scored_plus_recent(
            view.scores, view.lengths, prompt + self.gen_heavy + self.gen_recent, self.gen_recent, protect=is_prompt
        )
