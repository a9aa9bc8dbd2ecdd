"""A minimal LVLM in plain PyTorch (gpt-fast style): ViT -> projector -> Llama-style decoder.

* Vision: ViT with optional CLS, learned position embedding, pre-norm blocks (LayerNorm or RMSNorm,
  quick-GELU/GELU/SwiGLU MLP), features read at ``vision.feature_layer`` (LLaVA: penultimate).
* Projector: LLaVA 2-layer MLP (GELU) on patch features (CLS dropped), or Qwen2.5-VL 2x2 patch merger.
* Decoder: RMSNorm, RoPE, GQA, SwiGLU, untied LM head; attention output from
  ``F.scaled_dot_product_attention``; attention *scores* only through ``reference_impls.ops.scored_attention``
  on the few query rows that a hook or a cache asks for.
* Static KV cache with per-layer, per-row lengths (``kv_cache.py`` documents the protocol), ragged
  right-padded batches (``lengths``), images spliced at ``image_token_id`` placeholders anywhere in the
  prompt, prefill + decode + greedy generation, decoder-only use (``forward_tokens``) for speculative
  decoding, tree masks (``chunk_mask``) and cache rollback.

Random weights, seeded (``MinimalLVLM(cfg, seed=0)``). Not a checkpoint loader.

Techniques attach to it like to a Hugging Face model (``with FastV(k=2)(model): model.generate(...)``, see
``reference_impls.technique``): ``model.techniques`` lists the attached ones, which ``prefill`` / ``generate`` /
``new_cache`` / ``encode_images`` consult by kind; explicit ``hooks=`` / ``cache=`` arguments still work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reference_impls.models.config import LVLMConfig, VisionConfig
from reference_impls.models.hooks import Hook, LayerContext, TokenState
from reference_impls.models.kv_cache import AttendKV, KVCache, StaticKVCache


# ============================================================================ building blocks
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


def rope_cos_sin(positions: Tensor, head_dim: int, theta: float, dtype) -> tuple[Tensor, Tensor]:
    """cos/sin ``[B, 1, T, D]`` for integer positions ``[B, T]`` (HF "rotate_half" layout), fp32 math."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.float()[..., None] * inv_freq  # [B, T, D/2]
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # [B, 1, T, D]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def chunk_attention_mask(kv_lengths: Tensor, T: int, Lk: int, chunk_mask: Optional[Tensor] = None) -> Tensor:
    """Bool ``[B, h, T, Lk]`` (h = 1 or Hkv): key slot ``j`` valid (``j < kv_len``) and causal for the chunk's
    query ``i`` at slot ``kv_len - T + i`` (bottom-right); ``chunk_mask [B, T, T]`` (True = may attend)
    further restricts attention among the chunk's own tokens (tree attention)."""
    kl = kv_lengths[:, None] if kv_lengths.dim() == 1 else kv_lengths  # [B, h]
    j = torch.arange(Lk, device=kl.device)
    qslot = kl[..., None] - T + torch.arange(T, device=kl.device)  # [B, h, T]
    allowed = (j < kl[..., None, None]) & (j <= qslot[..., None])
    if chunk_mask is not None:
        B, h = kl.shape
        rel = j - (kl[..., None] - T)  # [B, h, Lk]
        picked = torch.gather(
            chunk_mask[:, None].expand(B, h, T, T), 3, rel.clamp(0, T - 1)[:, :, None, :].expand(B, h, T, Lk)
        )
        allowed = allowed & ((rel < 0)[:, :, None, :] | picked)
    return allowed


def sdpa_attend(q: Tensor, kv: AttendKV, empty_cache: bool, chunk_mask: Optional[Tensor] = None) -> Tensor:
    """Attention output ``[B, Hq, T, D]`` of the chunk queries over ``kv`` (SDPA, no score matrix kept)."""
    B, Hq, T, D = q.shape
    Hkv, Lk = kv.k.shape[1], kv.k.shape[2]
    G = Hq // Hkv
    if empty_cache and chunk_mask is None and Lk == T and kv.kv_lengths.dim() == 1:
        # cache was empty: Lk == T and right padding never leaks into valid rows under a causal mask
        return F.scaled_dot_product_attention(q, kv.k, kv.v, is_causal=True, enable_gqa=G > 1)
    mask = chunk_attention_mask(kv.kv_lengths, T, Lk, chunk_mask)  # [B, h, T, Lk]
    if G == 1:
        return F.scaled_dot_product_attention(q, kv.k, kv.v, attn_mask=mask)
    # fold each GQA group into the query axis: q [B, Hkv, G*T, D]; masks are per kv head
    qf = q.reshape(B, Hkv, G * T, D)
    mf = mask[:, :, None].expand(B, mask.shape[1], G, T, Lk).reshape(B, mask.shape[1], G * T, Lk)
    return F.scaled_dot_product_attention(qf, kv.k, kv.v, attn_mask=mf).reshape(B, Hq, T, D)


