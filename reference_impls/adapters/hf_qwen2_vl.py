"""Adapters for Hugging Face ``Qwen2VLForConditionalGeneration`` and ``Qwen2_5_VLForConditionalGeneration``.

``FastVAdapter`` / ``PyramidDropAdapter`` work unchanged on these models (see ``_hooks``): the decoder layers take
M-RoPE tables as ``position_embeddings`` (``[B, L, D]`` in recent transformers, ``[3, B, L, D]`` in older ones, both
gathered along the sequence), image and video placeholder tokens both count as visual, and the pruned tokens keep
their 3-D M-RoPE positions (decoding continues from the model's own ``rope_deltas``).

``VisionZipAdapter`` (below): VisionZip with the declared no-CLS deviation (attention received, after the 2x2
patch merger). It rewrites the prefill call (``inputs_embeds`` + explicit M-RoPE ``position_ids`` + shortened
``attention_mask``) because the number of placeholders and the 3-D positions are derived from ``image_grid_thw``
inside the model. Written against transformers 5.x (``mm_token_type_ids``, ``pooler_output``); older releases are
handled where the public names allow (signature filtering, ``rotary_pos_emb``), untested there.
"""
from __future__ import annotations

import inspect
import sys

import torch
from torch import nn

from ._hooks import (CACHE_NAMES, CompressionError, FastVAdapter, HookAdapter, PyramidDropAdapter, cached_length,
                     check_visionzip_counts, config_value, find_submodule, gather_rows, gather_seq, left_pad_indices)

__all__ = ["FastVAdapter", "PyramidDropAdapter", "VisionZipAdapter", "is_qwen2_vl"]


def is_qwen2_vl(model: nn.Module) -> bool:
    """True for Qwen2-VL / Qwen2.5-VL conditional-generation models (by public class name)."""
    return type(model).__name__ in ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration")


