"""LiteVLM pipeline composed end to end (arXiv 2506.07416): view selection -> token selection -> speculative
decoding -> FP8 post-training quantisation, each stage switchable, with a per-stage latency breakdown.

Stages (all reused from their reference modules; this file is composition only):
1. View (patch) selection -- ``encode.litevlm_view_selection``: the query is tokenised, the ``ViewSelector``
   scores each camera view, combined with lexical keyword scores; only kept views reach the ViT
   (``encode_selected_views``), dropped views produce no vision tokens.
2. Token selection -- ``prefill.litevlm_token_selection.TokenSelection`` (FastV / PyramidDrop / VisionZip).
3. Speculative decoding -- ``decode.speculative`` chain (or tree) SD with a layer-truncated self-draft; greedy,
   so it is lossless w.r.t. the (possibly token-selected / quantised) target.
4. FP8 -- ``decode.quantization.quantize_model(..., "fp8")`` on a copy of the model (and of the draft).

With every stage disabled the pipeline reproduces ``model.generate`` on all views exactly. Prompt layout:
``prefix ids + one placeholder per visual token (kept views, in view order) + question ids``. Batch size 1.
Deviations from the paper (whose method sections could not be read; abstract + a third-party summary only):
the draft is a truncated copy of the target, not a separately trained small VLM; the token-selection rule is the
repository's FastV/PDrop/VisionZip (see that module); FP8 uses dynamic per-token activation scales (no
calibration); timings are wall-clock per stage on whatever device runs it (the paper's numbers are DRIVE Thor).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from reference_impls.decode.quantization import quantize_model
from reference_impls.decode.speculative import speculative_generate, speculative_generate_tree
from reference_impls.decode.speculative.lvlm_adapter import LVLMSpecLM, truncated_draft
from reference_impls.encode.litevlm_view_selection import (
    NUSCENES_KEYWORDS,
    ViewSelector,
    encode_selected_views,
    hash_tokenize,
    lexical_scores,
    select_views,
)
from reference_impls.prefill.litevlm_token_selection import TokenSelection


@dataclass
class LiteVLMConfig:
    view_selection: bool = False
    view_threshold: float = 0.5
    keyword_map: dict = field(default_factory=lambda: dict(NUSCENES_KEYWORDS))
    token_selection: TokenSelection = field(default_factory=TokenSelection)
    speculative: bool = False
    draft_layers: int = 1
    k: int = 4
    tree: bool = False
    fp8: bool = False
    max_new_tokens: int = 16


@dataclass
class PipelineResult:
    tokens: torch.Tensor
    latency_ms: dict
    kept_views: torch.Tensor
    visual_tokens: int
    spec_stats: Optional[object] = None


def _timer(device):
    def now():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    return now


class LiteVLMPipeline:
    def __init__(
        self,
        model,
        cfg: LiteVLMConfig = LiteVLMConfig(),
        view_selector: Optional[ViewSelector] = None,
        prefix_ids: Optional[torch.Tensor] = None,
    ):
        self.cfg = cfg
        self.base_model = model
        if cfg.view_selection and view_selector is None:
            raise ValueError("view_selection=True needs a ViewSelector")
        if cfg.speculative and not 1 <= cfg.draft_layers <= model.cfg.n_layers:
            raise ValueError(f"draft_layers must be in [1, {model.cfg.n_layers}]")
        self.view_selector = view_selector
        self.model = model
        self.draft = truncated_draft(model, cfg.draft_layers) if cfg.speculative else None
        if cfg.fp8:
            self.model = copy.deepcopy(model)
            quantize_model(self.model, "fp8")
            if self.draft is not None:
                quantize_model(self.draft, "fp8")
        dev = model.device
        self.prefix_ids = prefix_ids if prefix_ids is not None else torch.tensor([[1, 2, 3]], device=dev)

    def build_prompt(self, question_ids: torch.Tensor, n_visual: int) -> torch.Tensor:
        image = torch.full((1, n_visual), self.model.cfg.image_token_id, dtype=torch.long, device=question_ids.device)
        return torch.cat([self.prefix_ids.to(question_ids.device), image, question_ids], 1)

    @torch.no_grad()
    def run(self, question: str, question_ids: torch.Tensor, views: torch.Tensor) -> PipelineResult:
        """``question`` (text, for view selection), ``question_ids [1, Tq]``, ``views [1, V, 3, H, W]``."""
        if views.dim() != 5 or views.shape[0] != 1 or question_ids.shape[0] != 1:
            raise ValueError("batch size 1: views must be [1, V, 3, H, W] and question_ids [1, Tq]")
        cfg, model = self.cfg, self.model
        now = _timer(views.device)
        lat = {}
        t0 = now()
        if cfg.view_selection:
            vocab = self.view_selector.token_embedding.num_embeddings
            tok, pad = hash_tokenize([question], vocab, max_len=self.view_selector.max_len)
            logits = self.view_selector(tok.to(views.device), pad.to(views.device))
            lexical = lexical_scores([question], cfg.keyword_map, views.shape[1]).to(views.device)
            keep, _ = select_views(logits, lexical, threshold=cfg.view_threshold)
        else:
            keep = torch.ones(1, views.shape[1], dtype=torch.bool, device=views.device)
        t1 = now()
        lat["view_selection"] = (t1 - t0) * 1e3
        feats, lengths = encode_selected_views(lambda px: cfg.token_selection.image_features(model, px), views, keep)
        feats = feats[0, : int(lengths[0])]
        t2 = now()
        lat["vision"] = (t2 - t1) * 1e3
        ids = self.build_prompt(question_ids, feats.shape[0])
        prefill_kw = dict(image_features=feats, hooks=cfg.token_selection.hooks())
        capacity = ids.shape[1] + cfg.max_new_tokens + 16 + (64 if cfg.tree else cfg.k + 2)
        target = LVLMSpecLM(model, capacity)
        stats = None
        if cfg.speculative:
            draft = LVLMSpecLM(self.draft, capacity)
            t_logits = target.prefill(ids, **prefill_kw)
            t3 = now()
            gen = speculative_generate_tree if cfg.tree else speculative_generate
            extra = {} if cfg.tree else {"k": cfg.k}
            tokens, stats = gen(
                target,
                draft,
                ids,
                cfg.max_new_tokens,
                target_prefill_logits=t_logits,
                draft_prefill_kwargs=dict(image_features=feats),
                **extra,
            )
        else:
            t_logits = target.prefill(ids, **prefill_kw)
            t3 = now()
            tokens = [int(t_logits.argmax())]
            while len(tokens) < cfg.max_new_tokens:
                tokens.append(int(target.forward(torch.tensor([[tokens[-1]]], device=ids.device))[0, -1].argmax()))
            tokens = torch.tensor(tokens)
        t4 = now()
        lat["prefill"] = (t3 - t2) * 1e3
        lat["decode"] = (t4 - t3) * 1e3  # includes the draft's prefill when speculative
        lat["total"] = (t4 - t0) * 1e3
        return PipelineResult(tokens, lat, keep[0], int(feats.shape[0]), stats)


def baseline_generate(model, prefix_ids, question_ids, views, max_new_tokens: int) -> torch.Tensor:
    """The unmodified model on all views (what the all-disabled pipeline must reproduce)."""
    n_vis = views.shape[1] * model.cfg.n_visual_tokens
    image = torch.full((1, n_vis), model.cfg.image_token_id, dtype=torch.long, device=question_ids.device)
    ids = torch.cat([prefix_ids, image, question_ids], 1)
    return model.generate(ids, views[0], max_new_tokens=max_new_tokens)[0]
