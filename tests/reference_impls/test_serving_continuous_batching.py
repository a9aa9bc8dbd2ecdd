"""Continuous batching with chunked prefill (SARATHI, arXiv 2308.16369) over the paged cache: a hand-worked
schedule with its TTFT / TPOT, greedy outputs equal to per-request generation (chunked prefill, preemption, shared
prefixes)."""

import pytest
import torch

from reference_impls.decode.kv.paged import PagedKVCache
from reference_impls.models import LVLMConfig, MinimalLVLM
from reference_impls.serving.continuous_batching import ContinuousBatchingEngine, Request

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def model():
    return MinimalLVLM(LVLMConfig.tiny(n_layers=2, init_std=0.1), seed=0)


def _prompts(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 250, (n,), generator=g).tolist() for n in lengths]


def _reference(model, prompt, n):
    return model.generate(torch.tensor([prompt]), max_new_tokens=n)[0].tolist()


def _iteration_clock(engine_ref):
    """A clock that reads the number of finished iterations (deterministic TTFT / TPOT)."""
    return lambda: float(len(engine_ref[0].history)) if engine_ref else 0.0


def test_hand_worked_schedule(model):
    a, b = _prompts([5, 6])
    ref = []
    engine = ContinuousBatchingEngine(
        model, PagedKVCache.for_model(model.cfg, 8, 4), token_budget=4, max_batch=4, clock=_iteration_clock(ref)
    )
    ref.append(engine)
    out = engine.run([Request("A", a, 3), Request("B", b, 2)])
    # it1: A prefill 4 | it2: A prefill 1 -> A's first token | it3: A decode + B prefill 3 |
    # it4: A decode (A done) + B prefill 3 -> B's first token | it5: B decode (B done)
    assert engine.history == [(0, 4), (0, 1), (1, 3), (1, 3), (1, 0)]
    assert (out["A"].ttft, out["A"].tpot) == (2.0, 1.0)
    assert (out["B"].ttft, out["B"].tpot) == (4.0, 1.0)
    assert out["A"].tokens == _reference(model, a, 3) and out["B"].tokens == _reference(model, b, 2)
    assert engine.paged.allocator.num_free == 8  # every block returned


@pytest.mark.parametrize("budget,num_blocks", [(8, 40), (64, 40), (8, 7)])
def test_outputs_equal_per_request_generation(model, budget, num_blocks):
    prompts = _prompts([13, 21, 7, 17, 9], seed=budget + num_blocks)
    n_new = [6, 3, 8, 5, 4]
    engine = ContinuousBatchingEngine(
        model, PagedKVCache.for_model(model.cfg, num_blocks, 4), token_budget=budget, max_batch=3
    )
    requests = [Request(f"r{i}", p, n, arrival=0.0) for i, (p, n) in enumerate(zip(prompts, n_new))]
    out = engine.run(requests)
    for i, (p, n) in enumerate(zip(prompts, n_new)):
        assert out[f"r{i}"].tokens == _reference(model, p, n), i
        assert out[f"r{i}"].ttft >= 0 and out[f"r{i}"].tpot is not None
    assert all(d + p <= budget for d, p in engine.history)  # the token budget holds
    assert all(d <= 3 for d, _ in engine.history)
    if num_blocks == 7:  # a tiny pool forces recompute preemption
        assert sum(o.preemptions for o in out.values()) > 0
    if budget == 8:  # decodes ride along with prefill chunks
        assert any(d > 0 and p > 0 for d, p in engine.history)
    assert engine.paged.allocator.num_free == num_blocks


def test_shared_prefix_is_computed_once(model):
    system = _prompts([10], seed=7)[0]
    tails = _prompts([3, 6, 5], seed=8)
    paged = PagedKVCache.for_model(model.cfg, 32, 4)
    engine = ContinuousBatchingEngine(model, paged, token_budget=6, max_batch=4)
    engine.register_prefix(system)
    prefix_blocks = list(paged.seqs["prefix-0"].blocks)
    out = engine.run([Request(f"r{i}", system + t, 4) for i, t in enumerate(tails)])
    for i, t in enumerate(tails):
        assert out[f"r{i}"].tokens == _reference(model, system + t, 4)
    assert sum(p for _, p in engine.history) == sum(len(t) for t in tails)  # only the tails were prefilled
    assert paged.copies == 3  # each request copied the half-filled third block of the prefix once
    assert all(paged.allocator.ref_count[blk] == 1 for blk in prefix_blocks)  # the prefix keeps its blocks


def test_bad_requests(model):
    engine = ContinuousBatchingEngine(model, PagedKVCache.for_model(model.cfg, 4, 4))
    with pytest.raises(ValueError):
        engine.run([Request("x", [], 3)])
    with pytest.raises(RuntimeError):  # a prompt that can never fit the pool
        ContinuousBatchingEngine(model, PagedKVCache.for_model(model.cfg, 2, 4)).run([Request("y", [1] * 20, 2)])
