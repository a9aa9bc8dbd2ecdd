"""The Hugging Face host driver (``reference_impls.hosts.hf``) on tiny random-weight LLaVA, Qwen2-VL and Qwen2.5-VL
models: token techniques against an independent manual forward, batches against single runs, generate with the
driver's cache and masks, exact identity and removal of every hook, and the errors the host raises.

The reference for LLM-side pruning is an independent manual forward: the decoder layers are called one by one in
eager attention, the scores are the eager attention weights of the scoring layer, the kept rows are sliced
directly, and the rotary tables keep the original positions (or are renumbered for PyramidDrop's contiguous mode).
"""

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")

from reference_impls.decode.kv import H2O, SnapKV  # noqa: E402
from reference_impls.hosts.hf_model import cache_argument, find_language_model  # noqa: E402
from reference_impls.prefill.fastv import FastV  # noqa: E402
from reference_impls.prefill.pyramiddrop import PyramidDrop  # noqa: E402
from reference_impls.technique import UnsupportedModel  # noqa: E402
from tests.reference_impls._hosts import (
    IMAGE,
    VIDEO,
    images,
    left_pad,
    llava_prompt,
    qwen_inputs,  # noqa: E402
    qwen_prompt,
    set_attention,
    tiny_llava,
    tiny_qwen,
    tiny_text,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def prompt(prefix, n_images, between=(), suffix=(7, 8, 9)):
    return llava_prompt(prefix, n_images, 16, between, suffix)


def positions(mask):
    return (mask.cumsum(-1) - 1).clamp(min=0)


def call_layer(layer, hidden, **kwargs):
    out = layer(hidden, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def causal_float_mask(length, dtype):
    mask = torch.full((length, length), torch.finfo(dtype).min).triu(1)
    return mask[None, None].to(dtype)


def reference_pruned_logits(model, ids, stages, visual_ids=(IMAGE,), contiguous=False, **inputs):
    """Manual eager forward of one unpadded sample; stages = [(layer, score_layer, keep_fn(now, orig))].
    ``contiguous``: after a pruning the kept tokens are renumbered 0..n-1 (PyramidDrop upstream).
    Returns (logits of the kept tokens, kept original positions)."""
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
    visual = torch.isin(ids[0], torch.tensor(list(visual_ids)))
    kept = torch.arange(ids.shape[1])
    n_orig = int(visual.sum())
    pending = {}
    pruned = False

    def rope_for(kept):
        if contiguous and pruned:
            return lm.rotary_emb(hidden, torch.arange(len(kept))[None])
        return cos[:, kept], sin[:, kept]

    with torch.no_grad():
        for i, layer in enumerate(lm.layers):
            for s, (stage_layer, score_layer, keep_fn) in enumerate(stages):
                if score_layer == i:
                    rope = rope_for(kept)
                    mask = causal_float_mask(len(kept), hidden.dtype)
                    _, weights = layer.self_attn(
                        hidden_states=layer.input_layernorm(hidden), attention_mask=mask, position_embeddings=rope
                    )
                    score = weights[0, :, -1].mean(0)
                    vis_now = [j for j in range(len(kept)) if visual[kept[j]]]
                    n_keep = min(keep_fn(len(vis_now), n_orig), len(vis_now))
                    ranked = sorted(vis_now, key=lambda j: (-float(score[j]), j))[:n_keep]
                    pending[s] = sorted(set(range(len(kept))) - set(vis_now) | set(ranked))
                if stage_layer == i and s in pending:
                    rows = torch.tensor(pending.pop(s))
                    hidden, kept = hidden[:, rows], kept[rows]
                    pruned = True
            hidden = call_layer(
                layer,
                hidden,
                attention_mask=causal_float_mask(len(kept), hidden.dtype),
                position_embeddings=rope_for(kept),
                position_ids=kept[None],
            )
        logits = model.lm_head(lm.norm(hidden))
    return logits, kept


def fastv_stage(k, ratio):
    return [(k, k - 1, lambda now, orig: round(now * (1 - ratio)))]  # Python round, as the official code


def hook_census(model):
    return [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in model.modules()]


def _cache_rows(stats, layer):
    return stats.cache_lengths[layer].reshape(stats.cache_lengths[layer].shape[0], -1)[:, 0]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("k,ratio", [(1, 0.5), (2, 0.75), (3, 0.3)])
def test_fastv_matches_manual_reference(attn, k, ratio):
    model = tiny_llava(attn)
    ids = torch.tensor([prompt((5, 6), 2, between=(11, 12))])
    pix = images(2, seed=1)
    ref_logits, ref_kept = reference_pruned_logits(model, ids, fastv_stage(k, ratio), pixel_values=pix)
    with torch.no_grad(), FastV(k=k, ratio=ratio)(model) as run:
        out = model(input_ids=ids, pixel_values=pix)
    assert torch.equal(run.stats.kept_indices[0], ref_kept)
    assert out.logits.shape[1] == len(ref_kept) < ids.shape[1]  # the sequence really got shorter
    assert _cache_rows(run.stats, k).tolist() == [len(ref_kept)] and _cache_rows(run.stats, k - 1).tolist() == [
        ids.shape[1]
    ]  # and so did the cache of the pruned layers
    torch.testing.assert_close(out.logits, ref_logits, atol=2e-5, rtol=1e-4)


def test_fastv_triton_scores_match_manual_reference():
    """impl="triton": the one-row scores come from the Triton scored_attention kernels (interpreted on CPU)."""
    from reference_impls.ops._triton import launch_counts

    model = tiny_llava()
    ids = torch.tensor([prompt((5, 6), 2, between=(11, 12))])
    pix = images(2, seed=1)
    ref_logits, ref_kept = reference_pruned_logits(model, ids, fastv_stage(2, 0.5), pixel_values=pix)
    before = launch_counts["_colsum_kernel"]
    with torch.no_grad(), FastV(k=2, ratio=0.5, impl="triton")(model) as run:
        run.host.impl = "triton"
        out = model(input_ids=ids, pixel_values=pix)
    run.host.impl = "auto"
    assert launch_counts["_colsum_kernel"] > before
    assert torch.equal(run.stats.kept_indices[0], ref_kept)
    torch.testing.assert_close(out.logits, ref_logits, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("position_mode", ["contiguous", "keep"])
def test_pyramiddrop_matches_manual_reference(position_mode):
    model = tiny_llava()
    ids = torch.tensor([prompt((5,), 2, between=(13,))])
    pix = images(2, seed=2)
    ratios = (0.5, 0.25, 0.125)
    stages = [
        (layer, layer, (lambda r: lambda now, orig: int(orig * r + 1e-9))(r)) for layer, r in zip((1, 2, 3), ratios)
    ]
    ref_logits, ref_kept = reference_pruned_logits(
        model, ids, stages, contiguous=position_mode == "contiguous", pixel_values=pix
    )
    with (
        torch.no_grad(),
        PyramidDrop(layer_list=[1, 2, 3], ratio_list=ratios, position_mode=position_mode)(model) as run,
    ):
        out = model(input_ids=ids, pixel_values=pix)
    assert run.stats.layer_tokens[:, 0].tolist() == [ids.shape[1] - 32 + n for n in (32, 16, 8, 4)]
    assert torch.equal(run.stats.kept_indices[0], ref_kept)
    torch.testing.assert_close(out.logits, ref_logits, atol=2e-5, rtol=1e-4)


def test_identity_is_exact_and_hooks_are_removed():
    model = tiny_llava()
    ids = torch.tensor([prompt((5, 6), 1)])
    pix = images(1, seed=3)
    with torch.no_grad():
        base = model(input_ids=ids, pixel_values=pix).logits
        census = hook_census(model)
        with FastV(k=2, ratio=0.0)(model):
            same = model(input_ids=ids, pixel_values=pix).logits
        with FastV(k=2, ratio=0.5)(model):
            pruned = model(input_ids=ids, pixel_values=pix).logits
        after = model(input_ids=ids, pixel_values=pix).logits
    torch.testing.assert_close(same, base, atol=1e-5, rtol=1e-5)  # the driver's masks and cache: same logits
    assert torch.equal(same.argmax(-1), base.argmax(-1))
    assert pruned.shape[1] < base.shape[1]
    assert torch.equal(after, base)
    assert hook_census(model) == census


def _batch_inputs():
    rows = [prompt((5, 6, 7, 8, 9, 10), 1, suffix=(21, 22)), prompt((5,), 2, between=(30, 31, 32), suffix=(40,))]
    return rows, images(1, seed=4), images(2, seed=5)


TECHNIQUES = [
    FastV(k=2, ratio=0.5),
    PyramidDrop(layer_list=[1, 3], ratio_list=(0.5, 0.25)),
    SnapKV(budget=0.5, window=4),
    H2O(heavy=6, recent=4),
]


@pytest.mark.parametrize("padding", ["left", "right"])
@pytest.mark.parametrize("technique", TECHNIQUES[:2], ids=["fastv", "pyramiddrop"])
def test_batch_of_two_equals_single_runs(technique, padding):
    """A ragged batch (left or right padded) gives each row the logits of its own unpadded run."""
    model = tiny_llava()
    rows, pix_a, pix_b = _batch_inputs()
    ids, mask = left_pad(rows)
    if padding == "right":
        ids = torch.stack([torch.roll(r, -int((m == 0).sum())) for r, m in zip(ids, mask)])
        mask = torch.stack([torch.roll(m, -int((m == 0).sum())) for m in mask])
    with torch.no_grad(), technique(model) as run:
        out = model(
            input_ids=ids, pixel_values=torch.cat([pix_a, pix_b]), attention_mask=mask, position_ids=positions(mask)
        ).logits
        counts = run.stats.layer_tokens[-1]
        kept = run.stats.kept_indices
        singles = [model(input_ids=torch.tensor([r]), pixel_values=p).logits[0] for r, p in zip(rows, (pix_a, pix_b))]
    # 16 vs 32 visual tokens: ragged keep counts per sample; the pruned batch comes back left padded
    assert counts[0] < len(rows[0]) and counts[1] < len(rows[1]) and counts[0] != counts[1]
    for b in range(2):
        n = int(counts[b])
        assert bool((kept[b, :n] >= 0).all()) and torch.equal(
            ids[b, kept[b, :n]],
            torch.tensor(rows[b])[kept[b, :n] - int((mask[b] == 0).sum()) if padding == "left" else kept[b, :n]],
        )
        torch.testing.assert_close(out[b, -n:], singles[b][-n:], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("technique", TECHNIQUES, ids=["fastv", "pyramiddrop", "snapkv", "h2o"])
def test_generate_batch_equals_single_and_decode_uses_the_compressed_cache(technique):
    model = tiny_llava()
    rows, pix_a, pix_b = _batch_inputs()
    ids, mask = left_pad(rows)
    settings = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        plain = model.generate(input_ids=ids, attention_mask=mask, pixel_values=torch.cat([pix_a, pix_b]), **settings)
        with technique(model) as run:
            batch = model.generate(
                input_ids=ids, attention_mask=mask, pixel_values=torch.cat([pix_a, pix_b]), **settings
            )[:, ids.shape[1] :]
            lengths = [c.clone() for c in run.stats.cache_lengths]
            single = [
                model.generate(input_ids=torch.tensor([r]), pixel_values=p, **settings)[0, len(r) :]
                for r, p in zip(rows, (pix_a, pix_b))
            ]
        again = model.generate(input_ids=ids, attention_mask=mask, pixel_values=torch.cat([pix_a, pix_b]), **settings)
    assert run.stats.prefills == 3
    assert torch.equal(batch, torch.stack(single))
    full = mask.sum(1) + 4  # prompt + generated tokens fed back
    last = lengths[-1].reshape(2, -1).amax(1)
    assert bool((last < full).all())  # the last layer's cache really is shorter, per row
    assert torch.equal(plain, again)  # and the model is unchanged after the block


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_kv_policy_on_a_text_model_batch_equals_single_runs(kind):
    model = tiny_text(kind)
    model.generation_config.eos_token_id = None
    rows = [[1, *range(5, 29)], [1, *range(40, 56)]]
    ids, mask = left_pad(rows)
    settings = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad(), SnapKV(budget=0.5, window=4)(model) as run:
        batch = model.generate(input_ids=ids, attention_mask=mask, **settings)[:, ids.shape[1] :]
        rows_kept = run.stats.cache_lengths[0].amax(1)
        single = [model.generate(input_ids=torch.tensor([r]), **settings)[0, len(r) :] for r in rows]
    assert torch.equal(batch, torch.stack(single))
    assert rows_kept.tolist() == [13 + 5, 9 + 5]  # ceil(0.5 * 25) and ceil(0.5 * 17) prompt rows + 5


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_per_head_budgets_mask_each_head(attn):
    """HybridKV with one static (pruned) and one dynamic (retrieving) KV head: the heads of a layer hold different
    numbers of rows and decode steps attend to per-head selections, so the driver masks per head; the batch still
    equals its single runs."""
    from reference_impls.decode.kv import HybridKV

    model = tiny_llava(attn)
    rows, pix_a, pix_b = _batch_inputs()
    ids, mask = left_pad(rows)
    technique = HybridKV(budget=6, chunk_size=4, n_sink=1, n_recent=2, force=torch.tensor([True, False]))
    settings = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    with torch.no_grad(), technique(model) as run:
        batch = model.generate(input_ids=ids, attention_mask=mask, pixel_values=torch.cat([pix_a, pix_b]), **settings)[
            :, ids.shape[1] :
        ]
        lengths = run.stats.cache_lengths
        single = [
            model.generate(input_ids=torch.tensor([r]), pixel_values=p, **settings)[0, len(r) :]
            for r, p in zip(rows, (pix_a, pix_b))
        ]
    assert all(bool((c[:, 0] < c[:, 1]).all()) for c in lengths)  # the static head holds fewer rows
    assert torch.equal(batch, torch.stack(single))


def test_token_and_kv_techniques_stack():
    model = tiny_llava()
    rows, pix_a, pix_b = _batch_inputs()
    ids, mask = left_pad(rows)
    with torch.no_grad(), FastV(k=1, ratio=0.5)(model), H2O(heavy=6, recent=4)(model) as run:
        model.generate(
            input_ids=ids,
            attention_mask=mask,
            pixel_values=torch.cat([pix_a, pix_b]),
            max_new_tokens=4,
            do_sample=False,
            pad_token_id=0,
        )
    assert bool((run.stats.layer_tokens[-1] < run.stats.layer_tokens[0]).all())
    assert all(bool((c <= 10).all()) for c in run.stats.cache_lengths)
    with pytest.raises(RuntimeError, match="another KV technique"):
        with H2O()(model), SnapKV()(model):
            pass


def test_errors_are_one_clear_line():
    model = tiny_llava()
    ids = torch.tensor([prompt((5, 6), 1)])
    pix = images(1, seed=3)
    with pytest.raises(UnsupportedModel, match="beam search"):
        with torch.no_grad(), FastV()(model):
            model.generate(input_ids=ids, pixel_values=pix, num_beams=2, max_new_tokens=2, do_sample=False)
    cache = {cache_argument(model): transformers.DynamicCache(config=model.config.text_config)}
    with torch.no_grad():
        model(input_ids=ids, pixel_values=pix, use_cache=True, **cache)
    with pytest.raises(UnsupportedModel, match="cache filled without the technique"):
        with torch.no_grad(), SnapKV()(model):
            model(input_ids=torch.tensor([[5]]), use_cache=True, **cache)
    set_attention(model, "flex_attention")
    with pytest.raises(UnsupportedModel, match="attention implementation 'flex_attention'"):
        with FastV()(model):
            pass
    with pytest.raises(UnsupportedModel, match="k=4 must be < the model's 4"):
        FastV(k=4)(model)
    with pytest.raises(UnsupportedModel, match="fastv does not apply to LlamaForCausalLM"):
        FastV()(tiny_text("llama"))


# ------------------------------------------------------------------------------------------------- Qwen2-VL / 2.5-VL
KINDS = ["qwen2_vl", "qwen2_5_vl"]


@pytest.mark.parametrize("kind", KINDS)
def test_qwen_fastv_matches_manual_reference(kind):
    model = tiny_qwen(kind)
    inputs = qwen_inputs([qwen_prompt((5, 6), [(1, 4, 6), (1, 4, 4)], (7, 8))], [[1, 4, 6], [1, 4, 4]], 1, model)
    ids = inputs.pop("input_ids")
    inputs.pop("attention_mask")
    ref_logits, ref_kept = reference_pruned_logits(model, ids, fastv_stage(2, 0.5), visual_ids=(IMAGE, VIDEO), **inputs)
    with torch.no_grad(), FastV(k=2, ratio=0.5)(model) as run:
        out = model(input_ids=ids, **inputs)
    assert torch.equal(run.stats.kept_indices[0], ref_kept)
    assert out.logits.shape[1] == ids.shape[1] - 5  # 10 visual tokens -> 5
    torch.testing.assert_close(out.logits, ref_logits, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_qwen_batch_generate_equals_single_runs_and_exit_restores(kind):
    model = tiny_qwen(kind)
    rows = [qwen_prompt((5, 6, 7, 8), [(1, 4, 6)], (9,)), qwen_prompt((5,), [(1, 4, 4), (1, 6, 4)], (9, 10))]
    grids = [[[1, 4, 6]], [[1, 4, 4], [1, 6, 4]]]
    batch_inputs = qwen_inputs(rows, grids[0] + grids[1], 3, model)
    singles = []
    for i, (row, grid) in enumerate(zip(rows, grids)):
        single = qwen_inputs([row], grid, 3, model)
        pix = batch_inputs["pixel_values"]
        single["pixel_values"] = pix[:24] if i == 0 else pix[24:]
        singles.append(single)
    settings = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        base = model(**batch_inputs).logits
        census = hook_census(model)
        with FastV(k=2, ratio=0.5)(model) as run:
            logits = model(**batch_inputs).logits[:, -1]
            counts = run.stats.layer_tokens[-1].tolist()
            single_logits = torch.cat([model(**s).logits[:, -1] for s in singles])
            gen = model.generate(**batch_inputs, **settings)[:, batch_inputs["input_ids"].shape[1] :]
            single_gen = [model.generate(**s, **settings)[0, s["input_ids"].shape[1] :] for s in singles]
        after = model(**batch_inputs).logits
    assert counts == [len(rows[0]) - 3, len(rows[1]) - 5]  # 6 -> 3 and 10 -> 5 visual tokens
    torch.testing.assert_close(logits, single_logits, atol=2e-5, rtol=1e-4)
    assert torch.equal(gen, torch.stack(single_gen))
    assert torch.equal(after, base) and hook_census(model) == census


def test_qwen_pyramiddrop_counts_and_text_only_prompt():
    model = tiny_qwen("qwen2_vl", attn="eager")
    inputs = qwen_inputs([qwen_prompt((5,), [(1, 8, 8)], (7, 8))], [[1, 8, 8]], 5, model)
    with torch.no_grad():
        with PyramidDrop(layer_list=[1, 2, 3], ratio_list=(0.5, 0.25, 0.125))(model) as run:
            pruned = model(**inputs).logits
        text = torch.tensor([[1, 5, 6, 7]])
        plain = model(input_ids=text).logits
        with FastV(k=2, ratio=0.5)(model) as text_run:  # no visual token: nothing to prune
            same = model(input_ids=text).logits
    length = inputs["input_ids"].shape[1]
    assert run.stats.layer_tokens[:, 0].tolist() == [length, length - 8, length - 12, length - 14]
    assert pruned.shape[1] == length - 14
    assert text_run.stats.layer_tokens[:, 0].tolist() == [4] * 4
    torch.testing.assert_close(same, plain, atol=1e-5, rtol=1e-5)
    with pytest.raises(UnsupportedModel, match="M-RoPE"):
        PyramidDrop(position_mode="contiguous")(model)


# ---------------------------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
def test_gpu_fastv_batch_equals_single_runs():
    model = tiny_llava("sdpa").cuda()
    rows, pix_a, pix_b = _batch_inputs()
    ids, mask = left_pad(rows)
    pix = torch.cat([pix_a, pix_b]).cuda()
    settings = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    with torch.no_grad(), FastV(k=2, ratio=0.5, impl="triton")(model) as run:
        out = model(
            input_ids=ids.cuda(), pixel_values=pix, attention_mask=mask.cuda(), position_ids=positions(mask).cuda()
        )
        gen = model.generate(input_ids=ids.cuda(), attention_mask=mask.cuda(), pixel_values=pix, **settings)
        singles = [
            model(input_ids=torch.tensor([r]).cuda(), pixel_values=p.cuda()).logits[:, -1]
            for r, p in zip(rows, (pix_a, pix_b))
        ]
    assert out.logits.shape[1] < ids.shape[1] and run.stats.prefills == 4
    torch.testing.assert_close(out.logits[:, -1], torch.cat(singles), atol=1e-4, rtol=1e-3)
    assert gen.shape == (2, ids.shape[1] + 4)


@pytest.mark.gpu
def test_gpu_fastv_matches_manual_reference_fp32():
    model = tiny_llava().cuda()
    ids = torch.tensor([prompt((5, 6), 2, between=(11, 12))]).cuda()
    pix = images(2, seed=1).cuda()
    ref_logits, ref_kept = reference_pruned_logits(model, ids, fastv_stage(2, 0.5), pixel_values=pix)
    with torch.no_grad(), FastV(k=2, ratio=0.5)(model) as run:
        out = model(input_ids=ids, pixel_values=pix)
    assert torch.equal(run.stats.kept_indices[0].cpu(), ref_kept.cpu())
    torch.testing.assert_close(out.logits, ref_logits, atol=1e-4, rtol=1e-3)
