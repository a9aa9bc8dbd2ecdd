"""LiteVLM patch (camera-view) selection before the ViT (Huang et al., arXiv 2506.07416, "Patch Selection Module").

A small text transformer (4 layers) encodes the query; N learnable latent queries (one per camera view) cross-attend
to the encoded text; each latent gives one logit (independent binary classification per view), trained with the
sum over views of binary cross-entropy. At inference the view score is a weighted sum of the module's output and a
lexical keyword-matching score; views above a threshold are encoded by the ViT, the others produce no vision tokens.

Components
- ``ViewSelector(num_views, vocab_size, d_model, n_layers=4)``: ``forward(token_ids, padding_mask) -> logits [B, V]``.
- ``view_selection_loss`` (summed BCE) and ``train_step`` (one optimiser step).
- ``lexical_scores(texts, keyword_map, num_views)``: 1 where a keyword of that view occurs in the query.
- ``select_views(logits, lexical, ...)``: combined score and keep mask [B, V].
- ``naive_encode_selected_views`` (spec: per-sample, per-view loop) and ``encode_selected_views`` (one batched ViT
  call over the kept views only): dropped views never reach the vision encoder.
- ``hash_tokenize``: a dependency-free word tokenizer (stable CRC32 hashing) for tests and demos.

Sources and deviations. The full text of the paper could not be read here: only the arXiv HTML abstract and
introduction and a third-party summary (themoonlight.io review) were reachable. The summary gives: 4-layer
transformer encoder over the tokenised query, cross-attention with N learnable latent queries (N = cameras, 6 for
DriveLM), one independent logit per view, summed BCE, labels from lexical matching (explicit view references) and
GPT-3.5-Turbo (implicit), inference score = weighted sum of lexical scores and module output, threshold. Unknown,
hence chosen here (declared deviations):
- width, heads, feed-forward size, positional embeddings (learned) and pre-norm layers;
- the latent queries are the attention *queries* and the encoded text the keys/values (Perceiver style); the
  summary's wording ("query features attend to latent queries") is ambiguous;
- the weighted sum uses sigmoid probabilities (not raw logits) so that ``threshold`` lives in [0, 1];
  defaults ``model_weight = lexical_weight = 0.5``, ``threshold = 0.5``;
- at least ``min_views`` (default 1) views are always kept (highest combined score) so no sample loses all views;
- weights are untrained (random init); no pretrained checkpoint exists in this repository.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ViewSelector",
    "view_selection_loss",
    "train_step",
    "lexical_scores",
    "select_views",
    "naive_encode_selected_views",
    "encode_selected_views",
    "hash_tokenize",
    "NUSCENES_KEYWORDS",
]

#: An example keyword map for the six nuScenes / DriveLM cameras (view order as in DriveLM).
NUSCENES_KEYWORDS: dict[str, list[int]] = {
    "front": [0, 1, 2],
    "front left": [1],
    "front right": [2],
    "back": [3, 4, 5],
    "rear": [3, 4, 5],
    "back left": [4],
    "back right": [5],
    "left": [1, 4],
    "right": [2, 5],
    "behind": [3, 4, 5],
    "ahead": [0],
}


class ViewSelector(nn.Module):
    """Text transformer + one learnable latent query per view -> one logit per view."""

    def __init__(
        self,
        num_views: int,
        vocab_size: int,
        d_model: int = 128,
        n_layers: int = 4,
        n_heads: int = 4,
        max_len: int = 128,
        dropout: float = 0.0,
    ):
        super().__init__()
        if num_views < 1 or vocab_size < 2 or n_layers < 1 or d_model % n_heads:
            raise ValueError("need num_views >= 1, vocab_size >= 2, n_layers >= 1 and d_model divisible by n_heads")
        self.num_views, self.max_len = num_views, max_len
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout, batch_first=True, norm_first=True)
        self.text_encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.text_norm = nn.LayerNorm(d_model)
        self.view_latents = nn.Parameter(torch.randn(num_views, d_model) * 0.02)
        self.cross_attention = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.head = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, 1))

    def forward(self, token_ids: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """token_ids [B, T] (T <= max_len); padding_mask [B, T] bool, True = padding. Returns logits [B, V]."""
        if token_ids.dim() != 2 or token_ids.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"token_ids must be an integer tensor [B, T], got {token_ids.dtype} {tuple(token_ids.shape)}"
            )
        if token_ids.shape[1] == 0 or token_ids.shape[1] > self.max_len:
            raise ValueError(f"query length must be in [1, {self.max_len}], got {token_ids.shape[1]}")
        if padding_mask is not None and (padding_mask.shape != token_ids.shape or padding_mask.dtype != torch.bool):
            raise ValueError("padding_mask must be a bool tensor shaped like token_ids")
        x = self.token_embedding(token_ids) + self.position_embedding[: token_ids.shape[1]]
        text = self.text_norm(self.text_encoder(x, src_key_padding_mask=padding_mask))
        latents = self.view_latents.expand(token_ids.shape[0], -1, -1)
        per_view, _ = self.cross_attention(latents, text, text, key_padding_mask=padding_mask, need_weights=False)
        return self.head(per_view + latents).squeeze(-1)


def view_selection_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over views of the binary cross-entropy, averaged over the batch (L_PSM = sum_i BCE(p_i, y_i))."""
    if logits.shape != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ in shape")
    return F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").sum(-1).mean()


