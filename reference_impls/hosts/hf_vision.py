"""Encoder-side machinery of the Hugging Face hosts: VisionZip (``encode.visionzip.VisionZip``) on LLaVA's CLIP tower
and on Qwen2-VL / Qwen2.5-VL, and ToMe (``encode.tome.ToMe``) inside LLaVA's CLIP tower. Forward hooks only,
removed by the function ``install`` returns.

* LLaVA, VisionZip: a pre-hook on the CLIP encoder layer whose output is the feature layer (``vision_feature_layer``,
  -2 by default) recomputes that layer's CLS query row and keys (layer-norm, q/k projections) and gets the CLS
  attention from ``ops.scored_attention`` with one score row, so the ViT keeps SDPA; a pre-hook on
  ``multi_modal_projector`` replaces its input ``[B, N, C]`` by the VisionZip tokens ``[B, dominant + contextual,
  C]``. Every image then needs ``dominant + contextual`` placeholder tokens (``VisionZip.shrink_image_placeholders``).
  With the default ``vision_feature_select_strategy="default"`` LLaVA drops the CLS token before the projector, so
  the dominant set is the top-``dominant`` patches (the CLS token scores only); with ``"full"`` the CLS token is kept
  and counted among the dominant tokens, as in the paper. A list of feature layers is not supported.
* Qwen2-VL / Qwen2.5-VL, VisionZip: the declared no-CLS deviation (attention received in the last vision block,
  averaged over the 2x2 patches of each merged token). The prefill call is rewritten (``inputs_embeds`` + explicit
  M-RoPE ``position_ids`` + shortened ``attention_mask``) because the number of placeholders and the 3-D positions
  derive from ``image_grid_thw`` inside the model; pass the processor's full prompt. Videos are not supported; the
  vision encoder still runs on every patch.

An image whose token count is at most ``dominant + contextual`` is left whole (the identity).

``vision_adapter(host, technique)`` picks the adapter; ``HFHost.attach`` installs it for encoder techniques.
"""

from __future__ import annotations

import inspect
import sys

import torch
from torch import nn

from reference_impls.hosts.hf_model import config_value, find_submodule, gather_seq, left_pad_indices
from reference_impls.technique import UnsupportedModel


