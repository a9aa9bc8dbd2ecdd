"""CAR: certainty-based adaptive reasoning (Lu et al., "Prolonged Reasoning Is Not All You Need: Certainty-Based
Adaptive Routing for Efficient LLM/MLLM Reasoning", arXiv 2505.15154).

Why this paper: CAR is the catalogue's reasoning-length control method for multimodal models: answer short when
the model is confident, reason at length only when it is not -- the decision every "adaptive thinking" mode makes.

The method: the model first generates a **short answer**; its perplexity ``PPL = exp(mean_t -log p(a_t | ...))``
over the answer tokens measures confidence. On calibration data (short answers whose correctness is known), the
PPLs of correct and of incorrect answers are each modelled by a Gaussian, ``N(mu_1, s_1^2)`` and
``N(mu_0, s_0^2)``; at inference Bayes' decision rule keeps the short answer when
``P(correct) N(PPL; mu_1, s_1) >= P(incorrect) N(PPL; mu_0, s_0)`` and otherwise generates the **long-form
reasoning** answer instead.

Functions and classes
- ``naive_answer_perplexity``: the specification, PPL of given answer tokens by teacher forcing (one extra forward).
- ``answer_perplexity``: PPL from the logits the generation already produced (no extra forward); tested equal.
- ``GaussianRouter``: fitted on (PPL, correct) pairs (maximum likelihood: class means, population standard
  deviations and class frequencies as priors); ``p_correct`` and ``route``.
- ``CAR``: ``generate(model, prompt_ids, short_suffix, long_suffix)`` on a ``MinimalLVLM`` (greedy): short answer,
  perplexity, route, and the long answer when routed there.

Deviations
- CAR fine-tunes the model on a mix of short-answer and long-reasoning data, prompted by an instruction to answer
  directly or to reason first; this reference only routes: the two modes are whatever ``short_suffix`` /
  ``long_suffix`` (token ids appended to the prompt) make the given model do.
- The priors of the decision rule are the calibration set's class frequencies (``prior_correct`` overrides them).
- Greedy decoding; a stop token (``eos_token_id``) ends either answer early.

Identity: ``mode="long"`` always reasons at length (the unmodified long-form generation); ``mode="short"`` always
answers directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = ["naive_answer_perplexity", "answer_perplexity", "GaussianRouter", "CAR", "CARResult"]


@torch.no_grad()
def naive_answer_perplexity(model, context_ids: Tensor, answer_ids: Tensor) -> float:
    """``exp(mean -log p(answer_t | context, answer_<t))`` by one teacher-forced forward over context + answer
    (``context_ids [1, T]``, ``answer_ids [n]``)."""
    ids = torch.cat([context_ids[0], answer_ids])[None]
    logp = torch.log_softmax(model.forward_tokens(input_ids=ids)[0].double(), dim=-1)
    T = context_ids.shape[1]
    nll = [-logp[T - 1 + t, answer_ids[t]] for t in range(answer_ids.numel())]
    return math.exp(float(torch.stack(nll).mean()))


def answer_perplexity(step_logits: Sequence[Tensor], answer_ids: Tensor) -> float:
    """The same from the logits that produced each answer token during generation (``step_logits[t] [V]``)."""
    logp = torch.log_softmax(torch.stack(list(step_logits)).double(), dim=-1)
    return math.exp(float(-logp[torch.arange(answer_ids.numel()), answer_ids].mean()))


def _normal_pdf(x: float, mu: float, sigma: float) -> float:
    return math.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


@dataclass
class GaussianRouter:
    """Bayes' decision between short and long answers from the short answer's perplexity."""

    mu_correct: float
    sigma_correct: float
    mu_incorrect: float
    sigma_incorrect: float
    prior_correct: float

    @classmethod
    def fit(
        cls,
        ppl: Sequence[float],
        correct: Sequence[bool],
        prior_correct: Optional[float] = None,
        min_sigma: float = 1e-6,
    ) -> "GaussianRouter":
        ppl = torch.tensor(list(ppl), dtype=torch.float64)
        correct = torch.tensor(list(correct), dtype=torch.bool)
        if ppl.numel() != correct.numel() or int(correct.sum()) < 1 or int((~correct).sum()) < 1:
            raise ValueError("fitting needs perplexities of at least one correct and one incorrect short answer")
        stats = []
        for group in (ppl[correct], ppl[~correct]):
            stats += [float(group.mean()), max(float(group.std(unbiased=False)), min_sigma)]
        prior = float(correct.double().mean()) if prior_correct is None else prior_correct
        if not 0.0 < prior < 1.0:
            raise ValueError(f"prior_correct must lie in (0, 1), got {prior}")
        return cls(stats[0], stats[1], stats[2], stats[3], prior)

    def p_correct(self, ppl: float) -> float:
        """Posterior probability that a short answer with this perplexity is correct."""
        a = self.prior_correct * _normal_pdf(ppl, self.mu_correct, self.sigma_correct)
        b = (1 - self.prior_correct) * _normal_pdf(ppl, self.mu_incorrect, self.sigma_incorrect)
        return a / (a + b) if a + b > 0 else float(ppl <= (self.mu_correct + self.mu_incorrect) / 2)

    def route(self, ppl: float) -> str:
        return "short" if self.p_correct(ppl) >= 0.5 else "long"


@dataclass
class CARResult:
    route: str  # "short" or "long"
    tokens: Tensor  # the answer returned
    short_tokens: Tensor
    short_perplexity: float
    generated: int  # tokens generated in total (short answer + long answer if any)


@torch.no_grad()
def _greedy(model, ids: Tensor, max_new_tokens: int, eos_token_id: Optional[int]):
    cache = model.new_cache(1, ids.shape[1] + max_new_tokens)
    logits = model.prefill(ids, cache=cache).logits[0]
    tokens, step_logits = [], []
    for _ in range(max_new_tokens):
        tok = logits.argmax()
        tokens.append(int(tok))
        step_logits.append(logits)
        if eos_token_id is not None and int(tok) == eos_token_id:
            break
        logits = model.decode_step(tok.view(1), cache)[0]
    return torch.tensor(tokens, dtype=torch.long), step_logits


@dataclass
class CAR:
    """``CAR(router).generate(model, prompt_ids, short_suffix, long_suffix)``; ``mode`` = "adaptive" | "short" |
    "long"."""

    router: Optional[GaussianRouter] = None
    max_short_tokens: int = 16
    max_long_tokens: int = 256
    mode: str = "adaptive"
    eos_token_id: Optional[int] = None

    def generate(self, model, prompt_ids: Tensor, short_suffix: Sequence[int], long_suffix: Sequence[int]) -> CARResult:
        if self.mode not in ("adaptive", "short", "long"):
            raise ValueError(f"mode must be 'adaptive', 'short' or 'long', got {self.mode!r}")
        if self.mode == "adaptive" and self.router is None:
            raise ValueError("adaptive routing needs a fitted GaussianRouter")
        device = prompt_ids.device
        suffix = lambda s: torch.cat([prompt_ids, torch.tensor([list(s)], device=device)], 1)  # noqa: E731
        empty = torch.zeros(0, dtype=torch.long)
        if self.mode == "long":
            long_tokens, _ = _greedy(model, suffix(long_suffix), self.max_long_tokens, self.eos_token_id)
            return CARResult("long", long_tokens, empty, float("nan"), long_tokens.numel())
        short_tokens, step_logits = _greedy(model, suffix(short_suffix), self.max_short_tokens, self.eos_token_id)
        ppl = answer_perplexity(step_logits, short_tokens)
        if self.mode == "short" or self.router.route(ppl) == "short":
            return CARResult("short", short_tokens, short_tokens, ppl, short_tokens.numel())
        long_tokens, _ = _greedy(model, suffix(long_suffix), self.max_long_tokens, self.eos_token_id)
        return CARResult("long", long_tokens, short_tokens, ppl, short_tokens.numel() + long_tokens.numel())
