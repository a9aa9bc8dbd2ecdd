"""Compressed KV caches inside the minimal LVLM: greedy decoding runs, stays within budget, and a budget that
covers everything reproduces the unmodified model's tokens exactly."""
import pytest
import torch

from reference_impls.decode.kv import (HybridKVCache, QuantizedKVCache, SinkWindowCache, generate_with_cache,
                                       h2o_cache, lightvlm_kv_cache, pyramid_budgets, pyramidkv_cache,
                                       snapkv_cache)
from reference_impls.models import LVLMConfig, MinimalLVLM
from reference_impls.ops.quant.kv_quant import KV_FORMATS
from tests.reference_impls._lvlm_prompts import image_prompt

N_NEW = 8
IMPL = "naive"  # the caches' own ops (compaction, chunk scoring, quantisation); kernels: test_ops_*



@pytest.fixture(scope="module")
def setup():
    # scores on the naive path: these tests exercise the caches, the score kernels are tested in test_ops_*
    model = MinimalLVLM(LVLMConfig.tiny(n_layers=4, init_std=0.1), seed=0, score_impl="naive")
    ids, lens, pix = image_prompt(model.cfg, [2, 5], [30, 26])
    ref = model.generate(ids, pix, lengths=lens, max_new_tokens=N_NEW)
    return model, ids, lens, pix, ref


def _gen(model, ids, lens, pix, cache, on_step=None, decode_hooks=()):
    return generate_with_cache(model, ids, pix, cache=cache, lengths=lens, max_new_tokens=N_NEW, on_step=on_step,
                               decode_hooks=decode_hooks)


FULL = {
    "h2o": lambda cfg: h2o_cache(cfg, 2, heavy=100, recent=10, impl=IMPL),
    "snapkv": lambda cfg: snapkv_cache(cfg, 2, budget=64, window=8, impl=IMPL),
    "pyramidkv": lambda cfg: pyramidkv_cache(cfg, 2, budget=64, window=8, impl=IMPL),
    "streaming": lambda cfg: SinkWindowCache.for_model(cfg, 2, n_sink=4, window=60),
    "streaming_rolled": lambda cfg: SinkWindowCache.for_model(cfg, 2, n_sink=4, window=60, pos_mode="rolled"),
    "lightvlm": lambda cfg: lightvlm_kv_cache(cfg, 2, gen_heavy=0, gen_recent=N_NEW, impl=IMPL),
    "hybrid_static": lambda cfg: HybridKVCache.for_model(cfg, 2, budget=64, force="static", impl=IMPL),
    "hybrid_dynamic": lambda cfg: HybridKVCache.for_model(cfg, 2, budget=64, force="dynamic", chunk_size=4, impl=IMPL),
}


@pytest.mark.parametrize("name", sorted(FULL))
def test_budget_covering_everything_is_identity(setup, name):
    model, ids, lens, pix, ref = setup
    cache = FULL[name](model.cfg)
    hooks = [cache.query_hook()] if isinstance(cache, HybridKVCache) else []
    out = _gen(model, ids, lens, pix, cache, decode_hooks=hooks)
    assert torch.equal(out, ref)
    if name == "hybrid_dynamic":
        assert cache.retrieval_steps == (N_NEW - 1) * model.cfg.n_layers   # the retrieval path really ran