class _Hooks:
    """Registered forward hooks of one installed encoder technique."""

    def __init__(self):
        self.handles = []

    def pre(self, module: nn.Module, fn) -> None:
        self.handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))

    def post(self, module: nn.Module, fn) -> None:
        self.handles.append(module.register_forward_hook(fn, with_kwargs=True))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def gather_rows(hidden: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """hidden [B, L, C] -> [B, K, C]; rows with idx == -1 are zero."""
    out = gather_seq(hidden, idx)
    return out * (idx >= 0)[..., None].to(out.dtype)


class LlavaVisionZip:
    """VisionZip on a LLaVA model's CLIP tower (see the module docstring); ``install()`` returns the remover."""

    def __init__(self, host, technique):
        model = host.model
        self.host, self.technique = host, technique
        tower = find_submodule(model, "vision_tower")
        vision_model = getattr(tower, "vision_model", tower)
        self.layers = vision_model.encoder.layers
        feature_layer = config_value(model, "vision_feature_layer", default=-2)
        if not isinstance(feature_layer, int):
            raise ValueError(f"visionzip: a list of vision_feature_layer ({feature_layer}) is not supported")
        num_layers = len(self.layers)
        index = num_layers + feature_layer if feature_layer < 0 else feature_layer - 1
        if not 0 <= index < num_layers:
            raise ValueError(f"visionzip: vision_feature_layer={feature_layer} does not name an encoder layer output")
        self.score_layer = self.layers[index]
        self.keeps_cls = config_value(model, "vision_feature_select_strategy", default="default") == "full"
        vcfg = vision_model.config
        self.num_patches = (vcfg.image_size // vcfg.patch_size) ** 2
        self.full_tokens_per_image = self.num_patches + int(self.keeps_cls)
        if self.keeps_cls and technique.dominant < 1:
            raise ValueError("visionzip: with the 'full' feature strategy the CLS token is dominant: dominant >= 1")
        self.projector = find_submodule(model, "multi_modal_projector")
        self._scores = None

    def install(self):
        hooks = _Hooks()
        hooks.pre(self.score_layer, self._score_hook)
        hooks.pre(self.projector, self._projector_hook)
        return hooks.remove

    def _score_hook(self, module, args, kwargs):
        from reference_impls.encode.visionzip import cls_attention_scores

        hidden = args[0] if args else kwargs["hidden_states"]
        attn = module.self_attn
        normed = module.layer_norm1(hidden)
        batch, length, _ = normed.shape
        heads = attn.num_heads
        head_dim = normed.shape[-1] // heads
        q = attn.q_proj(normed[:, :1]).view(batch, 1, heads, head_dim).transpose(1, 2)
        k = attn.k_proj(normed).view(batch, length, heads, head_dim).transpose(1, 2)
        scale = getattr(attn, "scale", head_dim**-0.5)
        self._scores = (cls_attention_scores(q, k, scale=scale, impl=self.technique.impl), k.mean(1))
        return None

    def _projector_hook(self, module, args, kwargs):
        from reference_impls.encode.visionzip import visionzip

        features = args[0] if args else kwargs["image_features"]
        t = self.technique
        if self._scores is None:
            raise RuntimeError("visionzip: the vision encoder's score layer did not run before the projector")
        scores, metric = self._scores
        self._scores = None
        if t.dominant + t.contextual >= features.shape[1]:
            return None  # the image is left whole (identity)
        if features.shape[1] == self.num_patches + 1:  # "full": CLS kept
            result = visionzip(features, scores, metric, t.dominant, t.contextual, has_cls=True, impl=t.impl)
        elif features.shape[1] == self.num_patches:  # "default": CLS cropped, score with it, keep patches
            result = visionzip(
                features, scores[:, 1:], metric[:, 1:], t.dominant, t.contextual, has_cls=False, impl=t.impl
            )
        else:
            raise RuntimeError(
                f"visionzip: projector input has {features.shape[1]} tokens; expected "
                f"{self.num_patches} or {self.num_patches + 1}"
            )
        self.host.stats.extra["visionzip"] = result
        self.host.stats.extra["visual_tokens_per_image"] = result.tokens.shape[1]
        if args:
            return (result.tokens, *args[1:]), kwargs
        return args, {**kwargs, "image_features": result.tokens}


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
            module.get_vision_window_index,
            grid_thw,
            spatial_merge_size=visual.spatial_merge_size,
            window_size=visual.window_size,
            patch_size=visual.patch_size,
            kwargs={},
        )
    elif hasattr(visual, "get_window_index"):
        window_index, _ = visual.get_window_index(grid_thw)
    else:
        raise ValueError("cannot find the Qwen2.5-VL window index function in this transformers version")
    return torch.argsort(window_index)


class QwenVisionZip:
    """VisionZip on Qwen2-VL / Qwen2.5-VL, with the declared no-CLS deviation; pass the processor's FULL prompt.
    Per image: score = attention each patch receives in the last vision block (mean over queries of its image and
    heads, ``reference_impls.ops.scored_attention`` column sums, memory O(N)), averaged over
    the spatial_merge_size**2 patches of each merged token (keys likewise for the metric); then
    ``visionzip(..., has_cls=False)`` on the merged tokens. The LLM input keeps the dominant tokens and the contextual
    tokens at the positions (and 3-D M-RoPE ids) of their own / their target's placeholder; the dropped placeholders
    are removed from the sequence (the forward receives ``inputs_embeds``, ``position_ids`` and a shortened
    ``attention_mask``; decoding steps get the shortened mask). Images with at most ``dominant + contextual``
    merged tokens are kept whole. Videos are not supported. The vision encoder still runs on every patch.
    """

    def __init__(self, host, technique):
        self.host, self.model = host, host.model
        self.dominant, self.contextual, self.impl = technique.dominant, technique.contextual, technique.impl
        self.visual = find_submodule(self.model, "visual")
        self.merge_unit = self.visual.spatial_merge_size**2
        self.image_token_id = int(config_value(self.model, "image_token_id"))
        self.kept_indices = None  # [B, L'] original positions of the last prefill, -1 = padding
        self.results = []
        self._reset()

    def _reset(self):
        self._captured = None
        self._grid = None
        self._short_mask = None
        self._full_len = 0

    def install(self):
        self._reset()
        hooks = _Hooks()
        hooks.pre(self.visual, self._grid_hook)
        hooks.pre(self.visual.blocks[-1], self._score_hook)
        hooks.pre(self.model, self._top_pre)
        return hooks.remove

    # ---- scores in the vision tower -----------------------------------------------------------------------------
    def _grid_hook(self, visual, args, kwargs):
        self._grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        return None

    def _score_hook(self, block, args, kwargs):
        from reference_impls.encode.visionzip import group_mean, mean_received_attention

        hidden = args[0] if args else kwargs["hidden_states"]
        q, k = vision_block_qk(block, hidden, kwargs)
        cu = kwargs.get("cu_seqlens")
        bounds = cu.tolist() if cu is not None else [0, hidden.shape[0]]
        scale = getattr(block.attn, "scaling", q.shape[-1] ** -0.5)
        parts = [
            mean_received_attention(q[:, a:b][None], k[:, a:b][None], scale=scale, impl=self.impl)[0]
            for a, b in zip(bounds[:-1], bounds[1:])
            if b > a
        ]
        scores = group_mean(torch.cat(parts), self.merge_unit)
        metric = group_mean(k.mean(0).float(), self.merge_unit)
        order = vision_window_order(self.visual, self._grid)
        if order is not None:  # block order -> output order of the merged tokens
            scores, metric = scores[order], metric[order]
        self._captured = (scores, metric)
        return None

    # ---- prompt rewriting ----------------------------------------------------------------------------------------
    def _top_pre(self, module, args, kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))  # transformers >= 5.25 / 5.17 names
        past = cache.get_seq_length() if cache is not None and hasattr(cache, "get_seq_length") else 0
        ids = kwargs.get("input_ids", args[0] if args else None)
        encoded = kwargs.get("mm_encoder_outputs") or {}
        if (kwargs.get("pixel_values") is not None or encoded.get("image") is not None) and past == 0:
            if args:
                raise ValueError("visionzip: pass input_ids as a keyword argument")
            return args, self._prefill(kwargs)
        if self._short_mask is not None and past > 0 and kwargs.get("attention_mask") is not None:
            full = kwargs["attention_mask"]
            return args, {**kwargs, "attention_mask": torch.cat([self._short_mask, full[:, self._full_len :]], 1)}
        if ids is not None and past == 0:
            self._short_mask = None
        return None

    def _prefill(self, kwargs):
        from reference_impls.encode.visionzip import visionzip

        if kwargs.get("pixel_values_videos") is not None:
            raise ValueError("visionzip: videos are not supported")
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
            raise RuntimeError("visionzip: the image features were computed outside the technique")
        scores, metric = self._captured
        self._captured = None
        grid = self._grid
        position_ids = kwargs.get("position_ids")
        if position_ids is None:
            inner = getattr(self.model, "model", self.model)
            position_ids, _ = _call_with_supported(
                inner.get_rope_index,
                ids,
                image_grid_thw=grid,
                video_grid_thw=None,
                attention_mask=mask,
                mm_token_type_ids=kwargs.get("mm_token_type_ids"),
            )
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
                res = visionzip(
                    features[rows][None],
                    scores[rows][None],
                    metric[rows][None],
                    self.dominant,
                    self.contextual,
                    has_cls=False,
                    impl=self.impl,
                )
                self.results.append(res)
                keep[start + res.dominant_idx[0]] = True
                keep[start + res.target_idx[0]] = True
                values[start + res.target_idx[0]] = res.tokens[0, self.dominant :]
            start += n
        if bool(keep.all()):  # every image is small enough: leave the call untouched (exact identity)
            self._short_mask = None
            self.kept_indices = None
            return kwargs
        image = ids == self.image_token_id
        if int(image.sum()) != features.shape[0]:
            raise ValueError(
                f"{int(image.sum())} image placeholders for {features.shape[0]} image features: pass the "
                "processor's full prompt"
            )
        embeds = self.model.get_input_embeddings()(ids)
        embeds = embeds.masked_scatter(image[..., None], values.to(embeds.dtype))
        keep_token = mask.bool() & ~image
        keep_token[image] = keep  # placeholders are filled row by row, in order
        counts = keep_token.sum(1)
        order = torch.argsort((~keep_token).to(torch.int8), dim=1, stable=True)  # kept positions first, in order
        slots = torch.arange(length, device=ids.device)[None, :]
        kept = left_pad_indices(torch.where(slots < counts[:, None], order, -1), counts)
        self.kept_indices = kept
        self.host.stats.extra["visionzip"] = self.results
        self.host.stats.extra["kept_columns"] = kept
        new_pos = gather_seq(position_ids[..., None], kept)[..., 0]
        self._short_mask = (kept >= 0).long()
        self._full_len = length
        new = {
            k: v
            for k, v in kwargs.items()
            if k not in ("input_ids", "pixel_values", "image_grid_thw", "mm_token_type_ids", "mm_encoder_outputs")
        }
        new.update(inputs_embeds=gather_rows(embeds, kept), attention_mask=self._short_mask, position_ids=new_pos)
        return new