def _call_with_supported(fn, *args, **kwargs):
    """Call ``fn`` with only the keyword arguments its signature accepts (transformers versions differ)."""
    params = inspect.signature(fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return fn(*args, **kwargs)


def vision_block_qk(block: nn.Module, hidden: torch.Tensor, kwargs: dict):
    """Post-RoPE q, k [H, N, D] of a Qwen2-VL / Qwen2.5-VL vision block, recomputed from its input."""
    attn = block.attn
    num_tokens = hidden.shape[0]
    heads = attn.num_heads
    qkv = attn.qkv(block.norm1(hidden)).reshape(num_tokens, 3, heads, -1).permute(1, 0, 2, 3)
    q, k = qkv[0], qkv[1]
    module = sys.modules[type(attn).__module__]
    rope = kwargs.get("position_embeddings")
    if rope is not None:
        q, k = module.apply_rotary_pos_emb_vision(q, k, *rope)
    elif kwargs.get("rotary_pos_emb") is not None:  # older transformers: one tensor of frequencies
        freqs = kwargs["rotary_pos_emb"]
        q = module.apply_rotary_pos_emb_vision(q.unsqueeze(0), freqs).squeeze(0)
        k = module.apply_rotary_pos_emb_vision(k.unsqueeze(0), freqs).squeeze(0)
    return q.transpose(0, 1), k.transpose(0, 1)


def vision_window_order(visual: nn.Module, grid_thw: torch.Tensor) -> torch.Tensor | None:
    """Qwen2.5-VL runs its blocks on window-ordered merge units; returns ``argsort(window_index)`` (block order ->
    output order of merged tokens), or None for Qwen2-VL (no reordering)."""
    if not hasattr(visual, "fullatt_block_indexes"):
        return None
    module = sys.modules[type(visual).__module__]
    if hasattr(module, "get_vision_window_index"):
        window_index, _ = _call_with_supported(
            module.get_vision_window_index, grid_thw, spatial_merge_size=visual.spatial_merge_size,
            window_size=visual.window_size, patch_size=visual.patch_size, kwargs={})
    elif hasattr(visual, "get_window_index"):
        window_index, _ = visual.get_window_index(grid_thw)
    else:
        raise ValueError("cannot find the Qwen2.5-VL window index function in this transformers version")
    return torch.argsort(window_index)


class VisionZipAdapter(HookAdapter):
    """VisionZip (arXiv 2412.04467) on Qwen2-VL / Qwen2.5-VL, with the declared no-CLS deviation.

    ``with VisionZipAdapter(model, dominant=54, contextual=10): model.generate(**processor_outputs)`` with the
    processor's FULL prompt. Per image: score = attention each patch receives in the last vision block (mean over
    queries of its image and heads, ``reference_impls.ops.scored_attention`` column sums, memory O(N)), averaged over
    the spatial_merge_size**2 patches of each merged token (keys likewise for the metric); then
    ``visionzip(..., has_cls=False)`` on the merged tokens. The LLM input keeps the dominant tokens and the contextual
    tokens at the positions (and 3-D M-RoPE ids) of their own / their target's placeholder; the dropped placeholders
    are removed from the sequence (the forward receives ``inputs_embeds``, ``position_ids`` and a shortened
    ``attention_mask``; decoding steps get the shortened mask). Images with at most ``dominant + contextual``
    merged tokens are kept whole. Videos are not supported. The vision encoder still runs on every patch.
    """

    def __init__(self, model: nn.Module, dominant: int = 54, contextual: int = 10, *,
                 require_compression: bool = True, impl: str = "auto"):
        super().__init__(model)
        check_visionzip_counts(dominant, contextual)
        if dominant + contextual == 0:
            raise ValueError("dominant + contextual must be >= 1")
        self.dominant, self.contextual = dominant, contextual
        self.visual = find_submodule(model, "visual")
        self.merge_unit = self.visual.spatial_merge_size ** 2
        self.image_token_id = int(config_value(model, "image_token_id"))
        self.require_compression, self.impl = require_compression, impl
        self.num_compressed_prefills = 0
        self.kept_indices = None  # [B, L'] original positions of the last prefill, -1 = padding
        self.results = []
        self._reset()

    def _reset(self):
        self._captured = None
        self._grid = None
        self._short_mask = None
        self._full_len = 0

    def _install(self):
        self._reset()
        self._pre(self.visual, self._grid_hook)
        self._pre(self.visual.blocks[-1], self._score_hook)
        self._pre(self.model, self._top_pre)
        self._post(self.model, self._top_post)

    # ---- scores in the vision tower -----------------------------------------------------------------------------
    def _grid_hook(self, visual, args, kwargs):
        self._grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        return None

    def _score_hook(self, block, args, kwargs):
        from ..encode.visionzip import group_mean, mean_received_attention

        hidden = args[0] if args else kwargs["hidden_states"]
        q, k = vision_block_qk(block, hidden, kwargs)
        cu = kwargs.get("cu_seqlens")
        bounds = cu.tolist() if cu is not None else [0, hidden.shape[0]]
        scale = getattr(block.attn, "scaling", q.shape[-1] ** -0.5)
        parts = [mean_received_attention(q[:, a:b][None], k[:, a:b][None], scale=scale, impl=self.impl)[0]
                 for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        scores = group_mean(torch.cat(parts), self.merge_unit)
        metric = group_mean(k.mean(0).float(), self.merge_unit)
        order = vision_window_order(self.visual, self._grid)
        if order is not None:  # block order -> output order of the merged tokens
            scores, metric = scores[order], metric[order]
        self._captured = (scores, metric)
        return None

    # ---- prompt rewriting ----------------------------------------------------------------------------------------
    def _top_pre(self, module, args, kwargs):
        # a direct forward call may pass no cache at all (a prefill); generate passes it as 'cache' or
        # 'past_key_values' depending on the transformers release
        past = cached_length(next((kwargs[name] for name in CACHE_NAMES if kwargs.get(name) is not None), None))
        ids = kwargs.get("input_ids", args[0] if args else None)
        encoded = kwargs.get("mm_encoder_outputs") or {}
        if (kwargs.get("pixel_values") is not None or encoded.get("image") is not None) and past == 0:
            if args:
                raise ValueError("VisionZipAdapter: pass input_ids as a keyword argument")
            return args, self._prefill(kwargs)
        if self._short_mask is not None and past > 0 and kwargs.get("attention_mask") is not None:
            full = kwargs["attention_mask"]
            return args, {**kwargs, "attention_mask": torch.cat([self._short_mask, full[:, self._full_len:]], 1)}
        if ids is not None and past == 0:
            self._short_mask = None
        return None

    def _prefill(self, kwargs):
        from ..encode.visionzip import visionzip

        if kwargs.get("pixel_values_videos") is not None:
            raise ValueError("VisionZipAdapter: videos are not supported")
        ids = kwargs["input_ids"]
        batch, length = ids.shape
        mask = kwargs.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask
        encoded = (kwargs.get("mm_encoder_outputs") or {}).get("image")
        if encoded is None:  # plain forward: run the vision tower here (the hooks capture the scores)
            self._captured = None
            out = self.visual(kwargs["pixel_values"].type(self.visual.dtype), grid_thw=kwargs["image_grid_thw"])
            features = out.pooler_output if hasattr(out, "pooler_output") else out
        else:  # generate() encoded the images before this call (transformers 5.x): the hooks already ran
            pooled = encoded.pooler_output
            features = torch.cat(list(pooled), 0) if isinstance(pooled, (list, tuple)) else pooled
        if self._captured is None or self._grid is None:
            raise CompressionError("VisionZipAdapter: the image features were computed outside the adapter")
        scores, metric = self._captured
        self._captured = None
        grid = self._grid
        position_ids = kwargs.get("position_ids")
        if position_ids is None:
            inner = getattr(self.model, "model", self.model)
            position_ids, _ = _call_with_supported(
                inner.get_rope_index, ids, image_grid_thw=grid, video_grid_thw=None, attention_mask=mask,
                mm_token_type_ids=kwargs.get("mm_token_type_ids"))
        sizes = (grid.prod(-1) // self.merge_unit).tolist()
        keep = torch.zeros(features.shape[0], dtype=torch.bool, device=features.device)
        values = features.clone()
        self.results = []
        start = 0
        for n in sizes:
            rows = slice(start, start + n)
            if self.dominant + self.contextual >= n:
                keep[rows] = True
                self.results.append(None)
            else:
                res = visionzip(features[rows][None], scores[rows][None], metric[rows][None], self.dominant,
                                self.contextual, has_cls=False, impl=self.impl)
                self.results.append(res)
                keep[start + res.dominant_idx[0]] = True
                keep[start + res.target_idx[0]] = True
                values[start + res.target_idx[0]] = res.tokens[0, self.dominant:]
            start += n
        if bool(keep.all()):  # every image is small enough: leave the call untouched (exact identity)
            self._short_mask = None
            self.kept_indices = None
            return kwargs
        image = ids == self.image_token_id
        if int(image.sum()) != features.shape[0]:
            raise ValueError(f"{int(image.sum())} image placeholders for {features.shape[0]} image features: pass the "
                             "processor's full prompt")
        embeds = self.model.get_input_embeddings()(ids)
        embeds = embeds.masked_scatter(image[..., None], values.to(embeds.dtype))
        keep_token = mask.bool() & ~image
        keep_token[image] = keep  # placeholders are filled row by row, in order
        counts = keep_token.sum(1)
        order = torch.argsort((~keep_token).to(torch.int8), dim=1, stable=True)  # kept positions first, in order
        slots = torch.arange(length, device=ids.device)[None, :]
        kept = left_pad_indices(torch.where(slots < counts[:, None], order, -1), counts)
        self.kept_indices = kept
        new_pos = gather_seq(position_ids[..., None], kept)[..., 0]
        self._short_mask = (kept >= 0).long()
        self._full_len = length
        new = {k: v for k, v in kwargs.items() if k not in ("input_ids", "pixel_values", "image_grid_thw",
                                                             "mm_token_type_ids", "mm_encoder_outputs")}
        new.update(inputs_embeds=gather_rows(embeds, kept), attention_mask=self._short_mask, position_ids=new_pos)
        return new

    def _top_post(self, module, args, kwargs, output):
        if kwargs.get("inputs_embeds") is None or self._short_mask is None:
            return None
        if kwargs["inputs_embeds"].shape[1] != self._short_mask.shape[1]:
            return None  # a decoding step
        if self._short_mask.shape[1] >= self._full_len:
            raise CompressionError("VisionZipAdapter: the LLM sequence did not get shorter")
        self.num_compressed_prefills += 1
        return None

    def _check_on_exit(self):
        if self.require_compression and self.num_compressed_prefills == 0:
            raise CompressionError("VisionZipAdapter was active but no prompt was compressed (no image with more "
                                   "than dominant + contextual merged tokens reached the model)")