SMALL = {
    "h2o": (lambda cfg: h2o_cache(cfg, 2, heavy=6, recent=4, impl=IMPL), lambda l, P: torch.full_like(P, 10)),
    "snapkv": (lambda cfg: snapkv_cache(cfg, 2, budget=12, window=4, impl=IMPL), lambda l, P: torch.full_like(P, 12)),
    "pyramidkv": (lambda cfg: pyramidkv_cache(cfg, 2, budget=12, window=4, impl=IMPL),
                  lambda l, P: torch.tensor([pyramid_budgets(4, 12, int(p), 4)[l] for p in P])),
    "lightvlm": (lambda cfg: lightvlm_kv_cache(cfg, 2, gen_heavy=1, gen_recent=2, impl=IMPL), lambda l, P: P + 3),
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_budget_runs_and_stays_within_budget(setup, name):
    model, ids, lens, pix, ref = setup
    make, budget_of = SMALL[name]
    cache = make(model.cfg)
    grows = name in ("snapkv", "pyramidkv")   # SnapKV/PyramidKV bound the prompt; decode rows are appended

    def check(step, c):
        for l in range(model.cfg.n_layers):
            bound = budget_of(l, lens) + (step if grows else 0)
            assert (c.lengths(l) <= bound[:, None]).all(), (name, step, l)

    out = _gen(model, ids, lens, pix, cache, on_step=check)
    assert out.shape == (2, N_NEW)
    assert sum(cache.compactions) > 0                          # compression actually happened
    assert cache.stored_tokens() < 4 * 2 * model.cfg.n_kv_heads * (int(lens.max()) + N_NEW)


def test_streaming_small_window_memory_is_flat(setup):
    model, ids, lens, pix, _ = setup
    cache = SinkWindowCache.for_model(model.cfg, 2, n_sink=2, window=6)
    before = cache.kv_bytes()
    _gen(model, ids, lens, pix, cache, on_step=lambda s, c: [(c.lengths(l) <= 8).all() or pytest.fail("over")
                                                             for l in range(4)])
    assert cache.kv_bytes() == before


@pytest.mark.parametrize("make", [lambda cfg, b: h2o_cache(cfg, b, heavy=5, recent=3, impl=IMPL),
                                  lambda cfg, b: snapkv_cache(cfg, b, budget=10, window=3, impl=IMPL)])
def test_ragged_batch_equals_single_rows(setup, make):
    model, ids, lens, pix, _ = setup
    both = _gen(model, ids, lens, pix, make(model.cfg, 2))
    for b in range(2):
        n = int(lens[b])
        one = generate_with_cache(model, ids[b:b + 1, :n], pix[b:b + 1], cache=make(model.cfg, 1),
                                  max_new_tokens=N_NEW)
        assert torch.equal(one[0], both[b])


def test_hybridkv_static_pruning_and_retrieval(setup):
    model, ids, lens, pix, _ = setup
    cache = HybridKVCache.for_model(model.cfg, 2, budget=18, tau=0.0, n_sink=1, n_recent=2, chunk_size=4,
                                    impl=IMPL)
    _gen(model, ids, lens, pix, cache, decode_hooks=[cache.query_hook()])
    assert all(bool(s.all()) for s in cache.static)                       # tau = 0: every head static
    prompt = lens[:, None]
    assert all(bool((p < prompt).all()) for p in cache.prompt_len)          # static heads were compacted
    # per-head ragged lengths: heads of a layer may differ (AdaKV-style split), no fake keys
    assert all(b.sum(-1).le(2 * 18).all() for b in cache.head_budget)
    mixed = HybridKVCache.for_model(model.cfg, 2, budget=6, tau=0.35, chunk_size=4, impl=IMPL)
    out = _gen(model, ids, lens, pix, mixed, decode_hooks=[mixed.query_hook()])
    assert out.shape == (2, N_NEW) and mixed.retrieval_steps > 0
    sel = [s for s in mixed.last_selection if s is not None]
    assert sel and all(bool((s >= -1).all()) for s in sel)


def _teacher_forced_logits(model, ids, lens, pix, ref, cache):
    res = model.prefill(ids, pix, lengths=lens, cache=cache)
    logits = [res.logits]
    for t in range(ref.shape[1] - 1):
        logits.append(model.decode_step(ref[:, t], cache))
    return torch.stack(logits, 1)


@pytest.mark.parametrize("fmt,min_agree", [("int8", 0.99), ("fp8_e4m3", 0.9)])
def test_quantized_cache_in_model(setup, fmt, min_agree):
    model, ids, lens, pix, ref = setup
    base = _teacher_forced_logits(model, ids, lens, pix, ref, model.new_cache(2, 64))
    cache = QuantizedKVCache.for_model(model.cfg, 2, 64, fmt=fmt, impl=IMPL)
    got = _teacher_forced_logits(model, ids, lens, pix, ref, cache)
    assert (got.argmax(-1) == base.argmax(-1)).float().mean() >= min_agree
    assert torch.nn.functional.cosine_similarity(got, base, dim=-1).min() > 0.995
    assert cache.kv_bytes() * 3 < model.new_cache(2, 64).keys[0].numel() * 4 * 2 * model.cfg.n_layers
    # the in-kernel-dequantising decode attention agrees with attention over the dequantised copy
    q = torch.randn(2, model.cfg.n_heads, model.cfg.head_dim)
    from reference_impls.ops.decode_attention import dequantize_kv, naive_decode_attention
    lk = cache.max_length_bound(0)
    ref_o, _ = naive_decode_attention(q, dequantize_kv(cache.keys[0][:, :, :lk], cache.k_scale[0][:, :, :lk]),
                                      dequantize_kv(cache.values[0][:, :, :lk], cache.v_scale[0][:, :, :lk]),
                                      cache.lengths(0))
    assert torch.allclose(cache.attend(0, q, impl="naive"), ref_o, atol=1e-5)


def test_bad_arguments(setup):
    model = setup[0]
    with pytest.raises(ValueError, match="force"):
        HybridKVCache.for_model(model.cfg, 1, force="both")
    with pytest.raises(ValueError, match="budget_ratio"):
        HybridKVCache.for_model(model.cfg, 1, budget_ratio=0.0)
    with pytest.raises(ValueError, match="fmt"):
        QuantizedKVCache.for_model(model.cfg, 1, 8, fmt="int4")
    with pytest.raises(ValueError, match="gen_heavy"):
        lightvlm_kv_cache(model.cfg, 1, gen_heavy=-2)
    cache = h2o_cache(model.cfg, 1, heavy=2, recent=2)
    with pytest.raises(ValueError, match="do not match"):
        cache.update(0, torch.zeros(2, 2, 1, 16), torch.zeros(2, 2, 1, 16), torch.zeros(2, 1, dtype=torch.long),
                     torch.ones(2, dtype=torch.long))
    with pytest.raises(NotImplementedError):
        cache.rollback(1)
    qc = QuantizedKVCache.for_model(model.cfg, 1, 4)
    with pytest.raises(ValueError, match="overflow"):
        qc.update(0, torch.zeros(1, 2, 5, 16), torch.zeros(1, 2, 5, 16), torch.zeros(1, 5, dtype=torch.long),
                  torch.full((1,), 5))


@pytest.mark.parametrize("fmt", ["int8", "fp8_e4m3"])
def test_policies_compose_with_quantized_storage(setup, fmt):
    """kv_format composes with any policy: H2O / HybridKV over an int8/fp8 store with budget >= length give the
    same tokens as the plain quantised cache; a small H2O budget compacts quantised rows and their scales."""
    model, ids, lens, pix, _ = setup
    ref = _gen(model, ids, lens, pix, QuantizedKVCache.for_model(model.cfg, 2, 64, fmt=fmt, impl=IMPL))
    full = h2o_cache(model.cfg, 2, heavy=100, recent=10, impl=IMPL, kv_format=fmt)
    assert torch.equal(_gen(model, ids, lens, pix, full), ref)
    hyb = HybridKVCache.for_model(model.cfg, 2, budget=64, force="dynamic", chunk_size=4, impl=IMPL, kv_format=fmt)
    assert torch.equal(_gen(model, ids, lens, pix, hyb, decode_hooks=[hyb.query_hook()]), ref)
    small = h2o_cache(model.cfg, 2, heavy=5, recent=3, impl=IMPL, kv_format=fmt)
    _gen(model, ids, lens, pix, small, on_step=lambda s, c: [(c.lengths(l) <= 8).all() or pytest.fail("over")
                                                            for l in range(4)])
    assert small.keys[0].dtype == KV_FORMATS[fmt][0] and sum(small.compactions) > 0
    fp = h2o_cache(model.cfg, 2, heavy=5, recent=3, impl=IMPL)
    _gen(model, ids, lens, pix, fp)
    assert small.kv_bytes() * 2 < fp.kv_bytes()                 # 1 byte + scales vs 4 bytes per element
    # serving path: in-kernel dequantisation over the compacted, ragged quantised rows
    from reference_impls.ops.decode_attention import dequantize_kv, naive_decode_attention
    q = torch.randn(2, model.cfg.n_heads, model.cfg.head_dim)
    lk = small.max_length_bound(0)
    ref_o, _ = naive_decode_attention(q, dequantize_kv(small.keys[0][:, :, :lk], small.k_scale[0][:, :, :lk]),
                                      dequantize_kv(small.values[0][:, :, :lk], small.v_scale[0][:, :, :lk]),
                                      small.lengths(0))
    assert torch.allclose(small.attend(0, q), ref_o, atol=1e-5)


@pytest.mark.parametrize("fmt", [None, "int8"])
def test_packed_layout_equals_padded_and_stores_less(setup, fmt):
    """layout="packed": after prefill each KV head keeps only its own rows (+ slack) in flat buffers; decoding
    gives the same tokens as the padded layout, allocates less for ragged per-head budgets, and attend() (the
    packed split-K kernel) matches the padded one."""
    model, ids, lens, pix, _ = setup
    force = torch.tensor([True, False])                 # one static (pruned) and one dynamic (full) head
    outs, caches = [], []
    for layout in ("padded", "packed"):
        c = HybridKVCache.for_model(model.cfg, 2, budget=6, chunk_size=4, force=force, impl=IMPL, layout=layout,
                                    kv_format=fmt)
        outs.append(_gen(model, ids, lens, pix, c, decode_hooks=[c.query_hook()]))
        caches.append(c)
    assert torch.equal(outs[0], outs[1])
    padded, packed = caches
    assert all(torch.equal(padded.lengths(l), packed.lengths(l)) for l in range(model.cfg.n_layers))
    assert packed.kv_bytes(allocated=True) < padded.kv_bytes(allocated=True)
    snap = [snapkv_cache(model.cfg, 2, budget=12, window=4, impl=IMPL, layout=lay, kv_format=fmt)
            for lay in ("padded", "packed")]
    assert torch.equal(_gen(model, ids, lens, pix, snap[0]), _gen(model, ids, lens, pix, snap[1]))
    q = torch.randn(2, model.cfg.n_heads, model.cfg.head_dim)
    for l in range(model.cfg.n_layers):
        assert torch.allclose(snap[0].attend(l, q, impl="naive"), snap[1].attend(l, q, impl="triton"), atol=1e-5)
    with pytest.raises(ValueError, match="packed"):
        h2o_cache(model.cfg, 2, heavy=4, recent=4, layout="packed")
