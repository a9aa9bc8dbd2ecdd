"""Minimal LVLM: presets, ragged batches, prefill+decode vs recompute, decoder-only use, cache protocol."""

import pytest
import torch

from reference_impls.models import KVCache, LVLMConfig, MinimalLVLM, StaticKVCache, VisionConfig
from reference_impls.models.minimal_lvlm import chunk_attention_mask, rows_colsum, slots_to_chunk
from tests.reference_impls._utils import eager_attention_probs, randn


def _prompt(cfg, starts, lengths, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.image_token_id, (len(starts), width), generator=g)
    for b, s in enumerate(starts):
        ids[b, s : s + cfg.n_visual_tokens] = cfg.image_token_id
    return ids, torch.tensor(lengths)


@pytest.fixture(scope="module")
def tiny():
    return MinimalLVLM(LVLMConfig.tiny(init_std=0.1), seed=0)


@pytest.fixture(scope="module")
def qwen_like():
    vc = VisionConfig(
        image_size=32,
        patch_size=8,
        n_layers=2,
        width=32,
        n_heads=2,
        mlp_dim=48,
        use_cls=False,
        norm="rmsnorm",
        mlp_act="swiglu",
        pre_norm=False,
        feature_layer=-1,
    )
    cfg = LVLMConfig(
        vocab_size=300,
        hidden=48,
        n_layers=3,
        n_heads=6,
        n_kv_heads=2,
        intermediate=96,
        qkv_bias=True,
        vision=vc,
        projector="patch_merger",
        merge_size=2,
        image_token_id=299,
        rope_theta=1e6,
        init_std=0.1,
    )
    return MinimalLVLM(cfg, seed=1)


def test_presets_match_public_shapes():
    llava = LVLMConfig.llava_1_5_7b()
    assert (llava.n_layers, llava.hidden, llava.n_heads, llava.n_kv_heads, llava.intermediate, llava.vocab_size) == (
        32,
        4096,
        32,
        32,
        11008,
        32000,
    )
    assert llava.vision.n_encoder_tokens == 577 and llava.n_visual_tokens == 576
    assert (llava.vision.n_layers, llava.vision.width, llava.vision.n_layers_run) == (24, 1024, 23)
    qwen = LVLMConfig.qwen2_5_vl_7b()
    assert (qwen.n_layers, qwen.hidden, qwen.n_heads, qwen.n_kv_heads, qwen.intermediate, qwen.vocab_size) == (
        28,
        3584,
        28,
        4,
        18944,
        152064,
    )
    assert qwen.head_dim == 128 and qwen.vision.width == 1280 and qwen.vision.n_layers == 32
    assert qwen.n_visual_tokens == 256 and not qwen.vision.use_cls


@pytest.mark.parametrize(
    "kw", [dict(hidden=65), dict(n_kv_heads=3), dict(projector="qformer"), dict(image_token_id=10_000)]
)
def test_bad_config_raises(kw):
    with pytest.raises(ValueError):
        LVLMConfig.tiny(**kw)


@pytest.mark.parametrize("fixture", ["tiny", "qwen_like"])
def test_ragged_batch_equals_single_runs(fixture, request):
    model = request.getfixturevalue(fixture)
    cfg = model.cfg
    nv = cfg.n_visual_tokens
    ids, lengths = _prompt(cfg, starts=[1, 6], lengths=[nv + 9, nv + 13], width=nv + 13)
    pix = randn(2, 3, cfg.vision.image_size, cfg.vision.image_size, seed=3)
    with torch.no_grad():
        res = model.prefill(ids, pix, lengths=lengths)
        gen = model.generate(ids, pix, lengths=lengths, max_new_tokens=4)
        for b in range(2):
            n = int(lengths[b])
            single = model.prefill(ids[b : b + 1, :n], pix[b : b + 1])
            torch.testing.assert_close(res.logits[b], single.logits[0], rtol=1e-4, atol=1e-5)
            assert torch.equal(gen[b], model.generate(ids[b : b + 1, :n], pix[b : b + 1], max_new_tokens=4)[0])
    assert res.layer_tokens.tolist() == [lengths.tolist()] * cfg.n_layers