class LlavaToMe:
    """ToMe inside a LLaVA model's CLIP tower, merging at block boundaries (see ``encode.tome``): a pre-hook on
    every layer up to the feature layer merges its input with the keys of the layer before (captured from that
    layer's ``k_proj``) and gives it, and every later layer, the proportional-attention bias ``log(size)`` as its
    ``attention_mask``."""

    def __init__(self, host, technique):
        from reference_impls.encode.tome import clip_tower_schedule

        model = host.model
        self.host, self.technique = host, technique
        tower = find_submodule(model, "vision_tower")
        vision_model = getattr(tower, "vision_model", tower)
        self.layers = vision_model.encoder.layers
        feature_layer = config_value(model, "vision_feature_layer")
        self.merge_layers, self.schedule = clip_tower_schedule(len(self.layers), feature_layer, technique.r)
        self.heads = self.layers[0].self_attn.num_heads
        self._keys = None
        self._size = None

    def install(self):
        hooks = _Hooks()
        hooks.pre(find_submodule(self.host.model, "multi_modal_projector"), self._count)
        hooks.pre(self.layers[0], self._reset)
        for i, layer in enumerate(self.layers):
            if i + 1 in self.merge_layers:
                hooks.post(layer.self_attn.k_proj, self._keep_keys)
            if i >= 1:
                hooks.pre(layer, self._layer_hook(i))
        return hooks.remove

    def _reset(self, module, args, kwargs):
        self._size = None
        return None

    def _count(self, module, args, kwargs):
        features = args[0] if args else kwargs["image_features"]
        self.host.stats.extra["visual_tokens_per_image"] = features.shape[1]
        return None

    def _keep_keys(self, module, args, kwargs, output):
        batch, length, width = output.shape
        self._keys = output.view(batch, length, self.heads, width // self.heads).mean(2)
        return None

    def _layer_hook(self, index: int):
        from reference_impls.encode.tome import bipartite_soft_matching, merge_wavg

        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            if index in self.merge_layers:
                r = self.schedule[self.merge_layers.index(index)]
                if r > 0:
                    merge, _ = bipartite_soft_matching(self._keys, r, protect_first=1, impl=self.technique.impl)
                    hidden, self._size = merge_wavg(merge, hidden, self._size)
                self._keys = None
            if self._size is None:
                return None
            B, L, _ = hidden.shape
            bias = self._size.log().to(hidden.dtype)[:, None, None, :, 0].expand(B, 1, L, L)
            if args:
                return (hidden, bias, *args[2:]), {k: v for k, v in kwargs.items() if k != "attention_mask"}
            return args, {**kwargs, "hidden_states": hidden, "attention_mask": bias}

        return hook


def vision_adapter(host, technique):
    """The adapter that runs an encoder technique inside ``host``'s vision tower (LLaVA: ToMe, VisionZip; Qwen2-VL
    and Qwen2.5-VL: VisionZip)."""
    if technique.name == "tome" and host.name == "llava":
        return LlavaToMe(host, technique)
    if technique.name == "visionzip":
        return (LlavaVisionZip if host.name == "llava" else QwenVisionZip)(host, technique)
    raise UnsupportedModel(f"{technique.name} has no vision adapter for host {host.name!r}")
