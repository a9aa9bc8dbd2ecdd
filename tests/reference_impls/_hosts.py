"""Tiny random-weight models of every registry host, built from configs (no downloads, no tokenizer files), and a
batch of two prompts of different lengths for each (left padded for Hugging Face models, right padded with
``lengths`` for the minimal LVLM).

``build(host)`` -> :class:`HostCase`: ``case.generate(max_new_tokens, visual_tokens=None)`` runs greedy generation
and returns the generated ids ``[2, n]``; ``visual_tokens`` rewrites the prompts with that many placeholders per
image (encoder-side techniques that shrink the image, LLaVA and minimal layouts).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

IMAGE, VIDEO, START, END = 120, 121, 122, 123  # Hugging Face placeholder ids (vocabulary 128)


def set_attention(model, attn):
    model.set_attn_implementation(attn)
    model.generation_config.eos_token_id = None  # random weights: always generate max_new_tokens


def _clip():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=32,
    )


def _llama_text(**kw):
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        **kw,
    )


def tiny_llava(attn="sdpa", strategy="default", seed=0):
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    cfg = LlavaConfig(
        vision_config=_clip(),
        text_config=_llama_text(),
        image_token_id=IMAGE,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy=strategy,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg).eval()
    set_attention(model, attn)
    return model


def tiny_llava_next(attn="sdpa"):
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    cfg = LlavaNextConfig(
        vision_config=_clip(),
        text_config=_llama_text(),
        image_token_index=IMAGE,
        image_grid_pinpoints=[[32, 32], [32, 64]],
        vision_feature_layer=-2,
    )
    torch.manual_seed(0)
    model = LlavaNextForConditionalGeneration(cfg).eval()
    set_attention(model, attn)
    return model


def tiny_qwen(kind="qwen2_vl", attn="sdpa"):
    text = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
    )
    ids = dict(image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=START, vision_end_token_id=END)
    if kind == "qwen2_vl":
        from transformers import Qwen2VLConfig as Config
        from transformers import Qwen2VLForConditionalGeneration as Model

        vision = dict(
            depth=2,
            embed_dim=32,
            num_heads=4,
            hidden_size=64,
            patch_size=4,
            spatial_merge_size=2,
            temporal_patch_size=2,
            in_channels=3,
            mlp_ratio=2,
        )
    else:
        from transformers import Qwen2_5_VLConfig as Config
        from transformers import Qwen2_5_VLForConditionalGeneration as Model

        vision = dict(
            depth=2,
            hidden_size=32,
            num_heads=4,
            out_hidden_size=64,
            intermediate_size=64,
            patch_size=4,
            spatial_merge_size=2,
            temporal_patch_size=2,
            in_channels=3,
            window_size=16,
            fullatt_block_indexes=[1],
        )
    torch.manual_seed(0)
    model = Model(Config(text_config=text, vision_config=vision, **ids)).eval()
    set_attention(model, attn)
    return model


def tiny_text(kind="llama", attn="sdpa"):
    from transformers import LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    if kind == "llama":
        model = LlamaForCausalLM(_llama_text()).eval()
    else:
        cfg = Qwen2Config(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=128,
            max_position_embeddings=256,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
        model = Qwen2ForCausalLM(cfg).eval()
    set_attention(model, attn)
    return model


def left_pad(rows):
    width = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def images(n, seed, size=32):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def llava_prompt(prefix, n_images, per_image, between=(), suffix=(7, 8, 9)):
    ids = [1, *prefix]
    for i in range(n_images):
        ids += [IMAGE] * per_image
        if i + 1 < n_images:
            ids += list(between)
    return ids + list(suffix)


def qwen_prompt(prefix, grids, suffix):
    ids = [1, *prefix]
    for t, h, w in grids:
        ids += [START] + [IMAGE] * (t * h * w // 4) + [END]
    return ids + list(suffix)


def qwen_inputs(rows, grids, seed, model):
    ids, mask = left_pad(rows)
    grid = torch.tensor(grids)
    patches = int(grid.prod(-1).sum())
    pix = torch.randn(patches, 3 * 2 * 4 * 4, generator=torch.Generator().manual_seed(seed))
    out = dict(input_ids=ids, attention_mask=mask, pixel_values=pix, image_grid_thw=grid)
    if "mm_token_type_ids" in inspect.signature(model.forward).parameters:
        out["mm_token_type_ids"] = (ids == IMAGE).long()
    return out


@dataclass
class HostCase:
    name: str
    model: object
    n_layers: int
    image_tokens: Optional[int]  # placeholders per image of the unmodified prompt (None: variable / text)
    run: Callable = field(repr=False)  # (max_new_tokens, visual_tokens) -> generated ids [2, n]
    prompt_lengths: Optional[torch.Tensor] = None  # valid tokens per row of the unmodified prompt (HF hosts)

    def generate(self, max_new_tokens: int = 6, visual_tokens: Optional[int] = None) -> torch.Tensor:
        with torch.no_grad():
            return self.run(max_new_tokens, visual_tokens)


def _hf_generate(model, inputs, max_new_tokens):
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)
    return out[:, inputs["input_ids"].shape[1] :]


@functools.lru_cache(maxsize=None)
def build(name: str) -> HostCase:
    if name == "minimal":
        from reference_impls.models import LVLMConfig, MinimalLVLM

        model = MinimalLVLM(LVLMConfig.tiny(n_layers=4, init_std=0.1), seed=0)
        cfg = model.cfg

        def run(n, visual_tokens=None):
            nv = cfg.n_visual_tokens if visual_tokens is None else visual_tokens
            g = torch.Generator().manual_seed(0)
            lengths = torch.tensor([14 + nv, 10 + nv])
            ids = torch.randint(0, cfg.image_token_id, (2, 14 + nv), generator=g)
            ids[0, 2 : 2 + nv] = cfg.image_token_id
            ids[1, 5 : 5 + nv] = cfg.image_token_id
            pix = torch.randn(2, 3, cfg.vision.image_size, cfg.vision.image_size, generator=g)
            return model.generate(ids, pix, lengths=lengths, max_new_tokens=n)

        return HostCase(name, model, cfg.n_layers, cfg.n_visual_tokens, run)
    if name == "llava":
        model = tiny_llava()

        def run(n, visual_tokens=None):
            per = 16 if visual_tokens is None else visual_tokens
            ids, mask = left_pad(
                [
                    llava_prompt((5, 6, 7, 8, 9, 10), 1, per, suffix=(21, 22)),
                    llava_prompt((5,), 2, per, between=(30, 31, 32), suffix=(40,)),
                ]
            )
            return _hf_generate(
                model, dict(input_ids=ids, attention_mask=mask, pixel_values=torch.cat([images(1, 4), images(2, 5)])), n
            )

        return HostCase(name, model, 4, 16, run)
    if name == "llava_next":
        model = tiny_llava_next()
        pix = torch.randn(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(6))
        sizes = torch.tensor([[32, 64], [32, 32]])
        with torch.no_grad():
            feats = model.model.get_image_features(pix, sizes)
        counts = [f.shape[0] for f in getattr(feats, "pooler_output", feats)]

        def run(n, visual_tokens=None):
            ids, mask = left_pad(
                [llava_prompt((5, 6, 7), 1, counts[0], suffix=(21, 22)), llava_prompt((5,), 1, counts[1], suffix=(40,))]
            )
            return _hf_generate(model, dict(input_ids=ids, attention_mask=mask, pixel_values=pix, image_sizes=sizes), n)

        return HostCase(name, model, 4, None, run)
    if name in ("qwen2_vl", "qwen2_5_vl"):
        model = tiny_qwen(name)
        rows = [qwen_prompt((5, 6, 7, 8), [(1, 4, 6)], (9,)), qwen_prompt((5,), [(1, 4, 4), (1, 6, 4)], (9, 10))]
        inputs = qwen_inputs(rows, [[1, 4, 6], [1, 4, 4], [1, 6, 4]], 3, model)
        return HostCase(
            name,
            model,
            4,
            None,
            lambda n, visual_tokens=None: _hf_generate(model, inputs, n),
            inputs["attention_mask"].sum(1),
        )
    if name in ("llama", "qwen2"):
        model = tiny_text(name)
        ids, mask = left_pad([[1, *range(5, 29)], [1, *range(40, 56)]])
        inputs = dict(input_ids=ids, attention_mask=mask)
        return HostCase(name, model, 4, None, lambda n, visual_tokens=None: _hf_generate(model, inputs, n))
    raise ValueError(f"no test model for host {name!r}")