def rows_colsum(q: Tensor, k: Tensor, v: Tensor, kv_lengths: Tensor, rows: Tensor, impl: str = "auto") -> Tensor:
    """``colsum [B, Hq, Lk]`` (slot space) of the chunk query ``rows [B, T]`` with ``ops.scored_attention``.

    ``q [B, Hq, T, D]`` are the chunk's queries, bottom-right aligned to ``kv_lengths`` (query ``i`` at slot
    ``kv_len - T + i``). Only a window of ``S`` query rows ending at each row's last selected query is sent
    to the kernel (``S = 1`` for FastV/PyramidDrop), with ``kv_lengths`` cut so the alignment still holds.
    """
    from reference_impls.ops import scored_attention

    B, Hq, T, D = q.shape
    ar = torch.arange(T, device=q.device)
    has = rows.any(dim=1)
    first = torch.where(rows, ar, T).amin(dim=1).where(has, torch.zeros_like(has, dtype=torch.long))
    last = torch.where(rows, ar, -1).amax(dim=1).where(has, torch.zeros_like(has, dtype=torch.long))
    S = int((last - first + 1).max().item())
    idx = last[:, None] + 1 - S + torch.arange(S, device=q.device)  # [B, S], may be < 0
    in_range = idx >= 0
    q_win = torch.gather(q, 2, idx.clamp(min=0)[:, None, :, None].expand(B, Hq, S, D))
    sel = torch.gather(rows, 1, idx.clamp(min=0)) & in_range & has[:, None]
    cut = T - 1 - last  # keys after the last row
    kv_eff = kv_lengths - (cut if kv_lengths.dim() == 1 else cut[:, None])
    _, _, colsum = scored_attention(q_win, k, v, causal=True, kv_lengths=kv_eff, score_q_mask=sel, impl=impl)
    return colsum


