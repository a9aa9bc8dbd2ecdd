"""FastV / PyramidDrop adapters on tiny random-weight Qwen2-VL and Qwen2.5-VL models (M-RoPE, image + video ids)."""
import inspect

import pytest
import torch

transformers = pytest.importorskip("transformers")

from reference_impls.adapters import CompressionError, FastVAdapter, PyramidDropAdapter  # noqa: E402
from tests.reference_impls.test_adapters_hf_llava import (fastv_stage, hook_census,  # noqa: E402
                                                          reference_pruned_logits, set_attention)

IMAGE, VIDEO, START, END = 150, 151, 152, 153
PATCH_DIM = 3 * 2 * 4 * 4  # channels * temporal_patch * patch * patch


def tiny_qwen(kind="qwen2_vl", attn="sdpa"):
    text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=160, max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
                pad_token_id=0, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3],
                                                 "rope_theta": 10000.0})
    ids = dict(image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=START, vision_end_token_id=END)
    if kind == "qwen2_vl":
        from transformers import Qwen2VLConfig as Config, Qwen2VLForConditionalGeneration as Model

        vision = dict(depth=2, embed_dim=32, num_heads=4, hidden_size=64, patch_size=4, spatial_merge_size=2,
                      temporal_patch_size=2, in_channels=3, mlp_ratio=2)
    else:
        from transformers import Qwen2_5_VLConfig as Config, Qwen2_5_VLForConditionalGeneration as Model

        vision = dict(depth=2, hidden_size=32, num_heads=4, out_hidden_size=64, intermediate_size=64, patch_size=4,
                      spatial_merge_size=2, temporal_patch_size=2, in_channels=3, window_size=16,
                      fullatt_block_indexes=[1])
    torch.manual_seed(0)
    model = Model(Config(text_config=text, vision_config=vision, **ids)).eval()
    set_attention(model, attn)
    return model


