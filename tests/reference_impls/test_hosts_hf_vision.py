"""Encoder-side techniques on Hugging Face hosts (``reference_impls.hosts.hf_vision``): VisionZip on LLaVA (against
an eager CLIP run with ``output_attentions``, the upstream way) and on Qwen2-VL / Qwen2.5-VL (against a manual
decoder loop on the kept rows), and ToMe inside LLaVA's CLIP tower (against a layer-by-layer loop with the naive
merge)."""

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")

from reference_impls.encode import tome  # noqa: E402
from reference_impls.encode import visionzip as vz  # noqa: E402
from reference_impls.encode.tome import ToMe  # noqa: E402
from reference_impls.encode.visionzip import VisionZip  # noqa: E402
from tests.reference_impls._hosts import (
    IMAGE,
    images,
    left_pad,
    llava_prompt,
    qwen_inputs,
    qwen_prompt,  # noqa: E402
    set_attention,
    tiny_llava,
    tiny_qwen,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")

PATCHES = 16  # 32x32 image, 8x8 patches


def hook_census(model):
    return [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in model.modules()]


def _projector_input(model, run):
    """Run ``run()`` and return what LLaVA's projector received."""
    captured = {}

    def grab(module, args, kwargs):
        captured["x"] = args[0] if args else kwargs["image_features"]

    handle = model.model.multi_modal_projector.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        out = run()
    finally:
        handle.remove()
    return captured["x"], out


# ------------------------------------------------------------------------------------------------ VisionZip, LLaVA
def _reference_visionzip_features(model, pix, dominant, contextual):
    """Eager CLIP with output_attentions: CLS row of the feature layer (upstream way) + keys of that layer."""
    eager = copy.deepcopy(model)
    set_attention(eager, "eager")
    tower = eager.model.vision_tower
    layer = getattr(tower, "vision_model", tower).encoder.layers[-2]
    keys = {}
    handle = layer.register_forward_pre_hook(
        lambda m, a, kw: keys.__setitem__("k", m.self_attn.k_proj(m.layer_norm1(a[0] if a else kw["hidden_states"]))),
        with_kwargs=True,
    )
    with torch.no_grad():
        out = tower(pix, output_attentions=True, output_hidden_states=True)
    handle.remove()
    attn = out.attentions[-2][:, :, 0].sum(1)  # CLS row, summed over heads [B, 1+N]
    metric = keys["k"].view(pix.shape[0], PATCHES + 1, 4, 8).mean(2)
    features = out.hidden_states[-2][:, 1:]  # "default" strategy drops CLS
    return vz.naive_visionzip(features, attn[:, 1:], metric[:, 1:], dominant, contextual, has_cls=False)


def test_visionzip_llava_matches_eager_reference_and_generates():
    model = tiny_llava()
    pix = images(2, seed=6)
    ref = _reference_visionzip_features(model, pix, 5, 3)
    technique = VisionZip(dominant=5, contextual=3)
    full_rows = [llava_prompt((5, 6), 1, PATCHES), llava_prompt((5,), 1, PATCHES, suffix=(9,))]
    ids, mask = VisionZip.shrink_image_placeholders(
        *left_pad(full_rows)[:1], full=PATCHES, short=8, image_token_id=IMAGE, attention_mask=left_pad(full_rows)[1]
    )
    assert int((ids == IMAGE).sum()) == 2 * 8
    with torch.no_grad(), technique(model) as run:
        features, out = _projector_input(model, lambda: model(input_ids=ids, pixel_values=pix, attention_mask=mask))
        gen = model.generate(
            input_ids=ids, pixel_values=pix, attention_mask=mask, max_new_tokens=3, do_sample=False, pad_token_id=0
        )
    result = run.stats.extra["visionzip"]
    assert torch.equal(result.dominant_idx, ref.dominant_idx) and torch.equal(result.counts, ref.counts)
    torch.testing.assert_close(features, ref.tokens, atol=1e-5, rtol=1e-4)
    assert out.logits.shape[1] == ids.shape[1] < left_pad(full_rows)[0].shape[1]
    assert gen.shape == (2, ids.shape[1] + 3)


def test_visionzip_llava_full_strategy_keeps_cls_and_identity():
    model = tiny_llava(strategy="full")
    pix = images(1, seed=7)
    ids = torch.tensor([[1, 5] + [IMAGE] * (PATCHES + 1) + [7]])
    with torch.no_grad():
        base = model(input_ids=ids, pixel_values=pix).logits
        census = hook_census(model)
        with VisionZip(dominant=PATCHES + 1, contextual=0)(model):  # the budget covers the image: identity
            same = model(input_ids=ids, pixel_values=pix).logits
        assert torch.equal(same, base)
        short_ids, _ = VisionZip.shrink_image_placeholders(ids, PATCHES + 1, 6, IMAGE)
        with VisionZip(dominant=4, contextual=2)(model) as run:
            out = model(input_ids=short_ids, pixel_values=pix).logits
    assert run.stats.extra["visionzip"].dominant_idx[0, 0] == 0  # CLS is dominant
    assert out.shape[1] == 2 + 6 + 1
    assert hook_census(model) == census
    with pytest.raises(ValueError):
        VisionZip(dominant=-1, contextual=2)


# ------------------------------------------------------------------------------------------- VisionZip, Qwen2-VL
KINDS = ["qwen2_vl", "qwen2_5_vl"]


def _reference_visionzip_logits(model, inputs, dominant, contextual):
    """Independent VisionZip-on-Qwen prefill: scores/keys of the last vision block from an unmodified run, naive
    VisionZip per image, then a manual eager decoder loop on the kept rows at their original M-RoPE positions."""
    import copy

    from reference_impls.encode import visionzip as vz
    from reference_impls.hosts.hf_vision import vision_block_qk, vision_window_order

    model = copy.deepcopy(model)
    set_attention(model, "eager")
    visual = model.model.visual
    lm = model.model.language_model
    grabbed = {}

    def grab_block(module, args, kwargs):
        grabbed["block"] = (args[0], dict(kwargs))

    def grab_lm(module, args, kwargs):
        grabbed["embeds"] = kwargs["inputs_embeds"]

    def grab_layer(module, args, kwargs):
        grabbed["rope"] = kwargs["position_embeddings"]

    handles = [
        visual.blocks[-1].register_forward_pre_hook(grab_block, with_kwargs=True),
        lm.register_forward_pre_hook(grab_lm, with_kwargs=True),
        lm.layers[0].register_forward_pre_hook(grab_layer, with_kwargs=True),
    ]
    with torch.no_grad():
        model(**inputs)
    for h in handles:
        h.remove()
    hidden, block_kwargs = grabbed["block"]
    with torch.no_grad():
        q, k = vision_block_qk(visual.blocks[-1], hidden, block_kwargs)
    bounds = block_kwargs["cu_seqlens"].tolist()
    scores = torch.cat(
        [vz.naive_mean_received_attention(q[:, a:b][None], k[:, a:b][None])[0] for a, b in zip(bounds[:-1], bounds[1:])]
    )
    scores = scores.view(-1, 4).mean(-1)
    metric = k.mean(0).float().view(-1, 4, k.shape[-1]).mean(1)
    order = vision_window_order(visual, inputs["image_grid_thw"])
    if order is not None:
        scores, metric = scores[order], metric[order]
    ids = inputs["input_ids"][0]
    image_pos = torch.nonzero(ids == IMAGE).flatten()
    embeds = grabbed["embeds"][0].clone()
    features = embeds[image_pos]
    kept_image = []
    start = 0
    for n in (inputs["image_grid_thw"].prod(-1) // 4).tolist():
        res = vz.naive_visionzip(
            features[start : start + n][None],
            scores[start : start + n][None],
            metric[start : start + n][None],
            dominant,
            contextual,
            has_cls=False,
        )
        embeds[image_pos[start + res.target_idx[0]]] = res.tokens[0, dominant:]
        kept_image += (start + torch.cat([res.dominant_idx[0], res.target_idx[0]])).tolist()
        start += n
    keep = ids != IMAGE
    keep[image_pos[kept_image]] = True
    kept = torch.nonzero(keep).flatten()
    cos, sin = grabbed["rope"]
    x = embeds[kept][None]
    length = len(kept)
    mask = torch.full((length, length), torch.finfo(x.dtype).min).triu(1)[None, None]
    with torch.no_grad():
        for layer in lm.layers:
            out = layer(x, attention_mask=mask, position_embeddings=(cos[..., kept, :], sin[..., kept, :]))
            x = out[0] if isinstance(out, tuple) else out
        return model.lm_head(lm.norm(x)), kept


@pytest.mark.parametrize("kind", KINDS)
def test_visionzip_qwen_matches_reference(kind):
    model = tiny_qwen(kind)
    inputs = qwen_inputs([qwen_prompt((5, 6), [(1, 4, 6), (1, 6, 6)], (7, 8))], [[1, 4, 6], [1, 6, 6]], 7, model)
    ref_logits, ref_kept = _reference_visionzip_logits(model, inputs, 2, 2)
    with torch.no_grad(), VisionZip(dominant=2, contextual=2)(model) as run:
        out = model(**inputs)
    assert torch.equal(run.stats.extra["kept_columns"][0], ref_kept)
    assert out.logits.shape[1] == inputs["input_ids"].shape[1] - (6 + 9 - 8)
    torch.testing.assert_close(out.logits, ref_logits, atol=2e-5, rtol=1e-4)


def test_visionzip_qwen_batch_generate_equals_single_runs_and_identity():
    model = tiny_qwen("qwen2_5_vl")
    rows = [qwen_prompt((5, 6, 7, 8), [(1, 4, 6)], (9,)), qwen_prompt((5,), [(1, 4, 4), (1, 6, 4)], (9, 10))]
    grids = [[[1, 4, 6]], [[1, 4, 4], [1, 6, 4]]]
    batch = qwen_inputs(rows, grids[0] + grids[1], 3, model)
    singles = [qwen_inputs([row], grid, 3, model) for row, grid in zip(rows, grids)]
    singles[0]["pixel_values"], singles[1]["pixel_values"] = batch["pixel_values"][:24], batch["pixel_values"][24:]
    settings = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        census = hook_census(model)
        base = model(**batch).logits
        with VisionZip(dominant=2, contextual=1)(model) as run:
            last = model(**batch).logits[:, -1]
            counts = (run.stats.extra["kept_columns"] >= 0).sum(1).tolist()
            single_last = torch.cat([model(**s).logits[:, -1] for s in singles])
            gen = model.generate(**batch, **settings)[:, batch["input_ids"].shape[1] :]
            single_gen = [model.generate(**s, **settings)[0, s["input_ids"].shape[1] :] for s in singles]
        with VisionZip(dominant=6, contextual=0)(model):  # every image has at most 6 tokens: identity
            same = model(**batch).logits
        after = model(**batch).logits
    assert counts == [len(rows[0]) - 3, len(rows[1]) - 4]  # 6 -> 3, 4 -> 3 and 6 -> 3 image tokens
    torch.testing.assert_close(last, single_last, atol=2e-5, rtol=1e-4)
    assert torch.equal(gen, torch.stack(single_gen))
    assert torch.equal(same, base) and torch.equal(after, base) and hook_census(model) == census


# -------------------------------------------------------------------------------------------------- ToMe, LLaVA
def _reference_tome_features(model, pix, r):
    """CLIP layer by layer (eager): before layer j (1 <= j <= the feature layer) merge its input with the naive
    spec on the keys of layer j - 1 (head mean), then run the layer with the log(size) bias."""
    eager = copy.deepcopy(model)
    set_attention(eager, "eager")
    vision = getattr(eager.model.vision_tower, "vision_model", eager.model.vision_tower)
    layers = vision.encoder.layers
    feature = len(layers) - 2  # vision_feature_layer = -2
    with torch.no_grad():
        x = vision.pre_layrnorm(vision.embeddings(pix))
        size, keys = None, None
        for j, layer in enumerate(layers[: feature + 1]):
            if j >= 1:
                x, size = tome.naive_tome_merge(x, keys, r, size, protect_first=1)
            B, L, C = x.shape
            keys = layer.self_attn.k_proj(layer.layer_norm1(x)).view(B, L, 4, C // 4).mean(2)
            bias = None if size is None else size.log()[:, None, None, :, 0].expand(B, 1, L, L)
            out = layer(x, bias)
            x = out[0] if isinstance(out, tuple) else out
    return x[:, 1:]  # "default" strategy drops CLS


def test_tome_llava_matches_layer_by_layer_reference():
    model = tiny_llava()
    pix = images(2, seed=8)
    technique = ToMe(r=3)
    n = technique.image_tokens(model)
    assert n == 17 - 3 - 1  # 3 CLIP layers, features after layer 1: one merge (before layer 1), CLS dropped
    ids, mask = left_pad([llava_prompt((5, 6), 1, n), llava_prompt((5,), 1, n, suffix=(9,))])
    with torch.no_grad(), technique(model) as run:
        features, out = _projector_input(model, lambda: model(input_ids=ids, pixel_values=pix, attention_mask=mask))
    torch.testing.assert_close(features, _reference_tome_features(model, pix, 3), atol=1e-5, rtol=1e-4)
    assert run.stats.extra["visual_tokens_per_image"] == n and out.logits.shape[1] == ids.shape[1]
    with torch.no_grad():
        base = model(input_ids=ids[:, :4], attention_mask=mask[:, :4]).logits
        with ToMe(r=0)(model):
            same = model(input_ids=ids[:, :4], attention_mask=mask[:, :4]).logits
    assert torch.equal(same, base)