def slots_to_chunk(colsum: Tensor, kv_lengths: Tensor, T: int) -> Tensor:
    """Slot-space ``[B, Hq, Lk]`` -> the chunk's own tokens ``[B, Hq, T]`` (slots ``kv_len - T + t``)."""
    B, Hq, _ = colsum.shape
    old = kv_lengths - T
    if old.dim() == 2:
        old = old.repeat_interleave(Hq // old.shape[1], dim=1)  # [B, Hq]
    else:
        old = old[:, None].expand(B, Hq)
    idx = old[..., None] + torch.arange(T, device=colsum.device)
    return torch.gather(colsum, 2, idx)


# ============================================================================ decoder
class Attention(nn.Module):
    def __init__(self, cfg: LVLMConfig):
        super().__init__()
        self.cfg = cfg
        C, Hq, Hkv, D = cfg.hidden, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(C, Hq * D, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(C, Hkv * D, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(C, Hkv * D, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(Hq * D, C, bias=False)

    def _heads(self, x: Tensor, n: int) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, n, self.cfg.head_dim).transpose(1, 2)

    def project_qkv(self, h: Tensor, positions: Tensor):
        """Normalised hidden ``[B, T, C]`` -> post-RoPE ``q [B,Hq,T,D]``, ``k, v [B,Hkv,T,D]``."""
        cfg = self.cfg
        cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta, h.dtype)
        q = apply_rope(self._heads(self.q_proj(h), cfg.n_heads), cos, sin)
        k = apply_rope(self._heads(self.k_proj(h), cfg.n_kv_heads), cos, sin)
        v = self._heads(self.v_proj(h), cfg.n_kv_heads)
        return q, k, v

    def project_q(self, h: Tensor, positions: Tensor) -> Tensor:
        cos, sin = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta, h.dtype)
        return apply_rope(self._heads(self.q_proj(h), self.cfg.n_heads), cos, sin)

    def project_k(self, h: Tensor, positions: Tensor) -> Tensor:
        cos, sin = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta, h.dtype)
        return apply_rope(self._heads(self.k_proj(h), self.cfg.n_kv_heads), cos, sin)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LVLMConfig):
        super().__init__()
        self.input_norm = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.post_norm = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.mlp = SwiGLU(cfg.hidden, cfg.intermediate)

    def forward(
        self,
        x,
        positions,
        n_new,
        cache: KVCache,
        layer_idx: int,
        score_rows: Sequence[Optional[Tensor]],
        chunk_mask=None,
        score_impl="auto",
    ):
        B, T, C = x.shape
        q, k, v = self.attn.project_qkv(self.input_norm(x), positions)
        empty = cache.max_length_bound(layer_idx) == 0
        kv = cache.update(layer_idx, k, v, positions, n_new)
        o = sdpa_attend(q, kv, empty, chunk_mask)
        if chunk_mask is not None and any(r is not None for r in score_rows):
            raise ValueError("attention scores together with a chunk_mask are not supported")
        colsums = [None if r is None else rows_colsum(q, kv.k, kv.v, kv.kv_lengths, r, score_impl) for r in score_rows]
        x = x + self.attn.o_proj(o.transpose(1, 2).reshape(B, T, -1))
        x = x + self.mlp(self.post_norm(x))
        return x, colsums, kv, q

    def attn_scores_before(self, h_norm: Tensor, positions: Tensor, rows: Tensor, score_impl="auto") -> Tensor:
        """Single-row recomputation (PyramidDrop): ``[B, Hq, T]`` colsum of ``rows`` over the chunk's keys."""
        q, k, _ = self.attn.project_qkv(h_norm, positions)
        T = h_norm.shape[1]
        full = torch.full((h_norm.shape[0],), T, dtype=torch.long, device=h_norm.device)
        return rows_colsum(q, k, k, full, rows, score_impl)


# ============================================================================ vision
class VisionAttention(nn.Module):
    def __init__(self, vc: VisionConfig):
        super().__init__()
        self.n_heads = vc.n_heads
        self.qkv = nn.Linear(vc.width, 3 * vc.width, bias=True)
        self.proj = nn.Linear(vc.width, vc.width, bias=True)

    def project_qkv(self, x: Tensor):
        """``[N, L, W]`` -> q, k, v ``[N, H, L, W/H]`` (for encoder-side techniques, e.g. VisionZip)."""
        N, L, W = x.shape
        qkv = self.qkv(x).view(N, L, 3, self.n_heads, W // self.n_heads).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.project_qkv(x)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.proj(o.transpose(1, 2).reshape(x.shape))


class VisionMLP(nn.Module):
    def __init__(self, vc: VisionConfig):
        super().__init__()
        self.act = vc.mlp_act
        if vc.mlp_act == "swiglu":
            self.inner = SwiGLU(vc.width, vc.mlp_dim, bias=True)
        else:
            self.fc1 = nn.Linear(vc.width, vc.mlp_dim)
            self.fc2 = nn.Linear(vc.mlp_dim, vc.width)

    def forward(self, x: Tensor) -> Tensor:
        if self.act == "swiglu":
            return self.inner(x)
        h = self.fc1(x)
        h = h * torch.sigmoid(1.702 * h) if self.act == "quick_gelu" else F.gelu(h)
        return self.fc2(h)


def _norm(kind: str, dim: int, eps: float) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps)
    raise ValueError(f"unknown norm {kind!r}")


