"""HF adapters on a tiny random-weight LlavaForConditionalGeneration (no downloads, no tokenizer files).

The reference for the LLM-side pruning is an independent manual forward: the decoder layers are called one by one
in eager attention, the scores are the eager attention weights of the scoring layer, the kept rows are sliced
directly, and the rotary tables keep the original positions.
"""
import copy
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

from reference_impls.adapters import CompressionError, FastVAdapter, PyramidDropAdapter, VisionZipAdapter  # noqa: E402
from reference_impls.adapters._hooks import find_language_model  # noqa: E402
from reference_impls.encode import visionzip as vz  # noqa: E402

IMAGE = 120
PATCHES = 16  # 32x32 image, 8x8 patches


def tiny_llava(attn="sdpa", strategy="default", seed=0):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                              image_size=32, patch_size=8, projection_dim=32)
    text = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=128, max_position_embeddings=256, pad_token_id=0,
                       bos_token_id=1, eos_token_id=2)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=IMAGE, projector_hidden_act="gelu",
                      vision_feature_layer=-2, vision_feature_select_strategy=strategy)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg).eval()
    set_attention(model, attn)
    return model


def set_attention(model, attn):
    """``set_attn_implementation`` where available (recent transformers), else the config attribute."""
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(attn)
    else:
        for module in model.modules():
            if hasattr(getattr(module, "config", None), "_attn_implementation"):
                module.config._attn_implementation = attn


def prompt(prefix, images, between=(), suffix=(7, 8, 9)):
    ids = [1, *prefix]
    for i in range(images):
        ids += [IMAGE] * PATCHES
        if i + 1 < images:
            ids += list(between)
    return ids + list(suffix)


def left_pad(rows):
    width = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def positions(mask):
    return (mask.cumsum(-1) - 1).clamp(min=0)


