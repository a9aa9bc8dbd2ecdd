"""KV techniques inside the minimal LVLM: greedy decoding runs, stays within budget and really evicts, and a budget
that covers everything reproduces the unmodified model's tokens exactly."""

import pytest
import torch

from reference_impls.decode.kv import H2O, HybridKV, KVQuant, LightVLMKV, PyramidKV, SnapKV, StreamingLLM
from reference_impls.decode.kv.base import CompressedKVCache
from reference_impls.decode.kv.hybridkv import HybridKVCache
from reference_impls.decode.kv.pyramidkv import pyramid_budgets
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


def _gen(model, ids, lens, pix, technique, on_step=None):
    """Greedy generation with ``technique`` attached; returns (tokens, the cache of that generation)."""
    seen = {}

    def record(step, cache):
        seen["cache"] = cache
        if on_step is not None:
            on_step(step, cache)

    with technique(model):
        out = model.generate(ids, pix, lengths=lens, max_new_tokens=N_NEW, on_step=record)
    return out, seen["cache"]


FULL = {
    "h2o": H2O(heavy=100, recent=10, impl=IMPL),
    "snapkv": SnapKV(budget=64, window=8, impl=IMPL),
    "pyramidkv": PyramidKV(budget=64, window=8, impl=IMPL),
    "streaming": StreamingLLM(n_sink=4, window=60, pos_mode="original"),
    "streaming_rolled": StreamingLLM(n_sink=4, window=60, pos_mode="rolled"),
    "lightvlm": LightVLMKV(gen_heavy=0, gen_recent=N_NEW, impl=IMPL),
    "hybrid_static": HybridKV(budget=64, force="static", impl=IMPL),
    "hybrid_dynamic": HybridKV(budget=64, force="dynamic", chunk_size=4, impl=IMPL),
}


@pytest.mark.parametrize("name", sorted(FULL))
def test_budget_covering_everything_is_identity(setup, name):
    model, ids, lens, pix, ref = setup
    out, cache = _gen(model, ids, lens, pix, FULL[name])
    assert torch.equal(out, ref)
    full = lens + N_NEW - 1  # every prompt row and every generated token but the last one fed back
    assert all(torch.equal(cache.lengths(l).reshape(2, -1)[:, 0], full) for l in range(model.cfg.n_layers))
    if name == "hybrid_dynamic":
        assert cache.retrieval_steps == (N_NEW - 1) * model.cfg.n_layers  # the retrieval path really ran