class VisionBlock(nn.Module):
    def __init__(self, vc: VisionConfig):
        super().__init__()
        self.norm1 = _norm(vc.norm, vc.width, vc.norm_eps)
        self.attn = VisionAttention(vc)
        self.norm2 = _norm(vc.norm, vc.width, vc.norm_eps)
        self.mlp = VisionMLP(vc)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionEncoder(nn.Module):
    def __init__(self, vc: VisionConfig):
        super().__init__()
        self.vc = vc
        self.patch_embed = nn.Conv2d(3, vc.width, vc.patch_size, stride=vc.patch_size, bias=False)
        self.cls = nn.Parameter(torch.zeros(vc.width)) if vc.use_cls else None
        self.pos_embed = nn.Parameter(torch.zeros(vc.n_encoder_tokens, vc.width))
        self.pre_norm = _norm(vc.norm, vc.width, vc.norm_eps) if vc.pre_norm else nn.Identity()
        self.blocks = nn.ModuleList(VisionBlock(vc) for _ in range(vc.n_layers))

    def embed(self, pixels: Tensor) -> Tensor:
        vc = self.vc
        if pixels.dim() != 4 or pixels.shape[1] != 3 or pixels.shape[2:] != (vc.image_size, vc.image_size):
            raise ValueError(
                f"pixel_values must be [N, 3, {vc.image_size}, {vc.image_size}], got {tuple(pixels.shape)}"
            )
        x = self.patch_embed(pixels.to(self.patch_embed.weight.dtype)).flatten(2).transpose(1, 2)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], dim=1)
        return self.pre_norm(x + self.pos_embed)

    def forward(self, pixels: Tensor, n_blocks: Optional[int] = None) -> Tensor:
        """Hidden state after ``n_blocks`` blocks (default: the configured feature layer), ``[N, L, W]``."""
        x = self.embed(pixels)
        for block in self.blocks[: self.vc.n_layers_run if n_blocks is None else n_blocks]:
            x = block(x)
        return x