def train_step(model: ViewSelector, optimizer: torch.optim.Optimizer, token_ids, labels, padding_mask=None) -> float:
    """One optimisation step on a batch; returns the loss value."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = view_selection_loss(model(token_ids, padding_mask), labels)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _words(text: str) -> str:
    return " " + " ".join(re.findall(r"[a-z0-9]+", text.lower())) + " "


def lexical_scores(texts: Sequence[str], keyword_map: Mapping[str, Sequence[int]], num_views: int) -> torch.Tensor:
    """[B, V] float: 1 where a keyword (whole words, case-insensitive) of the view occurs in the query, else 0."""
    scores = torch.zeros(len(texts), num_views)
    for keyword, views in keyword_map.items():
        for view in views:
            if not 0 <= view < num_views:
                raise ValueError(f"keyword {keyword!r} maps to view {view}, outside [0, {num_views})")
    for row, text in enumerate(texts):
        words = _words(text)
        for keyword, views in keyword_map.items():
            if _words(keyword) in words:
                scores[row, list(views)] = 1.0
    return scores


def select_views(
    logits: torch.Tensor,
    lexical: torch.Tensor | None = None,
    *,
    model_weight: float = 0.5,
    lexical_weight: float = 0.5,
    threshold: float = 0.5,
    min_views: int = 1,
):
    """Combined score ``model_weight * sigmoid(logits) + lexical_weight * lexical`` and keep mask [B, V] (score >=
    threshold, plus the best ``min_views`` views of every sample). Returns (keep [B, V] bool, score [B, V])."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, V], got {tuple(logits.shape)}")
    if lexical is not None and lexical.shape != logits.shape:
        raise ValueError(f"lexical scores {tuple(lexical.shape)} must match logits {tuple(logits.shape)}")
    if model_weight < 0 or lexical_weight < 0 or model_weight + lexical_weight == 0:
        raise ValueError("weights must be non-negative and not both zero")
    if not 0 <= min_views <= logits.shape[1]:
        raise ValueError(f"min_views must be in [0, {logits.shape[1]}], got {min_views}")
    score = model_weight * torch.sigmoid(logits.float())
    if lexical is not None:
        score = score + lexical_weight * lexical.to(score)
    keep = score >= threshold
    if min_views:
        best = torch.topk(score, min_views, dim=1).indices
        keep = keep.scatter(1, best, True)
    return keep, score


def _check_views(views: torch.Tensor, keep: torch.Tensor) -> None:
    if views.dim() < 3 or keep.shape != views.shape[:2] or keep.dtype != torch.bool:
        raise ValueError(
            f"views must be [B, V, ...] and keep a bool [B, V]; got {tuple(views.shape)}, "
            f"{tuple(keep.shape)} {keep.dtype}"
        )


def naive_encode_selected_views(
    encoder: Callable[[torch.Tensor], torch.Tensor], views: torch.Tensor, keep: torch.Tensor
):
    """Spec: encode each kept view on its own (``encoder([1, ...]) -> [1, T, C]``) and concatenate per sample.
    Returns (tokens [B, max_tokens, C] zero padded on the right, lengths [B])."""
    _check_views(views, keep)
    per_sample = []
    for b in range(views.shape[0]):
        encoded = [encoder(views[b, v][None])[0] for v in range(views.shape[1]) if keep[b, v]]
        per_sample.append(torch.cat(encoded, 0) if encoded else None)
    template = next(t for t in per_sample if t is not None) if any(t is not None for t in per_sample) else None
    if template is None:
        raise ValueError("no view is kept in any sample")
    lengths = torch.tensor([0 if t is None else t.shape[0] for t in per_sample], dtype=torch.long)
    out = template.new_zeros(len(per_sample), int(lengths.max()), template.shape[-1])
    for b, t in enumerate(per_sample):
        if t is not None:
            out[b, : t.shape[0]] = t
    return out, lengths


def encode_selected_views(encoder: Callable[[torch.Tensor], torch.Tensor], views: torch.Tensor, keep: torch.Tensor):
    """One batched encoder call over the kept views only (dropped views cost no ViT compute and produce no
    tokens). Same outputs as ``naive_encode_selected_views``."""
    _check_views(views, keep)
    if not bool(keep.any()):
        raise ValueError("no view is kept in any sample")
    batch_idx, view_idx = keep.nonzero(as_tuple=True)  # row-major: sample order, then view order
    encoded = encoder(views[batch_idx, view_idx])  # [K, T, C]
    tokens_per_view = encoded.shape[1]
    counts = keep.sum(1)
    lengths = counts * tokens_per_view
    out = encoded.new_zeros(views.shape[0], int(lengths.max()), encoded.shape[-1])
    slot = torch.cumsum(keep.long(), 1)[batch_idx, view_idx] - 1  # rank of the view among its sample's kept views
    positions = slot[:, None] * tokens_per_view + torch.arange(tokens_per_view, device=encoded.device)
    out[batch_idx[:, None], positions] = encoded
    return out, lengths


def hash_tokenize(texts: Sequence[str], vocab_size: int, max_len: int = 128):
    """Lower-case word tokenizer with stable CRC32 hashing into ids [1, vocab_size); 0 is padding.
    Returns (token_ids [B, T] int64, padding_mask [B, T] bool, True = padding)."""
    if vocab_size < 2:
        raise ValueError("vocab_size must be >= 2")
    rows = [[1 + zlib.crc32(w.encode()) % (vocab_size - 1) for w in _words(t).split()][:max_len] or [1] for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    pad = torch.ones(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        pad[i, : len(r)] = False
    return ids, pad
