"""Shared pieces of the speculative-decoding references: the small language-model protocol they drive, and
sampling helpers.

``SpecLM`` protocol (batch size 1; what chain / tree / LVSpec / SpecVLM need from a model):

``prefill(prompt_ids [1, T], **multimodal) -> logits [V]`` of the last prompt token, on a fresh cache.
``forward(ids [1, n], positions [1, n] | None = None, chunk_mask [n, n] bool | None = None)``
    -> logits ``[1, n, V]`` fp32. Appends the n tokens to the model's KV cache; they attend to every cached
    slot and, among themselves, causally -- or per ``chunk_mask`` (True = may attend; tree attention).
    ``positions`` default to ``next_position .. next_position + n - 1``.
``cache_len`` (int): slots in the cache. ``next_position`` (int): RoPE position of the next token
    (advanced by ``max(positions) + 1`` on each forward).
``rollback(n)``: forget the last n cache slots (KV rollback after rejected drafts).
``keep_slots(slots LongTensor[K])``: keep only these cache slots (sorted ascending) -- tree accepted-path
    compaction; the adapter does it with ``reference_impls.ops.kv_compact``.
``set_next_position(p)``.

Adapters for the minimal LVLM live in ``lvlm_adapter.py``; tests may use any object with this interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol

import torch


class SpecLM(Protocol):
    cache_len: int
    next_position: int

    def prefill(self, prompt_ids, **multimodal): ...

    def forward(self, ids, positions=None, chunk_mask=None): ...

    def rollback(self, n: int) -> None: ...

    def keep_slots(self, slots) -> None: ...


def logits_to_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """fp32 softmax(logits / temperature); temperature must be > 0 (use greedy mode for 0)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for sampling, got {temperature}")
    return torch.softmax(logits.float() / temperature, dim=-1)


def sample(probs: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """One draw per row of ``probs [..., V]`` -> int64 ``[...]``."""
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])


def uniform(shape, generator: Optional[torch.Generator], device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device)


def check_prompt(prompt_ids: torch.Tensor, max_new_tokens: int):
    if prompt_ids.dim() != 2 or prompt_ids.shape[0] != 1 or prompt_ids.shape[1] < 1:
        raise ValueError(f"prompt_ids must be [1, T] with T >= 1 (batch size 1), got {tuple(prompt_ids.shape)}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")


@dataclass
class SpecStats:
    """Per-run statistics. ``accepted[i]`` = draft tokens accepted at verification step i (the bonus /
    correction token is not counted); tokens emitted per step = accepted + 1."""

    accepted: list = field(default_factory=list)
    drafted: list = field(default_factory=list)
    target_calls: int = 0
    draft_calls: int = 0

    @property
    def steps(self) -> int:
        return len(self.accepted)

    @property
    def mean_accepted_length(self) -> float:
        """tau: mean tokens emitted per target verification call (accepted + 1)."""
        return (sum(self.accepted) + self.steps) / max(self.steps, 1)

    @property
    def acceptance_rate(self) -> float:
        return sum(self.accepted) / max(sum(self.drafted), 1)

    def histogram(self) -> dict:
        out: dict = {}
        for a in self.accepted:
            out[a] = out.get(a, 0) + 1
        return dict(sorted(out.items()))


def autoregressive_generate(
    model: SpecLM,
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    greedy: bool = True,
    temperature: float = 1.0,
    generator: Optional[torch.Generator] = None,
    eos_token_id: Optional[int] = None,
    prefill_kwargs: Optional[dict] = None,
) -> torch.Tensor:
    """Plain AR decoding (the baseline every speculative method is compared with). Returns ``[n]`` int64."""
    check_prompt(prompt_ids, max_new_tokens)
    logits = model.prefill(prompt_ids, **(prefill_kwargs or {}))
    out = []
    for _ in range(max_new_tokens):
        tok = logits.argmax() if greedy else sample(logits_to_probs(logits, temperature), generator)
        out.append(int(tok))
        if eos_token_id is not None and out[-1] == eos_token_id or len(out) == max_new_tokens:
            break
        logits = model.forward(tok.view(1, 1))[0, -1]
    return torch.tensor(out, dtype=torch.long)


def prefill_pair(
    target: SpecLM,
    draft: SpecLM,
    prompt_ids,
    target_kwargs=None,
    draft_kwargs=None,
    target_logits: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Prefill both models on fresh caches; ``draft_kwargs`` may carry its own ``prompt_ids`` (e.g. fewer image
    placeholders after SpecVLM pruning). ``target_logits`` given = the target was already prefilled by the
    caller (SpecVLM's two-stage prefill) and these are its last-token logits. Returns the target's ``[V]``."""
    dkw = dict(draft_kwargs or {})
    draft_prompt = dkw.pop("prompt_ids", prompt_ids)
    logits = target_logits if target_logits is not None else target.prefill(prompt_ids, **(target_kwargs or {}))
    draft.prefill(draft_prompt, **dkw)
    return logits


def start_pair(
    target: SpecLM,
    draft: SpecLM,
    prompt_ids,
    *,
    greedy: bool,
    temperature: float,
    generator: Optional[torch.Generator],
    target_kwargs=None,
    draft_kwargs=None,
    target_logits: Optional[torch.Tensor] = None,
):
    """``prefill_pair`` plus the first generated token (greedy argmax or a sample of the target's last-token
    logits). Returns ``(first token [] int64, SpecStats counting the two prefill calls)``."""
    logits = prefill_pair(target, draft, prompt_ids, target_kwargs, draft_kwargs, target_logits)
    stats = SpecStats()
    stats.target_calls += 1
    stats.draft_calls += 1
    first = logits.argmax() if greedy else sample(logits_to_probs(logits, temperature), generator)
    return first, stats