SMALL = {
    "h2o": (H2O(heavy=6, recent=4, impl=IMPL), lambda l, P: torch.full_like(P, 10)),
    "snapkv": (SnapKV(budget=12, window=4, impl=IMPL), lambda l, P: torch.full_like(P, 12)),
    "pyramidkv": (
        PyramidKV(budget=12, window=4, impl=IMPL),
        lambda l, P: torch.tensor([pyramid_budgets(4, 12, int(p), 4)[l] for p in P]),
    ),
    "lightvlm": (LightVLMKV(gen_heavy=1, gen_recent=2, impl=IMPL), lambda l, P: P + 3),
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_budget_runs_stays_within_and_fills_its_budget(setup, name):
    """At every step every layer holds at most its budget, and -- so that a cache that evicted everything fails --
    exactly the budget once the sequence is longer than it."""
    model, ids, lens, pix, ref = setup
    technique, budget_of = SMALL[name]
    grows = name in ("snapkv", "pyramidkv")  # SnapKV/PyramidKV bound the prompt; decode rows are appended
    checked = []

    def check(step, c):
        for l in range(model.cfg.n_layers):
            bound = budget_of(l, lens) + (step if grows else 0)
            seq = lens + step  # rows an uncompressed cache would hold
            want = torch.minimum(bound, seq)[:, None].expand(2, model.cfg.n_kv_heads)
            assert torch.equal(c.lengths(l), want), (name, step, l, c.lengths(l).tolist(), want.tolist())
        checked.append(step)

    out, cache = _gen(model, ids, lens, pix, technique, on_step=check)
    assert out.shape == (2, N_NEW) and checked == list(range(N_NEW))
    assert sum(cache.compactions) > 0  # compression actually happened
    assert cache.stored_tokens() < 4 * 2 * model.cfg.n_kv_heads * (int(lens.max()) + N_NEW)


def test_streaming_small_window_memory_is_flat(setup):
    model, ids, lens, pix, _ = setup
    sizes = []

    def check(step, c):
        assert all(bool((c.lengths(l) == torch.clamp(lens + step, max=8)).all()) for l in range(4))
        sizes.append(c.kv_bytes())

    _gen(model, ids, lens, pix, StreamingLLM(n_sink=2, window=6), on_step=check)
    assert len(set(sizes)) == 1


@pytest.mark.parametrize("technique", [H2O(heavy=5, recent=3, impl=IMPL), SnapKV(budget=10, window=3, impl=IMPL)])
def test_ragged_batch_equals_single_rows(setup, technique):
    model, ids, lens, pix, _ = setup
    both, _ = _gen(model, ids, lens, pix, technique)
    for b in range(2):
        n = int(lens[b])
        one, _ = _gen(model, ids[b : b + 1, :n], None, pix[b : b + 1], technique)
        assert torch.equal(one[0], both[b])


def test_hybridkv_static_pruning_and_retrieval(setup):
    model, ids, lens, pix, _ = setup
    _, cache = _gen(model, ids, lens, pix, HybridKV(budget=18, tau=0.0, n_sink=1, n_recent=2, chunk_size=4, impl=IMPL))
    assert all(bool(s.all()) for s in cache.static)  # tau = 0: every head static
    prompt = lens[:, None]
    assert all(bool((p < prompt).all()) for p in cache.prompt_len)  # static heads were compacted
    # per-head ragged lengths: heads of a layer may differ (AdaKV-style split), no fake keys
    assert all(b.sum(-1).le(2 * 18).all() for b in cache.head_budget)
    out, mixed = _gen(model, ids, lens, pix, HybridKV(budget=6, tau=0.35, chunk_size=4, impl=IMPL))
    assert out.shape == (2, N_NEW) and mixed.retrieval_steps > 0
    sel = [s for s in mixed.last_selection if s is not None]
    assert sel and all(bool((s >= -1).all()) for s in sel)


def _teacher_forced_logits(model, ids, lens, pix, ref, cache):
    res = model.prefill(ids, pix, lengths=lens, cache=cache)
    logits = [res.logits]
    for t in range(ref.shape[1] - 1):
        logits.append(model.decode_step(ref[:, t], cache))
    return torch.stack(logits, 1)


def _spec(model):
    return model.cache_spec()


@pytest.mark.parametrize("fmt,min_agree", [("int8", 0.99), ("fp8_e4m3", 0.9)])
def test_quantized_cache_in_model(setup, fmt, min_agree):
    model, ids, lens, pix, ref = setup
    base = _teacher_forced_logits(model, ids, lens, pix, ref, model.new_cache(2, 64))
    cache = KVQuant(fmt=fmt, impl=IMPL).make_cache(_spec(model), 2)
    got = _teacher_forced_logits(model, ids, lens, pix, ref, cache)
    assert (got.argmax(-1) == base.argmax(-1)).float().mean() >= min_agree
    assert torch.nn.functional.cosine_similarity(got, base, dim=-1).min() > 0.995
    assert cache.keys[0].dtype == KV_FORMATS[fmt][0]
    assert cache.kv_bytes() * 3 < cache.stored_tokens() * model.cfg.head_dim * 4 * 2  # vs the rows in fp32
    # the in-kernel-dequantising decode attention agrees with attention over the dequantised copy
    q = torch.randn(2, model.cfg.n_heads, model.cfg.head_dim)
    from reference_impls.ops.decode_attention import dequantize_kv, naive_decode_attention

    lk = cache.max_length_bound(0)
    ref_o, _ = naive_decode_attention(
        q,
        dequantize_kv(cache.keys[0][:, :, :lk], cache.k_scale[0][:, :, :lk]),
        dequantize_kv(cache.values[0][:, :, :lk], cache.v_scale[0][:, :, :lk]),
        cache.lengths(0),
    )
    assert torch.allclose(cache.attend(0, q, impl="naive"), ref_o, atol=1e-5)


def test_bad_arguments(setup):
    model = setup[0]
    with pytest.raises(ValueError, match="force"):
        HybridKV(force="both")
    with pytest.raises(ValueError, match="budget_ratio"):
        HybridKV(budget_ratio=0.0)
    with pytest.raises(ValueError, match="fmt"):
        KVQuant(fmt="int4")
    with pytest.raises(ValueError, match="gen_heavy"):
        LightVLMKV(gen_heavy=-2)
    cache = H2O(heavy=2, recent=2).make_cache(_spec(model), 1)
    with pytest.raises(ValueError, match="do not match"):
        cache.update(
            0,
            torch.zeros(2, 2, 1, 16),
            torch.zeros(2, 2, 1, 16),
            torch.zeros(2, 1, dtype=torch.long),
            torch.ones(2, dtype=torch.long),
        )
    with pytest.raises(NotImplementedError):
        cache.rollback(1)
    with pytest.raises(RuntimeError, match="already attached"):
        with H2O()(model), SnapKV()(model):
            pass
    assert model.techniques == []  # both detached on the way out


@pytest.mark.parametrize("fmt", ["int8", "fp8_e4m3"])
def test_policies_compose_with_quantized_storage(setup, fmt):
    """kv_format composes with any policy: H2O / HybridKV over an int8/fp8 store with budget >= length give the
    same tokens as the plain quantised cache; a small H2O budget compacts quantised rows and their scales."""
    model, ids, lens, pix, _ = setup
    spec = _spec(model)

    def with_format(policy):
        return CompressedKVCache(policy, spec.n_layers, 2, spec.n_kv_heads, spec.head_dim, kv_format=fmt, impl=IMPL)

    def gen(cache, on_step=None):
        return model.generate(ids, pix, lengths=lens, max_new_tokens=N_NEW, cache=cache, on_step=on_step)

    ref, _ = _gen(model, ids, lens, pix, KVQuant(fmt=fmt, impl=IMPL))
    assert torch.equal(gen(with_format(H2O(heavy=100, recent=10))), ref)
    hyb = HybridKVCache(
        spec.n_layers,
        2,
        spec.n_kv_heads,
        spec.head_dim,
        budget=64,
        force="dynamic",
        chunk_size=4,
        impl=IMPL,
        kv_format=fmt,
    )
    assert torch.equal(gen(hyb), ref)
    small = with_format(H2O(heavy=5, recent=3))
    gen(small, on_step=lambda s, c: [(c.lengths(l) <= 8).all() or pytest.fail("over") for l in range(4)])
    assert small.keys[0].dtype == KV_FORMATS[fmt][0] and sum(small.compactions) > 0
    fp = CompressedKVCache(H2O(heavy=5, recent=3), spec.n_layers, 2, spec.n_kv_heads, spec.head_dim, impl=IMPL)
    gen(fp)
    assert small.kv_bytes() * 2 < fp.kv_bytes()  # 1 byte + scales vs 4 bytes per element
    # serving path: in-kernel dequantisation over the compacted, ragged quantised rows
    from reference_impls.ops.decode_attention import dequantize_kv, naive_decode_attention

    q = torch.randn(2, model.cfg.n_heads, model.cfg.head_dim)
    lk = small.max_length_bound(0)
    ref_o, _ = naive_decode_attention(
        q,
        dequantize_kv(small.keys[0][:, :, :lk], small.k_scale[0][:, :, :lk]),
        dequantize_kv(small.values[0][:, :, :lk], small.v_scale[0][:, :, :lk]),
        small.lengths(0),
    )
    assert torch.allclose(small.attend(0, q), ref_o, atol=1e-5)


@pytest.mark.parametrize("fmt", [None, "int8"])
def test_packed_layout_equals_padded_and_stores_less(setup, fmt):
    """layout="packed": after prefill each KV head keeps only its own rows (+ slack) in flat buffers; decoding
    gives the same tokens as the padded layout, allocates less for ragged per-head budgets, and attend() (the
    packed split-K kernel) matches the padded one."""
    model, ids, lens, pix, _ = setup
    spec = _spec(model)
    force = torch.tensor([True, False])  # one static (pruned) and one dynamic (full) head
    outs, caches = [], []
    for layout in ("padded", "packed"):
        c = HybridKVCache(
            spec.n_layers,
            2,
            spec.n_kv_heads,
            spec.head_dim,
            budget=6,
            chunk_size=4,
            force=force,
            impl=IMPL,
            layout=layout,
            kv_format=fmt,
        )
        outs.append(model.generate(ids, pix, lengths=lens, max_new_tokens=N_NEW, cache=c))
        caches.append(c)
    assert torch.equal(outs[0], outs[1])
    padded, packed = caches
    assert all(torch.equal(padded.lengths(l), packed.lengths(l)) for l in range(model.cfg.n_layers))
    assert packed.kv_bytes(allocated=True) < padded.kv_bytes(allocated=True)
    snap = [
        CompressedKVCache(
            SnapKV(budget=12, window=4),
            spec.n_layers,
            2,
            spec.n_kv_heads,
            spec.head_dim,
            impl=IMPL,
            layout=lay,
            kv_format=fmt,
        )
        for lay in ("padded", "packed")
    ]
    assert torch.equal(*(model.generate(ids, pix, lengths=lens, max_new_tokens=N_NEW, cache=c) for c in snap))
    q = torch.randn(2, model.cfg.n_heads, model.cfg.head_dim)
    for l in range(model.cfg.n_layers):
        assert torch.allclose(snap[0].attend(l, q, impl="naive"), snap[1].attend(l, q, impl="triton"), atol=1e-5)
    with pytest.raises(ValueError, match="packed"):
        CompressedKVCache(H2O(heavy=4, recent=4), 1, 2, 2, 16, layout="packed")
