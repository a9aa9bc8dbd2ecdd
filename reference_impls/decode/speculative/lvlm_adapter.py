"""``SpecLM`` adapter for ``reference_impls.models.MinimalLVLM`` (batch size 1, static KV cache), and the base of
the speculative-decoding techniques applied to it (``with SpeculativeDecoding(k=4)(model): model.generate(...)``).

Implements the protocol of ``base.py`` on top of ``MinimalLVLM.forward_tokens`` / ``prefill`` and the
``StaticKVCache`` (rollback = ``cache.rollback``; accepted-path compaction = ``ops.kv_compact`` on every layer's
buffers). ``hooks`` passed to ``forward`` reach the decoder (LVSpec uses one to read attention statistics).
"""

from __future__ import annotations

from typing import ClassVar, Optional

import torch

from reference_impls.ops import kv_compact
from reference_impls.technique import Technique


class LVLMSpecLM:
    def __init__(self, model, capacity: Optional[int] = None):
        self.model = model
        self.capacity = capacity or model.cfg.max_seq_len
        self.reset()

    def reset(self):
        self.cache = self.model.new_cache(1, self.capacity)
        self.vis_slots = torch.zeros(0, dtype=torch.long, device=self.model.device)

    @property
    def vocab_size(self) -> int:
        return self.model.cfg.vocab_size

    @property
    def cache_len(self) -> int:
        return int(self.cache.lengths(0)[0])

    @property
    def next_position(self) -> int:
        return int(self.cache.next_position[0])

    def set_next_position(self, p: int) -> None:
        self.cache.next_position = torch.full_like(self.cache.next_position, int(p))

    @torch.no_grad()
    def prefill(self, prompt_ids: torch.Tensor, image_features=None, pixel_values=None, hooks=()) -> torch.Tensor:
        """Fresh cache, encode the prompt (with images if given); returns the last token's logits ``[V]``.
        Records the cache slots of the visual tokens in ``vis_slots``."""
        self.reset()
        res = self.model.prefill(prompt_ids, pixel_values, image_features=image_features, cache=self.cache, hooks=hooks)
        self.vis_slots = (
            (prompt_ids[0] == self.model.cfg.image_token_id).nonzero().flatten()
            if (image_features is not None or pixel_values is not None)
            else self.vis_slots
        )
        return res.logits[0]

    @torch.no_grad()
    def forward(
        self,
        ids: torch.Tensor,
        positions: Optional[torch.Tensor] = None,
        chunk_mask: Optional[torch.Tensor] = None,
        hooks=(),
    ) -> torch.Tensor:
        if chunk_mask is not None:
            chunk_mask = chunk_mask.view(1, *chunk_mask.shape[-2:])
        return self.model.forward_tokens(
            input_ids=ids, positions=positions, cache=self.cache, hooks=hooks, chunk_mask=chunk_mask
        )

    def rollback(self, n: int) -> None:
        if n:
            self.cache.rollback(int(n))

    def keep_slots(self, slots: torch.Tensor) -> None:
        """Keep cache slots ``slots`` (ascending) in every layer: ``ops.kv_compact`` in place on the static buffers."""
        L = self.cache_len
        K = slots.numel()
        for layer in range(self.cache.n_layers):
            kb, vb = self.cache.keys[layer], self.cache.values[layer]
            H = kb.shape[1]
            idx = slots.to(kb.device).view(1, 1, K).expand(1, H, K)
            kv_compact(kb[:, :, :L], vb[:, :, :L], idx, inplace=True)
            pos = self.cache.positions[layer]
            pos[:, :K] = pos[:, slots.to(pos.device)]
            self.cache.set_lengths(layer, torch.full((1,), K, dtype=torch.long, device=kb.device))


def truncated_draft(target_model, n_layers: int = 1):
    """A layer-truncated self-draft: the target's embeddings, first ``n_layers`` decoder layers, final norm and
    LM head (LayerSkip-style early exit as the draft; used by tests and benchmarks of the tiny model)."""
    from reference_impls.models.minimal_lvlm import MinimalLVLM

    if not 1 <= n_layers <= target_model.cfg.n_layers:
        raise ValueError(f"n_layers must be in [1, {target_model.cfg.n_layers}], got {n_layers}")
    draft = MinimalLVLM(target_model.cfg.with_(n_layers=n_layers), dtype=target_model.dtype, device=target_model.device)
    own = draft.state_dict()
    draft.load_state_dict({k: v for k, v in target_model.state_dict().items() if k in own})
    return draft


class SpeculativeTechnique(Technique):
    """Base of the speculative-decoding techniques: while attached, ``MinimalLVLM.generate`` (batch size 1) runs
    ``run(target, draft, prompt_ids, max_new_tokens, prefill_kwargs)`` instead of plain greedy decoding. Subclasses
    are dataclasses with ``draft`` (a ``MinimalLVLM``, or None for the target's first ``draft_layers`` layers as a
    self-draft) and ``draft_layers`` fields. Greedy speculative decoding reproduces ``generate`` token for token."""

    stage: ClassVar[str] = "decoding"

    def run(self, target: LVLMSpecLM, draft: LVLMSpecLM, prompt_ids, max_new_tokens: int, prefill_kwargs: dict):
        raise NotImplementedError

    def minimal_generate(
        self, model, input_ids, pixel_values=None, *, max_new_tokens: int, lengths=None, image_features=None
    ):
        if input_ids.shape[0] != 1:
            raise ValueError(
                f"{self.name}: the speculative-decoding references run batch size 1, got {input_ids.shape[0]} rows"
            )
        if lengths is not None:
            input_ids = input_ids[:, : int(lengths[0])]
        capacity = input_ids.shape[1] + max_new_tokens + 64  # room for the drafted tokens of a step
        draft_model = self.draft if self.draft is not None else truncated_draft(model, self.draft_layers)
        target, draft = LVLMSpecLM(model, capacity), LVLMSpecLM(draft_model, capacity)
        kw = {"pixel_values": pixel_values} if image_features is None else {"image_features": image_features}
        tokens, stats = self.run(target, draft, input_ids, max_new_tokens, kw)
        if model.run_stats is not None:
            model.run_stats.extra["spec_stats"] = stats
        return tokens[None].to(input_ids.device)