class Projector(nn.Module):
    def __init__(self, cfg: LVLMConfig):
        super().__init__()
        self.kind, self.merge, W = cfg.projector, cfg.merge_size, cfg.vision.width
        if self.kind == "patch_merger":
            self.norm = RMSNorm(W, cfg.vision.norm_eps)
            self.fc1 = nn.Linear(W * self.merge**2, W * self.merge**2)
            self.fc2 = nn.Linear(W * self.merge**2, cfg.hidden)
        else:
            self.fc1 = nn.Linear(W, cfg.hidden)
            self.fc2 = nn.Linear(cfg.hidden, cfg.hidden)

    def forward(self, patches: Tensor) -> Tensor:
        """Patch features ``[N, P, W]`` (raster order, no CLS) -> LLM tokens ``[N, n_visual, hidden]``."""
        if self.kind == "patch_merger":
            N, P, W = patches.shape
            g, m = int(round(P**0.5)), self.merge
            x = self.norm(patches).view(N, g // m, m, g // m, m, W).permute(0, 1, 3, 2, 4, 5)
            patches = x.reshape(N, (g // m) ** 2, m * m * W)
        return self.fc2(F.gelu(self.fc1(patches)))


# ============================================================================ the model
@dataclass
class PrefillResult:
    logits: Tensor  # [B, V] logits of each row's last prompt token
    cache: KVCache
    state: TokenState  # the chunk after the last layer (pruned / merged)
    layer_tokens: Tensor  # [n_layers, B] tokens processed by each layer (for accounting)


class MinimalLVLM(nn.Module):
    def __init__(self, cfg: LVLMConfig, seed: int = 0, dtype=torch.float32, device=None, score_impl: str = "auto"):
        super().__init__()
        self.cfg = cfg
        self.score_impl = score_impl
        self.techniques: list = []  # attached techniques (reference_impls.technique), managed by hosts.MinimalHost
        self.run_stats = None  # the attached host's RunStats, filled by prefill / generate
        with torch.device("meta"):  # no default init: 7B-shaped models materialise directly in `dtype`
            self.vision = VisionEncoder(cfg.vision)
            self.projector = Projector(cfg)
            self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden)
            self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_layers))
            self.norm = RMSNorm(cfg.hidden, cfg.norm_eps)
            self.lm_head = nn.Linear(cfg.hidden, cfg.vocab_size, bias=False)
        self.to(dtype=dtype)
        self.to_empty(device=device if device is not None else "cpu")
        self.init_weights(seed)
        self.eval()

    @torch.no_grad()
    def init_weights(self, seed: int) -> None:
        """Deterministic random init: N(0, init_std) for matrices, embeddings and biases; norms 1 / 0."""
        norm_params = {}
        for m in self.modules():
            if isinstance(m, (nn.LayerNorm, RMSNorm)):
                norm_params[id(m.weight)] = 1.0
                if getattr(m, "bias", None) is not None:
                    norm_params[id(m.bias)] = 0.0
        gens = {}
        for _, p in sorted(self.named_parameters()):
            if id(p) in norm_params:
                p.fill_(norm_params[id(p)])
                continue
            g = gens.get(p.device)
            if g is None:
                g = gens[p.device] = torch.Generator(device=p.device)
                g.manual_seed(seed)
            p.normal_(0.0, self.cfg.init_std, generator=g)

    @property
    def dtype(self):
        return self.embed_tokens.weight.dtype

    @property
    def device(self):
        return self.embed_tokens.weight.device

    # ------------------------------------------------------------------ vision side
    def vision_features(self, pixel_values: Tensor) -> Tensor:
        """ViT hidden state at the feature layer, ``[N, n_encoder_tokens, W]`` (CLS first if any)."""
        return self.vision(pixel_values)

    def project(self, patch_features: Tensor) -> Tensor:
        """Patch features without CLS ``[N, P, W]`` -> visual tokens ``[N, n, hidden]``."""
        return self.projector(patch_features)

    def encode_images(self, pixel_values: Tensor) -> Tensor:
        """``[N, 3, H, W]`` -> visual tokens ``[N, n, hidden]`` (``n = cfg.n_visual_tokens`` unless an attached
        encoder-side technique reduces them)."""
        for technique in self._attached("encoder"):
            return technique.minimal_image_features(self, pixel_values)
        feats = self.vision_features(pixel_values)
        if self.cfg.vision.use_cls:
            feats = feats[:, 1:]
        return self.project(feats)

    def embed(
        self,
        input_ids: Tensor,
        image_features: Union[Tensor, List[Tensor], None] = None,
        lengths: Optional[Tensor] = None,
    ):
        """Token embeddings with visual tokens spliced in at ``image_token_id`` placeholders (reading order).

        Returns ``(embeds [B, T, C], vis_mask [B, T] bool)``. ``image_features``: ``[N_img, n, C]`` or a list of
        ``[n_i, C]`` tensors; their total count must equal the number of (valid) placeholders.
        """
        B, T = input_ids.shape
        valid = self._valid(lengths, B, T)
        vis = (input_ids == self.cfg.image_token_id) & valid
        emb = self.embed_tokens(input_ids)
        n_ph = int(vis.sum().item())
        if image_features is None:
            if n_ph:
                raise ValueError(f"{n_ph} image placeholders but no image features")
            return emb, vis
        feats = (
            torch.cat(list(image_features), 0)
            if isinstance(image_features, (list, tuple))
            else image_features.reshape(-1, image_features.shape[-1])
        )
        if feats.shape[0] != n_ph:
            raise ValueError(f"{feats.shape[0]} visual tokens for {n_ph} image placeholders")
        emb = emb.masked_scatter(vis[..., None], feats.to(emb.dtype))
        return emb, vis

    # ------------------------------------------------------------------ decoder
    def _valid(self, lengths, B, T):
        if lengths is None:
            return torch.ones(B, T, dtype=torch.bool, device=self.device)
        if lengths.shape != (B,) or bool((lengths < 1).any()) or bool((lengths > T).any()):
            raise ValueError(f"lengths must be [B]={B} with values in [1, {T}]")
        return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]

    def _attached(self, stage: str) -> list:
        return [t for t in self.techniques if t.stage == stage]

    def cache_spec(self):
        from reference_impls.technique import CacheSpec

        cfg = self.cfg
        inv_freq = 1.0 / (
            cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, device=self.device, dtype=torch.float32) / cfg.head_dim)
        )
        return CacheSpec(cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, self.dtype, self.device, inv_freq)

    def new_cache(self, batch_size: int, capacity: Optional[int] = None) -> KVCache:
        """The attached KV technique's cache, else a ``StaticKVCache`` of ``capacity`` rows."""
        for technique in self._attached("kv"):
            return technique.make_cache(self.cache_spec(), batch_size)
        return StaticKVCache.for_model(self.cfg, batch_size, capacity, dtype=self.dtype, device=self.device)

    def run_decoder(
        self,
        embeds: Tensor,
        *,
        positions: Optional[Tensor] = None,
        lengths: Optional[Tensor] = None,
        cache: Optional[KVCache] = None,
        hooks: Sequence[Hook] = (),
        vis_mask: Optional[Tensor] = None,
        chunk_mask: Optional[Tensor] = None,
    ) -> tuple[TokenState, KVCache]:
        """Run all decoder layers on a chunk. Returns the final state (before the final norm) and the cache.
        Attached token techniques and the cache's own hooks (``cache.model_hooks()``) run after ``hooks``."""
        B, T, C = embeds.shape
        if C != self.cfg.hidden:
            raise ValueError(f"embeds last dim {C} != hidden {self.cfg.hidden}")
        valid = self._valid(lengths, B, T)
        n_new = valid.sum(dim=1)
        if cache is None:
            cache = self.new_cache(B, T)
        if cache.batch_size != B:
            raise ValueError(f"cache batch {cache.batch_size} != input batch {B}")
        hooks = [*hooks, *self._attached("decoder"), *getattr(cache, "model_hooks", list)()]
        if positions is None:
            positions = cache.next_position[:, None] + torch.arange(T, device=embeds.device)
        elif positions.shape != (B, T):
            raise ValueError(f"positions must be [B, T]=({B}, {T}), got {tuple(positions.shape)}")
        positions = torch.where(valid, positions, -1)
        if chunk_mask is not None and chunk_mask.shape != (B, T, T):
            raise ValueError(f"chunk_mask must be [B, T, T]=({B}, {T}, {T})")
        logical_next = torch.gather(positions, 1, (n_new - 1)[:, None])[:, 0] + 1
        vis = torch.zeros(B, T, dtype=torch.bool, device=embeds.device) if vis_mask is None else vis_mask & valid
        ar = torch.arange(T, device=embeds.device)
        state = TokenState(
            hidden=embeds,
            positions=positions,
            lengths=n_new,
            vis_mask=vis,
            source_index=torch.where(valid, ar[None, :], -1),
            sizes=valid.float(),
            phase="prefill" if cache.max_length_bound(0) == 0 else "extend",
        )
        shifts = [cache.rope_shift(l).clone() for l in range(self.cfg.n_layers)]
        for l, layer in enumerate(self.layers):
            delta = shifts[l] - (shifts[l - 1] if l > 0 else 0)  # RoPE frame change (0 unless re-indexed)
            state.positions = torch.where(state.valid_mask(), state.positions + delta[:, None], -1)
            ctx = LayerContext(self, l, cache)
            for h in hooks:
                state = h.before_layer(l, state, ctx)
            state.layer_tokens.append(state.lengths.clone())
            rows = [h.score_rows(l, state) for h in hooks]
            cache_rows = cache.wants_scores(l, state.lengths, state.width)
            hidden, colsums, kv, queries = layer(
                state.hidden, state.positions, state.lengths, cache, l, rows + [cache_rows], chunk_mask, self.score_impl
            )
            state.hidden = hidden
            if cache_rows is not None:
                if getattr(cache, "wants_queries", False):
                    cache.observe_scores(l, colsums[-1], cache_rows, queries=queries)
                else:
                    cache.observe_scores(l, colsums[-1], cache_rows)
            # RoPE frame of this layer for future tokens
            last_pos = torch.gather(state.positions, 1, (state.lengths - 1)[:, None])[:, 0]
            cache.set_rope_shift(l, last_pos + 1 - logical_next)
            for h, cs in zip(hooks, colsums[:-1]):
                chunk_cs = None if cs is None else slots_to_chunk(cs, kv.kv_lengths, state.width)
                state = h.after_layer(l, state, ctx, chunk_cs)
            if chunk_mask is not None and state.width != T:
                raise ValueError("hooks may not change the chunk when a chunk_mask is given")
        cache.next_position = logical_next
        return state, cache

    def logits(self, hidden: Tensor) -> Tensor:
        return self.lm_head(self.norm(hidden)).float()

    def forward_tokens(
        self,
        input_ids: Optional[Tensor] = None,
        inputs_embeds: Optional[Tensor] = None,
        positions: Optional[Tensor] = None,
        cache: Optional[KVCache] = None,
        *,
        lengths: Optional[Tensor] = None,
        hooks: Sequence[Hook] = (),
        vis_mask: Optional[Tensor] = None,
        chunk_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """Decoder-only forward: logits ``[B, T, V]`` (fp32) for every chunk position (hooks must not prune here;
        use ``prefill`` for pruning). ``positions`` default to the cache's next logical positions."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids / inputs_embeds")
        emb = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        state, _ = self.run_decoder(
            emb,
            positions=positions,
            lengths=lengths,
            cache=cache,
            hooks=hooks,
            vis_mask=vis_mask,
            chunk_mask=chunk_mask,
        )
        if state.width != emb.shape[1]:
            raise ValueError("forward_tokens returns per-position logits; pruning hooks belong in prefill()")
        return self.logits(state.hidden)

    def prefill(
        self,
        input_ids: Tensor,
        pixel_values: Optional[Tensor] = None,
        *,
        lengths: Optional[Tensor] = None,
        image_features=None,
        cache: Optional[KVCache] = None,
        capacity: Optional[int] = None,
        hooks: Sequence[Hook] = (),
    ) -> PrefillResult:
        """Encode images, splice them in, run the decoder with ``hooks``; logits of each row's last token."""
        if pixel_values is not None and image_features is not None:
            raise ValueError("give pixel_values or image_features, not both")
        if pixel_values is not None:
            image_features = self.encode_images(pixel_values)
        emb, vis = self.embed(input_ids, image_features, lengths)
        B, T = input_ids.shape
        if cache is None:
            cache = self.new_cache(B, capacity or self.cfg.max_seq_len)
        state, cache = self.run_decoder(emb, lengths=lengths, cache=cache, hooks=hooks, vis_mask=vis)
        last = state.last_index()
        n_orig = self._valid(lengths, B, T).sum(dim=1)
        src_last = torch.gather(state.source_index, 1, last[:, None])[:, 0]
        if bool((src_last != n_orig - 1).any()):
            raise RuntimeError("a hook removed the last prompt token")
        h_last = torch.gather(state.hidden, 1, last[:, None, None].expand(B, 1, state.hidden.shape[-1]))[:, 0]
        res = PrefillResult(self.logits(h_last), cache, state, torch.stack(state.layer_tokens))
        if self.run_stats is not None:
            self.run_stats.layer_tokens = res.layer_tokens
            self.run_stats.kept_indices = torch.where(state.valid_mask(), state.source_index, -1)
            self.run_stats.prefills += 1
            self._record_cache(cache)
        return res

    def _record_cache(self, cache: KVCache) -> None:
        stats = self.run_stats
        stats.cache_lengths = [cache.lengths(l).clone() for l in range(self.cfg.n_layers)]
        stats.kv_bytes = cache.kv_bytes() if hasattr(cache, "kv_bytes") else None

    def decode_step(self, tokens: Tensor, cache: KVCache) -> Tensor:
        """One token per row ``[B]`` at the cache's next positions -> logits ``[B, V]``."""
        return self.forward_tokens(input_ids=tokens[:, None], cache=cache)[:, 0]

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        pixel_values: Optional[Tensor] = None,
        *,
        max_new_tokens: int = 16,
        lengths: Optional[Tensor] = None,
        image_features=None,
        hooks: Sequence[Hook] = (),
        cache: Optional[KVCache] = None,
        on_step=None,
    ) -> Tensor:
        """Greedy generation: ``[B, max_new_tokens]`` token ids (no stop tokens). ``on_step(step, cache)`` is called
        after the prefill (step 0) and after every decode step. An attached decoding technique (speculative
        decoding) takes over the whole generation."""
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        for technique in self._attached("decoding"):
            return technique.minimal_generate(
                self,
                input_ids,
                pixel_values,
                max_new_tokens=max_new_tokens,
                lengths=lengths,
                image_features=image_features,
            )
        if cache is None:
            cache = self.new_cache(input_ids.shape[0], input_ids.shape[1] + max_new_tokens)
        res = self.prefill(
            input_ids, pixel_values, lengths=lengths, image_features=image_features, cache=cache, hooks=hooks
        )
        tok = res.logits.argmax(-1)
        out = [tok]
        if on_step is not None:
            on_step(0, res.cache)
        for step in range(1, max_new_tokens):
            tok = self.decode_step(tok, res.cache).argmax(-1)
            out.append(tok)
            if on_step is not None:
                on_step(step, res.cache)
        if self.run_stats is not None:
            self._record_cache(res.cache)
        return torch.stack(out, dim=1)
