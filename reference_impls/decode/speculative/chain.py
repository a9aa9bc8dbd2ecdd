"""Chain speculative decoding (Leviathan et al. arXiv 2211.17192; Chen et al. arXiv 2302.01318).

Each step: the draft proposes ``k`` tokens ``d_1..d_k`` (with probabilities ``p_i``); the target scores
``[y, d_1..d_k]`` in **one** forward (``q_1..q_{k+1}``); verification (``ops.spec_verify.verify_paths``, fused
Triton kernel on GPU) accepts the longest prefix -- greedy: ``d_i == argmax q_i``; sampling: accept ``d_i``
with probability ``min(1, q_i(d_i)/p_i(d_i))`` -- and emits either a correction token drawn from
``norm(relu(q_i - p_i))`` at the first rejection or a bonus token from ``q_{k+1}``. Both KV caches are
rolled back to the accepted length. Greedy output equals greedy AR token for token; sampled output follows
the target distribution exactly.

Adaptive k (``adaptive=True``): the Hugging Face assisted-generation heuristic -- ``k += 2`` after a step
where every draft token was accepted, else ``k = max(k_min, k - 1)``; clipped to ``[k_min, k_max]``.

    with SpeculativeDecoding(k=4)(model):     # MinimalLVLM; draft=None: the target's first layer as a self-draft
        model.generate(input_ids, pixel_values, max_new_tokens=32)

Deviations / choices: batch size 1; temperature is the only sampling transform (no top-k/top-p); when the
whole chain is accepted the draft has not yet seen ``d_k``, so ``d_k`` is fed to it together with the new
token at the start of the next step (gpt-fast does an extra draft forward instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from reference_impls.decode.speculative.base import SpecLM, check_prompt, logits_to_probs, sample, start_pair, uniform
from reference_impls.decode.speculative.lvlm_adapter import SpeculativeTechnique
from reference_impls.ops.spec_verify import verify_paths


def draft_chain(
    draft: SpecLM,
    pending: torch.Tensor,
    k: int,
    *,
    greedy: bool,
    temperature: float,
    generator: Optional[torch.Generator],
):
    """Feed ``pending [n]`` to the draft, then propose ``k`` tokens autoregressively.
    Returns ``(tokens [k], probs [k, V] | None)``; the draft cache then holds pending + d_1..d_{k-1}."""
    logits = draft.forward(pending.view(1, -1))[0, -1]
    toks, probs = [], []
    for i in range(k):
        if greedy:
            tok = logits.argmax()
        else:
            p = logits_to_probs(logits, temperature)
            tok = sample(p, generator)
            probs.append(p)
        toks.append(tok)
        if i + 1 < k:
            logits = draft.forward(tok.view(1, 1))[0, -1]
    return torch.stack(toks), (torch.stack(probs) if probs else None)


def chain_verify(
    target_logits: torch.Tensor,
    draft_tokens: torch.Tensor,
    draft_probs: Optional[torch.Tensor],
    *,
    greedy: bool,
    temperature: float,
    generator: Optional[torch.Generator],
    impl: str = "auto",
    force_accept: Optional[torch.Tensor] = None,
):
    """Verify one chain. ``target_logits [k+1, V]``; returns ``(n_accepted, next_token)`` (python ints)."""
    k = draft_tokens.shape[0]
    if greedy:
        n_acc, nxt = verify_paths(
            draft_tokens.view(1, k),
            target_logits.view(1, k + 1, -1),
            greedy=True,
            force_accept=None if force_accept is None else force_accept.view(1, k),
            impl=impl,
        )
        return int(n_acc[0]), int(nxt[0])
    q = logits_to_probs(target_logits, temperature)
    u = uniform((1, k), generator, q.device)
    n_acc, residual = verify_paths(
        draft_tokens.view(1, k),
        q.view(1, k + 1, -1),
        draft_probs.view(1, k, -1),
        u,
        greedy=False,
        force_accept=None if force_accept is None else force_accept.view(1, k),
        impl=impl,
    )
    return int(n_acc[0]), int(sample(residual[0], generator))


def speculative_generate(
    target: SpecLM,
    draft: SpecLM,
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    k: int = 4,
    adaptive: bool = False,
    k_min: int = 1,
    k_max: int = 8,
    greedy: bool = True,
    temperature: float = 1.0,
    generator: Optional[torch.Generator] = None,
    eos_token_id: Optional[int] = None,
    impl: str = "auto",
    verify_fn=None,
    target_prefill_kwargs: Optional[dict] = None,
    draft_prefill_kwargs: Optional[dict] = None,
    target_prefill_logits: Optional[torch.Tensor] = None,
):
    """Generate with chain speculative decoding. Both models start with empty caches.

    ``verify_fn`` (optional) replaces ``chain_verify`` with the same signature plus ``step_context``
    (LVSpec plugs its loose rule in here). ``*_prefill_kwargs`` go to each model's ``prefill`` (images; SpecVLM
    gives the draft its pruned visual tokens). Returns ``(tokens [n] int64, SpecStats)``.
    """
    check_prompt(prompt_ids, max_new_tokens)
    if not 1 <= k_min <= k <= k_max:
        raise ValueError(f"need 1 <= k_min <= k <= k_max, got k_min={k_min}, k={k}, k_max={k_max}")
    first, stats = start_pair(
        target,
        draft,
        prompt_ids,
        greedy=greedy,
        temperature=temperature,
        generator=generator,
        target_kwargs=target_prefill_kwargs,
        draft_kwargs=draft_prefill_kwargs,
        target_logits=target_prefill_logits,
    )
    out = [int(first)]
    current = first.view(1)
    pending = current  # tokens the draft has not yet consumed
    while len(out) < max_new_tokens and not (eos_token_id is not None and out[-1] == eos_token_id):
        d_toks, d_probs = draft_chain(draft, pending, k, greedy=greedy, temperature=temperature, generator=generator)
        stats.draft_calls += k
        t_logits = target.forward(torch.cat([current, d_toks]).view(1, -1))[0]
        stats.target_calls += 1
        if verify_fn is None:
            n_acc, nxt = chain_verify(
                t_logits, d_toks, d_probs, greedy=greedy, temperature=temperature, generator=generator, impl=impl
            )
        else:
            n_acc, nxt = verify_fn(
                t_logits,
                d_toks,
                d_probs,
                greedy=greedy,
                temperature=temperature,
                generator=generator,
                impl=impl,
                step_context=dict(target=target, k=k),
            )
        # KV rollback: target keeps [current, d_1..d_n]; draft keeps pending + d_1..d_n
        target.rollback(k - n_acc)
        if n_acc < k:
            draft.rollback(k - 1 - n_acc)
            pending = torch.tensor([nxt], device=d_toks.device)
        else:
            pending = torch.stack([d_toks[-1], torch.tensor(nxt, device=d_toks.device)])
        stats.accepted.append(n_acc)
        stats.drafted.append(k)
        emitted = d_toks[:n_acc].tolist() + [nxt]
        if eos_token_id is not None and eos_token_id in emitted:
            emitted = emitted[: emitted.index(eos_token_id) + 1]
        out.extend(emitted)
        current = torch.tensor([nxt], device=d_toks.device)
        if adaptive:
            k = min(k_max, k + 2) if n_acc == k else max(k_min, k - 1)
    return torch.tensor(out[:max_new_tokens], dtype=torch.long), stats


@dataclass
class SpeculativeDecoding(SpeculativeTechnique):
    """Chain speculative decoding (greedy) on the minimal LVLM."""

    name: ClassVar[str] = "speculative"
    draft: object = None
    draft_layers: int = 1
    k: int = 4
    adaptive: bool = False
    impl: str = "auto"

    def run(self, target, draft, prompt_ids, max_new_tokens, prefill_kwargs):
        return speculative_generate(
            target,
            draft,
            prompt_ids,
            max_new_tokens,
            k=self.k,
            adaptive=self.adaptive,
            impl=self.impl,
            target_prefill_kwargs=prefill_kwargs,
            draft_prefill_kwargs=prefill_kwargs,
        )