def image_prompt(prefix, grids, suffix):
    ids = [1, *prefix]
    for t, h, w in grids:
        ids += [START] + [IMAGE] * (t * h * w // 4) + [END]
    return ids + list(suffix)


def inputs_for(rows, grids, seed, model):
    width = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    grid = torch.tensor(grids)
    patches = int(grid.prod(-1).sum())
    pix = torch.randn(patches, PATCH_DIM, generator=torch.Generator().manual_seed(seed))
    out = dict(input_ids=ids, attention_mask=mask, pixel_values=pix, image_grid_thw=grid)
    if "mm_token_type_ids" in inspect.signature(model.forward).parameters:
        out["mm_token_type_ids"] = (ids == IMAGE).long()
    return out


KINDS = ["qwen2_vl", "qwen2_5_vl"]


@pytest.mark.parametrize("kind", KINDS)
def test_fastv_matches_manual_reference(kind):
    model = tiny_qwen(kind)
    inputs = inputs_for([image_prompt((5, 6), [(1, 4, 6), (1, 4, 4)], (7, 8))], [[1, 4, 6], [1, 4, 4]], 1, model)
    ids = inputs.pop("input_ids")
    inputs.pop("attention_mask")
    ref_logits, ref_kept = reference_pruned_logits(model, ids, fastv_stage(2, 0.5), visual_ids=(IMAGE, VIDEO),
                                                   **inputs)
    with torch.no_grad(), FastVAdapter(model, k=2, ratio=0.5) as adapter:
        out = model(input_ids=ids, **inputs)
    assert torch.equal(adapter.kept_indices[0], ref_kept)
    assert out.logits.shape[1] == ids.shape[1] - 5  # 10 visual tokens -> 5
    torch.testing.assert_close(out.logits, ref_logits, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_generate_equals_single_runs_and_exit_restores(kind):
    model = tiny_qwen(kind)
    rows = [image_prompt((5, 6, 7, 8), [(1, 4, 6)], (9,)), image_prompt((5,), [(1, 4, 4), (1, 6, 4)], (9, 10))]
    grids = [[[1, 4, 6]], [[1, 4, 4], [1, 6, 4]]]
    batch_inputs = inputs_for(rows, grids[0] + grids[1], 3, model)
    patches_a = 24
    singles = []
    for i, (row, grid) in enumerate(zip(rows, grids)):
        single = inputs_for([row], grid, 3, model)
        pix = batch_inputs["pixel_values"]
        single["pixel_values"] = pix[:patches_a] if i == 0 else pix[patches_a:]
        singles.append(single)
    settings = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        base = model(**batch_inputs).logits
        census = hook_census(model)
        with FastVAdapter(model, k=2, ratio=0.5) as adapter:
            logits = model(**batch_inputs).logits[:, -1]
            counts = adapter.token_counts[-1].tolist()
            single_logits = torch.cat([model(**s).logits[:, -1] for s in singles])
            gen = model.generate(**batch_inputs, **settings)[:, batch_inputs["input_ids"].shape[1]:]
            single_gen = [model.generate(**s, **settings)[0, s["input_ids"].shape[1]:] for s in singles]
        after = model(**batch_inputs).logits
    assert counts == [len(rows[0]) - 3, len(rows[1]) - 5]  # 6 -> 3 and 10 -> 5 visual tokens
    torch.testing.assert_close(logits, single_logits, atol=2e-5, rtol=1e-4)
    assert torch.equal(gen, torch.stack(single_gen))
    assert torch.equal(after, base) and hook_census(model) == census


def test_ratio_zero_and_pyramiddrop_counts():
    model = tiny_qwen("qwen2_vl", attn="eager")
    inputs = inputs_for([image_prompt((5,), [(1, 8, 8)], (7, 8))], [[1, 8, 8]], 5, model)
    with torch.no_grad():
        base = model(**inputs).logits
        with FastVAdapter(model, k=1, ratio=0.0):
            same = model(**inputs).logits
        with PyramidDropAdapter(model, layer_list=[1, 2, 3], ratio_list=(0.5, 0.25, 0.125)) as adapter:
            pruned = model(**inputs).logits
    assert torch.equal(same, base)
    length = inputs["input_ids"].shape[1]
    assert [int(c) for c in adapter.token_counts] == [length, length - 8, length - 12, length - 14]
    assert pruned.shape[1] == length - 14


def test_text_only_prompt_raises_compression_error():
    model = tiny_qwen("qwen2_vl")
    with pytest.raises(CompressionError):
        with torch.no_grad(), FastVAdapter(model, k=2, ratio=0.5):
            model(input_ids=torch.tensor([[1, 5, 6, 7]]))


# ---------------------------------------------------------------------------------------------------------- VisionZip
def _reference_visionzip_logits(model, inputs, dominant, contextual):
    """Independent VisionZip-on-Qwen prefill: scores/keys of the last vision block from an unmodified run, naive
    VisionZip per image, then a manual eager decoder loop on the kept rows at their original M-RoPE positions."""
    import copy

    from reference_impls.adapters.hf_qwen2_vl import vision_block_qk, vision_window_order
    from reference_impls.encode import visionzip as vz

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

    handles = [visual.blocks[-1].register_forward_pre_hook(grab_block, with_kwargs=True),
               lm.register_forward_pre_hook(grab_lm, with_kwargs=True),
               lm.layers[0].register_forward_pre_hook(grab_layer, with_kwargs=True)]
    with torch.no_grad():
        model(**inputs)
    for h in handles:
        h.remove()
    hidden, block_kwargs = grabbed["block"]
    with torch.no_grad():
        q, k = vision_block_qk(visual.blocks[-1], hidden, block_kwargs)
    bounds = block_kwargs["cu_seqlens"].tolist()
    scores = torch.cat([vz.naive_mean_received_attention(q[:, a:b][None], k[:, a:b][None])[0]
                        for a, b in zip(bounds[:-1], bounds[1:])])
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
        res = vz.naive_visionzip(features[start:start + n][None], scores[start:start + n][None],
                                 metric[start:start + n][None], dominant, contextual, has_cls=False)
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
def test_visionzip_matches_reference(kind):
    from reference_impls.adapters import VisionZipAdapter

    model = tiny_qwen(kind)
    inputs = inputs_for([image_prompt((5, 6), [(1, 4, 6), (1, 6, 6)], (7, 8))], [[1, 4, 6], [1, 6, 6]], 7, model)
    ref_logits, ref_kept = _reference_visionzip_logits(model, inputs, 2, 2)
    with torch.no_grad(), VisionZipAdapter(model, dominant=2, contextual=2) as adapter:
        out = model(**inputs)
    assert torch.equal(adapter.kept_indices[0], ref_kept)
    assert out.logits.shape[1] == inputs["input_ids"].shape[1] - (6 + 9 - 8)
    assert out.past_key_values.get_seq_length() == len(ref_kept)
    torch.testing.assert_close(out.logits, ref_logits, atol=2e-5, rtol=1e-4)


def test_visionzip_batch_generate_equals_single_runs():
    from reference_impls.adapters import VisionZipAdapter

    model = tiny_qwen("qwen2_5_vl")
    rows = [image_prompt((5, 6, 7, 8), [(1, 4, 6)], (9,)), image_prompt((5,), [(1, 4, 4), (1, 6, 4)], (9, 10))]
    grids = [[[1, 4, 6]], [[1, 4, 4], [1, 6, 4]]]
    batch = inputs_for(rows, grids[0] + grids[1], 3, model)
    singles = [inputs_for([row], grid, 3, model) for row, grid in zip(rows, grids)]
    singles[0]["pixel_values"], singles[1]["pixel_values"] = batch["pixel_values"][:24], batch["pixel_values"][24:]
    settings = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        census = hook_census(model)
        base = model(**batch).logits
        with VisionZipAdapter(model, dominant=2, contextual=1) as adapter:
            last = model(**batch).logits[:, -1]
            counts = (adapter.kept_indices >= 0).sum(1).tolist()
            single_last = torch.cat([model(**s).logits[:, -1] for s in singles])
            gen = model.generate(**batch, **settings)[:, batch["input_ids"].shape[1]:]
            single_gen = [model.generate(**s, **settings)[0, s["input_ids"].shape[1]:] for s in singles]
        after = model(**batch).logits
    assert counts == [len(rows[0]) - 3, len(rows[1]) - 4]  # 6 -> 3, 4 -> 3 and 6 -> 3 image tokens
    torch.testing.assert_close(last, single_last, atol=2e-5, rtol=1e-4)
    assert torch.equal(gen, torch.stack(single_gen))
    assert torch.equal(after, base) and hook_census(model) == census


def test_visionzip_identity_and_errors():
    from reference_impls.adapters import VisionZipAdapter

    model = tiny_qwen("qwen2_vl")
    inputs = inputs_for([image_prompt((5,), [(1, 4, 4)], (7,))], [[1, 4, 4]], 9, model)
    with torch.no_grad():
        base = model(**inputs).logits
        with VisionZipAdapter(model, dominant=3, contextual=1, require_compression=False):  # 4 tokens: all kept
            same = model(**inputs).logits
        assert torch.equal(same, base)
        with pytest.raises(CompressionError):
            with VisionZipAdapter(model, dominant=3, contextual=1):
                model(**inputs)
    with pytest.raises(ValueError):
        VisionZipAdapter(model, dominant=-1, contextual=2)
    with pytest.raises(ValueError):
        VisionZipAdapter(model, dominant=0, contextual=0)