def test_prefill_decode_equals_full_recompute(tiny):
    cfg = tiny.cfg
    ids, lengths = _prompt(cfg, starts=[2, 4], lengths=[27, 23], width=27, seed=1)
    pix = randn(2, 3, 32, 32, seed=4)
    with torch.no_grad():
        gen = tiny.generate(ids, pix, lengths=lengths, max_new_tokens=5)
        cache = tiny.new_cache(2, 40)
        res = tiny.prefill(ids, pix, lengths=lengths, cache=cache)
        step_logits = [res.logits]
        for t in range(4):
            step_logits.append(tiny.decode_step(gen[:, t], cache))
        feats = tiny.encode_images(pix)
        for b in range(2):
            n = int(lengths[b])
            seq = torch.cat([ids[b, :n], gen[b, :4]])
            emb, vis = tiny.embed(seq[None], feats[b : b + 1])
            full = tiny.forward_tokens(inputs_embeds=emb)[0, n - 1 :]
            torch.testing.assert_close(torch.stack([s[b] for s in step_logits]), full, rtol=1e-4, atol=1e-5)
            assert torch.equal(full.argmax(-1), gen[b])


def test_decoder_only_chunked_prefill_and_rollback(tiny):
    ids = torch.randint(0, 200, (2, 20), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        full = tiny.forward_tokens(input_ids=ids)
        cache = tiny.new_cache(2, 32)
        a = tiny.forward_tokens(input_ids=ids[:, :11], cache=cache)
        b = tiny.forward_tokens(input_ids=ids[:, 11:], cache=cache)
        torch.testing.assert_close(torch.cat([a, b], 1), full, rtol=1e-4, atol=1e-5)
        assert cache.lengths(0).tolist() == [20, 20] and cache.next_position.tolist() == [20, 20]
        # speculative-style: append 3 tokens, roll back 2, re-append: same logits as a clean run
        extra = torch.randint(0, 200, (2, 3), generator=torch.Generator().manual_seed(8))
        tiny.forward_tokens(input_ids=extra, cache=cache)
        cache.rollback(2)
        assert cache.lengths(3).tolist() == [21, 21]
        again = tiny.forward_tokens(input_ids=extra[:, 1:], cache=cache)
        clean = tiny.forward_tokens(input_ids=torch.cat([ids, extra], 1))[:, 21:]
        torch.testing.assert_close(again, clean, rtol=1e-4, atol=1e-5)


def test_tree_chunk_mask_matches_separate_branches(tiny):
    prefix = torch.randint(0, 200, (1, 9), generator=torch.Generator().manual_seed(9))
    # chunk [x, y1, y2]: y1 and y2 are siblings after x (a tree of depth 2)
    x, y1, y2 = 11, 22, 33
    mask = torch.tensor([[True, False, False], [True, True, False], [True, False, True]])[None]
    with torch.no_grad():
        cache = tiny.new_cache(1, 16)
        tiny.forward_tokens(input_ids=prefix, cache=cache)
        pos = cache.next_position[:, None] + torch.tensor([[0, 1, 1]])
        tree = tiny.forward_tokens(input_ids=torch.tensor([[x, y1, y2]]), positions=pos, cache=cache, chunk_mask=mask)
        ref1 = tiny.forward_tokens(input_ids=torch.cat([prefix, torch.tensor([[x, y1]])], 1))[0, -2:]
        ref2 = tiny.forward_tokens(input_ids=torch.cat([prefix, torch.tensor([[x, y2]])], 1))[0, -1]
    torch.testing.assert_close(tree[0, :2], ref1, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(tree[0, 2], ref2, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kv_per_head", [False, True])
def test_rows_colsum_matches_eager(kv_per_head):
    B, Hq, Hkv, T, D, old = 3, 4, 2, 63, 16, 5
    q = randn(B, Hq, T, D, seed=1)
    k = randn(B, Hkv, T + old + 2, D, seed=2)
    v = randn(B, Hkv, T + old + 2, D, seed=3)
    kv_len = torch.tensor([T + old, T + old + 2, T])  # written lengths: old + T
    if kv_per_head:
        kv_len = torch.stack([kv_len, kv_len - 1], 1).clamp(min=T)
    rows = torch.zeros(B, T, dtype=torch.bool)
    rows[0, [3, 40, 62]] = True  # scattered rows (window with negative start for other rows)
    rows[1, 62] = True  # a single last row
    rows[2, [0, 1]] = True
    got = rows_colsum(q, k, v, kv_len, rows, impl="naive")
    probs = eager_attention_probs(q, k, kv_lengths=kv_len)  # [B, Hq, T, Lk]
    want = (probs * rows[:, None, :, None]).sum(2)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)
    chunk = slots_to_chunk(got, kv_len, T)
    assert chunk.shape == (B, Hq, T)


def test_chunk_attention_mask_bottom_right():
    m = chunk_attention_mask(torch.tensor([5, 3]), T=2, Lk=5)
    assert m[0, 0, 0].tolist() == [True, True, True, True, False]
    assert m[1, 0, 1].tolist() == [True, True, True, False, False]


class _RecordingCache(StaticKVCache):
    """A scoring cache: asks for the last row's attention at every layer and records what it gets."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.seen = {}

    def wants_scores(self, layer, n_new, chunk_len):
        rows = torch.zeros(len(n_new), chunk_len, dtype=torch.bool)
        rows[torch.arange(len(n_new)), n_new - 1] = True
        return rows

    def observe_scores(self, layer, colsum, score_rows):
        self.seen[layer] = colsum


def test_cache_scoring_protocol(tiny):
    cfg = tiny.cfg
    ids = torch.randint(0, 200, (2, 12), generator=torch.Generator().manual_seed(3))
    cache = _RecordingCache.for_model(cfg, 2, 20)
    assert isinstance(cache, KVCache)
    with torch.no_grad():
        tiny.forward_tokens(input_ids=ids, cache=cache, lengths=torch.tensor([12, 7]))
    assert sorted(cache.seen) == list(range(cfg.n_layers))
    cs = cache.seen[0]
    # probabilities of one query row sum to one per head
    torch.testing.assert_close(cs.sum(-1), torch.ones(2, cfg.n_heads), rtol=1e-5, atol=1e-5)
    assert torch.all(cs[1, :, 7:] == 0)  # row 1's padding keys get no mass


def test_bad_inputs_raise(tiny):
    cfg = tiny.cfg
    ids, lengths = _prompt(cfg, starts=[1], lengths=[20], width=20)
    pix = randn(1, 3, 32, 32)
    with pytest.raises(ValueError):
        tiny.prefill(ids, randn(2, 3, 32, 32))  # 32 visual tokens for 16 placeholders
    with pytest.raises(ValueError):
        tiny.prefill(ids, randn(1, 3, 30, 32))  # wrong image size
    with pytest.raises(ValueError):
        tiny.prefill(ids, pix, lengths=torch.tensor([21]))  # length > width
    with pytest.raises(ValueError):
        tiny.prefill(ids, pix, cache=tiny.new_cache(1, 10))  # cache overflow
    with pytest.raises(ValueError):
        tiny.forward_tokens(input_ids=ids, inputs_embeds=torch.zeros(1, 20, cfg.hidden))
    with pytest.raises(ValueError):
        tiny.forward_tokens(input_ids=ids, positions=torch.zeros(1, 3, dtype=torch.long))


@pytest.mark.gpu
def test_gpu_prefill_decode_and_bf16():
    cfg = LVLMConfig.tiny(init_std=0.1)
    cpu = MinimalLVLM(cfg, seed=0)
    gpu32 = MinimalLVLM(cfg, seed=0, device="cuda")
    gpu16 = MinimalLVLM(cfg, seed=0, device="cuda", dtype=torch.bfloat16)
    for p_gpu, p_cpu in zip(gpu32.parameters(), cpu.parameters()):
        p_gpu.data.copy_(p_cpu.data)
    for p_gpu, p_cpu in zip(gpu16.parameters(), cpu.parameters()):
        p_gpu.data.copy_(p_cpu.data)
    ids, lengths = _prompt(cfg, starts=[1, 6], lengths=[29, 25], width=29)
    pix = randn(2, 3, 32, 32, seed=3)
    with torch.no_grad():
        ref = cpu.prefill(ids, pix, lengths=lengths)
        got32 = gpu32.prefill(ids.cuda(), pix.cuda(), lengths=lengths.cuda())
        got16 = gpu16.prefill(ids.cuda(), pix.cuda(), lengths=lengths.cuda())
        torch.testing.assert_close(got32.logits.cpu(), ref.logits, rtol=1e-3, atol=1e-4)
        from tests.reference_impls._utils import rel_rms_err

        assert rel_rms_err(got16.logits.cpu(), ref.logits) < 5e-2
        gen = gpu32.generate(ids.cuda(), pix.cuda(), lengths=lengths.cuda(), max_new_tokens=4).cpu()
        assert torch.equal(gen, cpu.generate(ids, pix, lengths=lengths, max_new_tokens=4))


@pytest.mark.gpu
def test_gpu_llava_shaped_decoder_smoke():
    """Real LLaVA-1.5-7B decoder widths (4 of its 32 layers) in bf16 on the GPU: prefill + decode run."""
    cfg = LVLMConfig.llava_1_5_7b(n_layers=4)
    cfg.vision.n_layers = 2
    model = MinimalLVLM(cfg, seed=0, device="cuda", dtype=torch.bfloat16)
    ids, _ = _prompt(cfg, starts=[3], lengths=[640], width=640)
    with torch.no_grad():
        res = model.prefill(ids.cuda(), torch.randn(1, 3, 336, 336, device="cuda"), capacity=700)
        step = model.decode_step(res.logits.argmax(-1), res.cache)
    assert res.logits.shape == (1, 32000) and torch.isfinite(step).all()
    assert res.cache.lengths(3).tolist() == [641]
