"""Continuous batching with chunked prefill over a paged KV cache: iteration-level scheduling (a request joins or
leaves the running batch at any forward) with SARATHI's decode-maximal batches (Agrawal et al., "SARATHI: Efficient
LLM Inference by Piggybacking Decodes with Chunked Prefills", arXiv 2308.16369), reporting TTFT and TPOT.

Why this paper: chunked prefill with piggybacked decodes is implemented by both vLLM and SGLang
(``--enable-chunked-prefill`` / ``--chunked-prefill-size``); SARATHI is the catalogue's paper for it. Iteration-level
scheduling itself comes from Orca (OSDI 2022, not in the catalogue).

The schedule of one iteration (one forward of the model), ``token_budget`` tokens at most:
1. every running request that has finished its prompt contributes one decode token (oldest first, at most
   ``max_batch`` rows) -- decode-maximal;
2. the remaining budget goes to **one** prefill chunk: the oldest request whose prompt is not fully in the cache
   (a new request starts when its first chunk is scheduled; it reuses the longest registered shared prefix, whose
   blocks it shares through ``PagedKVCache.fork``);
3. the rows run as one right-padded forward (``MinimalLVLM.forward_tokens`` with per-row lengths) over a
   ``PagedBatch``; decode rows and the prefill chunk that completes a prompt emit a token (greedy).
When the pool runs out of blocks, the most recently arrived running request is preempted by recomputation (its
blocks are freed; it re-enters the queue with prompt + generated tokens as its new prompt), as vLLM does by default.

Metrics per request: TTFT = first token time - arrival, TPOT = (finish - first token time) / (tokens - 1), on the
engine's clock (``time.perf_counter`` by default; tests pass an iteration counter).

Deviations: greedy decoding only; SARATHI fixes the chunk size per deployment and so does ``token_budget``
(SARATHI also sizes chunks to tile boundaries -- not modelled); text prompts only (image tokens would enter as
embeddings of the prefill chunks); requests arrive by their ``arrival`` time on the engine clock; no swapping.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from reference_impls.decode.kv.paged import OutOfBlocks, PagedKVCache

__all__ = ["Request", "RequestOutput", "ContinuousBatchingEngine"]


@dataclass
class Request:
    request_id: str
    prompt: list
    max_new_tokens: int
    arrival: float = 0.0


@dataclass
class RequestOutput:
    request_id: str
    tokens: list
    arrival: float
    first_token_time: float
    finish_time: float
    preemptions: int

    @property
    def ttft(self) -> float:
        return self.first_token_time - self.arrival

    @property
    def tpot(self) -> Optional[float]:
        n = len(self.tokens)
        return (self.finish_time - self.first_token_time) / (n - 1) if n > 1 else None


@dataclass
class _State:
    request: Request
    prompt: list  # tokens to put in the cache (grows on recompute preemption)
    seq_id: Optional[str] = None
    cached: int = 0  # prompt tokens in the cache
    tokens: list = field(default_factory=list)
    first_token_time: Optional[float] = None
    preemptions: int = 0


class ContinuousBatchingEngine:
    """``engine = ContinuousBatchingEngine(model, PagedKVCache.for_model(cfg, num_blocks=64))``;
    ``outputs = engine.run([Request("a", ids, 16), ...])``. ``history`` records each iteration as
    ``(decode rows, prefill tokens)``."""

    def __init__(
        self,
        model,
        paged: PagedKVCache,
        *,
        token_budget: int = 512,
        max_batch: int = 64,
        eos_token_id: Optional[int] = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        if token_budget < 1 or max_batch < 1:
            raise ValueError(f"token_budget and max_batch must be positive, got {token_budget}, {max_batch}")
        self.model, self.paged = model, paged
        self.token_budget, self.max_batch, self.eos_token_id, self.clock = token_budget, max_batch, eos_token_id, clock
        self.waiting: list = []  # arrived, prompt not (fully) cached, in arrival order
        self.running: list = []  # decoding, in arrival order
        self.pending: list = []  # not yet arrived
        self.finished: dict = {}
        self.history: list = []
        self._prefix_count = 0
        self.start_time = 0.0

    # -- shared prefixes -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def register_prefix(self, token_ids) -> None:
        """Prefill ``token_ids`` once into the pool and let later prompts starting with them share its blocks."""
        seq_id = f"prefix-{self._prefix_count}"
        self._prefix_count += 1
        self.paged.add(seq_id)
        self.paged.reserve(seq_id, len(token_ids))
        batch = self.paged.batch([seq_id])
        self.model.forward_tokens(input_ids=torch.tensor([list(token_ids)], device=self.model.device), cache=batch)
        batch.commit()
        self.paged.register_prefix(tuple(token_ids), seq_id)

    # -- the loop ------------------------------------------------------------------------------------------------
    def run(self, requests) -> dict:
        """Serve ``requests`` (arrival times relative to the start of the run) and return their outputs by id."""
        self.start_time = self.clock()
        self.pending = sorted((_State(r, list(r.prompt)) for r in requests), key=lambda s: s.request.arrival)
        for s in self.pending:
            if not s.prompt or s.request.max_new_tokens < 1:
                raise ValueError(f"request {s.request.request_id!r} needs a prompt and max_new_tokens >= 1")
        while self.pending or self.waiting or self.running:
            self._admit_arrivals()
            if not self.waiting and not self.running:  # idle until the next arrival
                if self.clock is time.perf_counter:
                    time.sleep(max(0.0, self.pending[0].request.arrival - self.now()))
                continue
            self.step()
        return dict(self.finished)

    def now(self) -> float:
        return self.clock() - self.start_time

    def _admit_arrivals(self) -> None:
        t = self.now()
        while self.pending and self.pending[0].request.arrival <= t:
            self.waiting.append(self.pending.pop(0))

    @torch.no_grad()
    def step(self) -> None:
        decodes = self._schedule_decodes()
        prefill = self._schedule_prefill(self.token_budget - len(decodes), self.max_batch - len(decodes))
        if not decodes and prefill is None:
            raise RuntimeError("nothing fits in the KV pool: increase num_blocks")
        rows = [(s, [s.tokens[-1]]) for s in decodes]
        if prefill is not None:
            rows.append(prefill)
        width = max(len(ids) for _, ids in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long, device=self.model.device)
        for b, (_, chunk) in enumerate(rows):
            ids[b, : len(chunk)] = torch.tensor(chunk)
        lengths = torch.tensor([len(c) for _, c in rows], device=self.model.device)
        batch = self.paged.batch([s.seq_id for s, _ in rows])
        logits = self.model.forward_tokens(input_ids=ids, cache=batch, lengths=lengths)
        batch.commit()
        self.history.append((len(decodes), 0 if prefill is None else len(prefill[1])))
        now = self.now()
        for b, (state, chunk) in enumerate(rows):
            if state in decodes:
                self._emit(state, int(logits[b, 0].argmax()), now)
                continue
            state.cached += len(chunk)
            if state.cached == len(state.prompt):  # prompt complete: its last logit gives the next token
                self.waiting.remove(state)
                self.running.append(state)
                self.running.sort(key=lambda s: s.request.arrival)
                self._emit(state, int(logits[b, len(chunk) - 1].argmax()), now)

    def _emit(self, state: _State, token: int, now: float) -> None:
        state.tokens.append(token)
        if state.first_token_time is None:
            state.first_token_time = now
        done = len(state.tokens) >= state.request.max_new_tokens or token == self.eos_token_id
        if done:
            self.running.remove(state)
            self.paged.free(state.seq_id)
            self.finished[state.request.request_id] = RequestOutput(
                state.request.request_id,
                list(state.tokens),
                state.request.arrival,
                state.first_token_time,
                now,
                state.preemptions,
            )

    def _schedule_decodes(self) -> list:
        chosen = []
        for state in list(self.running[: self.max_batch]):
            while state in self.running:
                try:
                    self.paged.reserve(state.seq_id, 1)
                    chosen.append(state)
                    break
                except OutOfBlocks:
                    victim = self.running[-1]
                    self._preempt(victim)
                    if victim in chosen:
                        chosen.remove(victim)
        return chosen

    def _schedule_prefill(self, budget: int, rows_left: int):
        if budget <= 0 or rows_left <= 0 or not self.waiting:
            return None
        state = self.waiting[0]
        if state.seq_id is None:
            self._start(state)
        n = min(budget, len(state.prompt) - state.cached)
        try:
            self.paged.reserve(state.seq_id, n)
        except OutOfBlocks:
            return None
        return state, state.prompt[state.cached : state.cached + n]

    def _start(self, state: _State) -> None:
        state.seq_id = f"{state.request.request_id}#{state.preemptions}"
        prefix, prefix_seq = self.paged.longest_prefix(state.prompt)
        if prefix_seq is None:
            self.paged.add(state.seq_id)
        else:
            self.paged.fork(prefix_seq, state.seq_id)
        state.cached = len(prefix)

    def _preempt(self, state: _State) -> None:
        """Recompute preemption: drop the KV, requeue with the generated tokens appended to the prompt."""
        self.running.remove(state)
        self.paged.free(state.seq_id)
        state.prompt = list(state.request.prompt) + state.tokens
        state.seq_id, state.cached = None, 0
        state.preemptions += 1
        self.waiting.append(state)
        self.waiting.sort(key=lambda s: s.request.arrival)