def images(n, seed):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def call_layer(layer, hidden, **kwargs):
    out = layer(hidden, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def causal_float_mask(length, dtype, device="cpu"):
    mask = torch.full((length, length), torch.finfo(dtype).min, device=device).triu(1)
    return mask[None, None].to(dtype)


def reference_pruned_logits(model, ids, stages, visual_ids=(IMAGE,), contiguous=False, **inputs):
    """Manual eager forward of one unpadded sample; stages = [(layer, score_layer, keep_fn(now, orig))].
    ``contiguous``: after a pruning the kept tokens are renumbered 0..n-1 (PyramidDrop upstream).
    Returns (logits of the kept tokens, kept original positions). Every tensor lives on ``ids``' device."""
    dev = ids.device
    model = copy.deepcopy(model)
    set_attention(model, "eager")
    lm = find_language_model(model)
    captured = {}

    def grab(module, args, kwargs):
        captured["hidden"] = args[0] if args else kwargs["hidden_states"]
        captured["rope"] = kwargs["position_embeddings"]

    handle = lm.layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        model(input_ids=ids, **inputs)
    handle.remove()
    hidden = captured["hidden"]
    cos, sin = captured["rope"]
    visual = torch.isin(ids[0], torch.tensor(list(visual_ids), device=dev))
    kept = torch.arange(ids.shape[1], device=dev)
    n_orig = int(visual.sum())
    pending = {}
    pruned = False

    def rope_for(kept):
        if contiguous and pruned:
            return lm.rotary_emb(hidden, torch.arange(len(kept), device=dev)[None])
        return cos[:, kept], sin[:, kept]

    with torch.no_grad():
        for i, layer in enumerate(lm.layers):
            for s, (stage_layer, score_layer, keep_fn) in enumerate(stages):
                if score_layer == i:
                    rope = rope_for(kept)
                    mask = causal_float_mask(len(kept), hidden.dtype, dev)
                    _, weights = layer.self_attn(hidden_states=layer.input_layernorm(hidden), attention_mask=mask,
                                                 position_embeddings=rope)
                    score = weights[0, :, -1].mean(0)
                    vis_now = [j for j in range(len(kept)) if visual[kept[j]]]
                    n_keep = min(keep_fn(len(vis_now), n_orig), len(vis_now))
                    ranked = sorted(vis_now, key=lambda j: (-float(score[j]), j))[:n_keep]
                    pending[s] = sorted(set(range(len(kept))) - set(vis_now) | set(ranked))
                if stage_layer == i and s in pending:
                    rows = torch.tensor(pending.pop(s), device=dev)
                    hidden, kept = hidden[:, rows], kept[rows]
                    pruned = True
            hidden = call_layer(layer, hidden, attention_mask=causal_float_mask(len(kept), hidden.dtype, dev),
                                position_embeddings=rope_for(kept), position_ids=kept[None])
        logits = model.lm_head(lm.norm(hidden))
    return logits, kept


def fastv_stage(k, ratio):
    return [(k, k - 1, lambda now, orig: math.floor(now * (1 - ratio) + 0.5))]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("k,ratio", [(1, 0.5), (2, 0.75), (3, 0.3)])
def test_fastv_matches_manual_reference(attn, k, ratio):
    model = tiny_llava(attn)
    ids = torch.tensor([prompt((5, 6), 2, between=(11, 12))])
    pix = images(2, seed=1)
    ref_logits, ref_kept = reference_pruned_logits(model, ids, fastv_stage(k, ratio), pixel_values=pix)
    with torch.no_grad(), FastVAdapter(model, k=k, ratio=ratio) as adapter:
        out = model(input_ids=ids, pixel_values=pix)
    assert torch.equal(adapter.kept_indices[0], ref_kept)
    assert out.logits.shape[1] == len(ref_kept) < ids.shape[1]  # the sequence really got shorter
    cache = out.past_key_values
    assert cache.get_seq_length(k) == len(ref_kept) < cache.get_seq_length(k - 1) == ids.shape[1]
    torch.testing.assert_close(out.logits, ref_logits, atol=2e-5, rtol=1e-4)


def test_fastv_triton_scores_match_manual_reference():
    """impl="triton": the one-row scores come from the Triton scored_attention kernels (interpreted on CPU)."""
    from reference_impls.ops._triton import launch_counts

    model = tiny_llava()
    ids = torch.tensor([prompt((5, 6), 2, between=(11, 12))])
    pix = images(2, seed=1)
    ref_logits, ref_kept = reference_pruned_logits(model, ids, fastv_stage(2, 0.5), pixel_values=pix)
    before = launch_counts["_colsum_kernel"]
    with torch.no_grad(), FastVAdapter(model, k=2, ratio=0.5, impl="triton") as adapter:
        out = model(input_ids=ids, pixel_values=pix)
    assert launch_counts["_colsum_kernel"] > before
    assert torch.equal(adapter.kept_indices[0], ref_kept)
    torch.testing.assert_close(out.logits, ref_logits, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("position_mode", ["contiguous", "keep"])
def test_pyramiddrop_matches_manual_reference(position_mode):
    model = tiny_llava()
    ids = torch.tensor([prompt((5,), 2, between=(13,))])
    pix = images(2, seed=2)
    ratios = (0.5, 0.25, 0.125)
    stages = [(layer, layer, (lambda r: lambda now, orig: int(orig * r + 1e-9))(r))
              for layer, r in zip((1, 2, 3), ratios)]
    ref_logits, ref_kept = reference_pruned_logits(model, ids, stages, contiguous=position_mode == "contiguous",
                                                   pixel_values=pix)
    with torch.no_grad(), PyramidDropAdapter(model, layer_list=[1, 2, 3], ratio_list=ratios,
                                             position_mode=position_mode) as adapter:
        out = model(input_ids=ids, pixel_values=pix)
    assert [int(c) for c in adapter.token_counts] == [ids.shape[1] - 32 + n for n in (32, 16, 8, 4)]
    assert torch.equal(adapter.kept_indices[0], ref_kept)
    torch.testing.assert_close(out.logits, ref_logits, atol=2e-5, rtol=1e-4)


def hook_census(model):
    return [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in model.modules()]


def test_ratio_zero_is_exact_and_hooks_are_removed():
    model = tiny_llava()
    ids = torch.tensor([prompt((5, 6), 1)])
    pix = images(1, seed=3)
    with torch.no_grad():
        base = model(input_ids=ids, pixel_values=pix).logits
        census = hook_census(model)
        with FastVAdapter(model, k=2, ratio=0.0):
            same = model(input_ids=ids, pixel_values=pix).logits
        with FastVAdapter(model, k=2, ratio=0.5):
            pruned = model(input_ids=ids, pixel_values=pix).logits
        after = model(input_ids=ids, pixel_values=pix).logits
    assert torch.equal(same, base)
    assert pruned.shape[1] < base.shape[1]
    assert torch.equal(after, base)
    assert hook_census(model) == census


def _batch_inputs():
    rows = [prompt((5, 6, 7, 8, 9, 10), 1, suffix=(21, 22)), prompt((5,), 2, between=(30, 31, 32), suffix=(40,))]
    return rows, images(1, seed=4), images(2, seed=5)


@pytest.mark.parametrize("adapter_cls,kwargs", [(FastVAdapter, dict(k=2, ratio=0.5)),
                                                (PyramidDropAdapter, dict(layer_list=[1, 3], ratio_list=(0.5, 0.25)))])
def test_batch_of_two_equals_single_runs(adapter_cls, kwargs):
    model = tiny_llava()
    rows, pix_a, pix_b = _batch_inputs()
    ids, mask = left_pad(rows)
    with torch.no_grad(), adapter_cls(model, **kwargs) as adapter:
        batch = model(input_ids=ids, pixel_values=torch.cat([pix_a, pix_b]), attention_mask=mask,
                      position_ids=positions(mask)).logits[:, -1]
        counts = adapter.token_counts[-1]
        singles = [model(input_ids=torch.tensor([r]), pixel_values=p).logits[:, -1] for r, p in
                   zip(rows, (pix_a, pix_b))]
    # 16 vs 32 visual tokens: ragged keep counts per sample
    assert counts.tolist()[0] < len(rows[0]) and counts.tolist()[1] < len(rows[1])
    assert counts[0] != counts[1]
    torch.testing.assert_close(batch, torch.cat(singles), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("adapter_cls,kwargs", [(FastVAdapter, dict(k=2, ratio=0.5)),
                                                (PyramidDropAdapter, dict(layer_list=[1, 3], ratio_list=(0.5, 0.25)))])
def test_generate_batch_equals_single_and_decode_uses_pruned_cache(adapter_cls, kwargs):
    model = tiny_llava()
    rows, pix_a, pix_b = _batch_inputs()
    ids, mask = left_pad(rows)
    settings = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    with torch.no_grad(), adapter_cls(model, **kwargs) as adapter:
        batch = model.generate(input_ids=ids, attention_mask=mask, pixel_values=torch.cat([pix_a, pix_b]),
                               **settings)[:, ids.shape[1]:]
        single = [model.generate(input_ids=torch.tensor([r]), pixel_values=p, **settings)[0, len(r):]
                  for r, p in zip(rows, (pix_a, pix_b))]
    assert adapter.num_pruned_prefills == 3
    assert torch.equal(batch, torch.stack(single))
    # the greedy continuation under pruning differs from the unpruned one for at least one sample, or equals it;
    # either way the unpruned run after exit reproduces the plain model
    with torch.no_grad():
        plain = model.generate(input_ids=ids, attention_mask=mask, pixel_values=torch.cat([pix_a, pix_b]), **settings)
        again = model.generate(input_ids=ids, attention_mask=mask, pixel_values=torch.cat([pix_a, pix_b]), **settings)
    assert torch.equal(plain, again)


def test_adapter_raises_when_nothing_was_compressed():
    model = tiny_llava()
    with pytest.raises(CompressionError):
        with torch.no_grad(), FastVAdapter(model, k=2, ratio=0.5):
            model(input_ids=torch.tensor([[1, 5, 6, 7]]))  # no image: nothing to prune
    with torch.no_grad(), FastVAdapter(model, k=2, ratio=0.5, require_compression=False):
        model(input_ids=torch.tensor([[1, 5, 6, 7]]))


@pytest.mark.parametrize("kwargs", [dict(k=0), dict(k=4), dict(ratio=1.0), dict(ratio=-0.1), dict(k=1.5)])
def test_fastv_bad_args(kwargs):
    with pytest.raises(ValueError):
        FastVAdapter(tiny_llava(), **kwargs)


def test_pyramiddrop_bad_args():
    with pytest.raises(ValueError):
        PyramidDropAdapter(tiny_llava(), layer_list=[1, 2], ratio_list=(0.5, 0.25), position_mode="shifted")
    with pytest.raises(ValueError):
        PyramidDropAdapter(tiny_llava(), layer_list=[2, 1], ratio_list=(0.5, 0.25))
    with pytest.raises(ValueError):
        PyramidDropAdapter(tiny_llava(), layer_list=[1, 2], ratio_list=(0.5,))


# ---------------------------------------------------------------------------------------------------- wrong models
def tiny_llava_with_layers(num_layers):
    from transformers import LlamaConfig

    model = tiny_llava()
    cfg = LlamaConfig(**{**model.config.text_config.to_dict(), "num_hidden_layers": num_layers})
    return type(model)(type(model.config)(**{**model.config.to_dict(), "text_config": cfg.to_dict()})).eval()


def text_only_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                        num_attention_heads=4, vocab_size=128)).eval()


SUPPORTED = "expected a Hugging Face LLaVA, Qwen2-VL or Qwen2.5-VL model"


@pytest.mark.parametrize("make_model, make_adapter, message", [
    (lambda: torch.nn.Linear(2, 2), FastVAdapter, f"Linear has no config: {SUPPORTED}"),
    (lambda: torch.nn.Linear(2, 2), PyramidDropAdapter, f"Linear has no config: {SUPPORTED}"),
    (lambda: torch.nn.Linear(2, 2), VisionZipAdapter, f"Linear has no vision_tower module: {SUPPORTED}"),
    (text_only_llama, FastVAdapter, f"LlamaForCausalLM's config has no image token id: {SUPPORTED}"),
    (text_only_llama, VisionZipAdapter, f"LlamaForCausalLM has no vision_tower module: {SUPPORTED}"),
    (lambda: tiny_llava_with_layers(2), FastVAdapter,
     "cannot prune before decoder layer 2: the language model has 2 decoder layers; prune before a layer from 1 to 1"),
    (lambda: tiny_llava_with_layers(1), FastVAdapter,
     "the language model has 1 decoder layer(s): pruning needs at least 2"),
    (lambda: tiny_llava_with_layers(2), PyramidDropAdapter,
     "the default schedule prunes at 1/4, 1/2 and 3/4 of the depth, which needs at least 4 decoder layers; this "
     "language model has 2: pass layer_list and ratio_list"),
])
def test_a_wrong_model_gets_one_clear_sentence(make_model, make_adapter, message):
    with pytest.raises(ValueError) as err:
        make_adapter(make_model())
    assert str(err.value) == message


def test_a_cache_under_neither_name_is_an_error_not_a_silent_switch_off():
    """A release that hands the KV cache over under a third name: the adapter says so instead of losing track."""
    model = tiny_llava()
    lm = find_language_model(model)

    def rename_cache(module, args, kwargs):  # stands in for such a release; runs before the adapter's hook
        kwargs = dict(kwargs)
        for name in ("cache", "past_key_values"):
            if name in kwargs:
                kwargs["kv_store"] = kwargs.pop(name)
        return args, kwargs

    handle = lm.register_forward_pre_hook(rename_cache, with_kwargs=True)
    try:
        with pytest.raises(CompressionError) as err, torch.no_grad(), FastVAdapter(model, k=2, ratio=0.5):
            model(input_ids=torch.tensor([prompt((5, 6), 1)]), pixel_values=images(1, seed=3))
    finally:
        handle.remove()
    assert str(err.value) == ("the language model was called with neither a 'cache' nor a 'past_key_values' "
                              "argument: this transformers release passes the KV cache in a way the adapter does "
                              "not support")


# ---------------------------------------------------------------------------------------------------------- VisionZip
def _reference_visionzip_features(model, pix, dominant, contextual):
    """Eager CLIP with output_attentions: CLS row of the feature layer (upstream way) + keys of that layer."""
    eager = copy.deepcopy(model)
    set_attention(eager, "eager")
    tower = eager.model.vision_tower
    layer = getattr(tower, "vision_model", tower).encoder.layers[-2]
    keys = {}
    handle = layer.register_forward_pre_hook(
        lambda m, a, kw: keys.__setitem__("k", m.self_attn.k_proj(m.layer_norm1(a[0] if a else kw["hidden_states"]))),
        with_kwargs=True)
    with torch.no_grad():
        out = tower(pix, output_attentions=True, output_hidden_states=True)
    handle.remove()
    attn = out.attentions[-2][:, :, 0].sum(1)  # CLS row, summed over heads [B, 1+N]
    metric = keys["k"].view(pix.shape[0], PATCHES + 1, 4, 8).mean(2)
    features = out.hidden_states[-2][:, 1:]  # "default" strategy drops CLS
    result = vz.naive_visionzip(features, attn[:, 1:], metric[:, 1:], dominant, contextual, has_cls=False)
    return eager.model.multi_modal_projector(result.tokens), result


def test_visionzip_matches_eager_reference_and_generates():
    model = tiny_llava()
    pix = images(2, seed=6)
    ref_tokens, ref = _reference_visionzip_features(model, pix, 5, 3)
    adapter = VisionZipAdapter(model, dominant=5, contextual=3)
    full_rows = [prompt((5, 6), 1), prompt((5,), 1, suffix=(9,))]
    ids, mask = adapter.shrink_image_placeholders(*left_pad(full_rows))
    assert int((ids == IMAGE).sum()) == 2 * 8
    captured = {}

    def first_embeds(module, args, kwargs):
        captured.setdefault("embeds", kwargs["inputs_embeds"])

    handle = find_language_model(model).register_forward_pre_hook(first_embeds, with_kwargs=True)
    with torch.no_grad(), adapter:
        out = model(input_ids=ids, pixel_values=pix, attention_mask=mask, position_ids=positions(mask))
        gen = model.generate(input_ids=ids, pixel_values=pix, attention_mask=mask, max_new_tokens=3,
                             do_sample=False, pad_token_id=0)
    handle.remove()
    assert torch.equal(adapter.last_result.dominant_idx, ref.dominant_idx)
    assert torch.equal(adapter.last_result.counts, ref.counts)
    image_embeds = captured["embeds"][ids == IMAGE].view(2, 8, -1)
    torch.testing.assert_close(image_embeds, ref_tokens, atol=1e-5, rtol=1e-4)
    assert out.logits.shape[1] == ids.shape[1] < left_pad(full_rows)[0].shape[1]
    assert gen.shape == (2, ids.shape[1] + 3)


def test_visionzip_full_strategy_keeps_cls_and_identity():
    model = tiny_llava(strategy="full")
    pix = images(1, seed=7)
    ids = torch.tensor([[1, 5] + [IMAGE] * (PATCHES + 1) + [7]])
    with torch.no_grad():
        base = model(input_ids=ids, pixel_values=pix).logits
        census = hook_census(model)
        with VisionZipAdapter(model, dominant=PATCHES + 1, contextual=0) as adapter:  # (N, 0): identity
            same = model(input_ids=ids, pixel_values=pix).logits
        assert torch.equal(same, base)
        zipper = VisionZipAdapter(model, dominant=4, contextual=2)
        short_ids, _ = zipper.shrink_image_placeholders(ids)
        with zipper:
            out = model(input_ids=short_ids, pixel_values=pix).logits
    assert adapter.tokens_per_image == PATCHES + 1
    assert zipper.last_result.dominant_idx[0, 0] == 0  # CLS is dominant
    assert out.shape[1] == 2 + 6 + 1
    assert hook_census(model) == census


def test_visionzip_errors():
    model = tiny_llava()
    with pytest.raises(ValueError):
        VisionZipAdapter(model, dominant=10, contextual=7)  # 17 > 16 patches
    with pytest.raises(ValueError):
        VisionZipAdapter(model, dominant=-1, contextual=2)
    with pytest.raises(CompressionError):
        with VisionZipAdapter(model, dominant=4, contextual=2):
            pass  # no image went through: nothing was compressed


# ---------------------------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("attn", ["sdpa", "flash_attention_2"])
def test_gpu_fastv_batch_equals_single_runs(attn):
    import importlib.util

    if attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash_attn is not installed")
    model = tiny_llava("sdpa").cuda()
    set_attention(model, attn)
    rows, pix_a, pix_b = _batch_inputs()
    ids, mask = left_pad(rows)
    dtype = torch.bfloat16 if attn.startswith("flash") else torch.float32
    model = model.to(dtype)
    pix = torch.cat([pix_a, pix_b]).cuda().to(dtype)
    settings = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    with torch.no_grad(), FastVAdapter(model, k=2, ratio=0.5) as adapter:
        out = model(input_ids=ids.cuda(), pixel_values=pix, attention_mask=mask.cuda(),
                    position_ids=positions(mask).cuda())
        gen = model.generate(input_ids=ids.cuda(), attention_mask=mask.cuda(), pixel_values=pix, **settings)
        singles = [model(input_ids=torch.tensor([r]).cuda(), pixel_values=p.cuda().to(dtype)).logits[:, -1]
                   for r, p in zip(rows, (pix_a, pix_b))]
    assert out.logits.shape[1] < ids.shape[1] and adapter.num_pruned_prefills == 4
    tol = dict(atol=5e-2, rtol=5e-2) if dtype == torch.bfloat16 else dict(atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(out.logits[:, -1].float(), torch.cat(singles).float(), **tol)
    assert gen.shape == (2, ids.shape[1] + 4)


@pytest.mark.gpu
def test_gpu_fastv_matches_manual_reference_fp32():
    model = tiny_llava().cuda()
    ids = torch.tensor([prompt((5, 6), 2, between=(11, 12))]).cuda()
    pix = images(2, seed=1).cuda()
    ref_logits, ref_kept = reference_pruned_logits(model, ids, fastv_stage(2, 0.5), pixel_values=pix)
    with torch.no_grad(), FastVAdapter(model, k=2, ratio=0.5, impl="triton") as adapter:
        out = model(input_ids=ids, pixel_values=pix)
    assert torch.equal(adapter.kept_indices[0].cpu(), ref_kept.cpu())
    torch.testing.assert_close(out.logits, ref_logits, atol=1e-4, rtol=1e-3)
