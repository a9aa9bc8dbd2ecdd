"""Hybrid sliding-window-attention + Gated DeltaNet decoder stack (InfiniteVL arXiv 2512.08829 pattern;
Gated DeltaNet arXiv 2412.06464), with a recurrent decode path and state carried across calls.

Layer ``i`` is sliding-window attention when ``i % swa_every == 0`` (default 4: 1 SWA : 3 GDN, InfiniteVL's
``layer_types``), else a Gated DeltaNet layer:

* GDN layer: q, k, v projections -> depthwise causal conv (kernel 4) + SiLU -> L2-normalised q, k;
  ``beta = sigmoid(W_b x)``, ``g = -exp(A_log) * softplus(W_a x + dt_bias)``; gated delta rule
  (``reference_impls.ops.gated_delta``); per-head gated RMSNorm ``RMSNorm(o) * silu(W_z x)``; o_proj.
  Per-layer state: ``S [B,H,K,V]`` (fp32) and the conv state (last ``conv_size-1`` inputs, ``[B,C,conv-1]``).
* SWA layer: GQA attention with RoPE; query at position i sees keys ``i - W < j <= i`` (W = ``window``,
  the inclusive look-back counting the query itself). The cache keeps only the last ``W - 1`` keys.

Memory of the whole state is constant in the context length. Deviations: the SWA cache is a bounded
concatenate-and-slice buffer rather than a ring buffer of W slots (same contents, simpler code); batches
are dense (all rows advance together, no ragged lengths); the GDN prefill uses the naive chunked form
(no fused chunk kernel); weights are random (seeded) -- this is a structural reference, not InfiniteVL's
checkpoint; no vision tower (decoder-only stack).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from reference_impls.models.minimal_lvlm import RMSNorm, apply_rope, rope_cos_sin
from reference_impls.ops.gated_delta import gated_delta_rule


@dataclass
class HybridGDNConfig:
    vocab_size: int = 256
    d_model: int = 64
    n_layers: int = 4
    swa_every: int = 4
    # SWA layers
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 16
    window: int = 8
    rope_theta: float = 10000.0
    # GDN layers
    gdn_heads: int = 4
    gdn_head_dim: int = 16
    expand_v: int = 2
    conv_size: int = 4
    # MLP
    mlp_hidden: int = 128
    norm_eps: float = 1e-6
    seed: int = 0

    @property
    def layer_types(self) -> list[str]:
        return ["sliding_attention" if i % self.swa_every == 0 else "linear_attention" for i in range(self.n_layers)]

    def validate(self):
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.conv_size < 1 or self.swa_every < 1:
            raise ValueError("conv_size and swa_every must be >= 1")


@dataclass
class HybridGDNState:
    """Everything carried between calls: per-layer entries plus the number of tokens seen."""

    seen: int = 0
    layers: dict = field(default_factory=dict)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for entry in self.layers.values() for t in entry.values())


class SlidingWindowAttention(nn.Module):
    def __init__(self, cfg: HybridGDNConfig):
        super().__init__()
        self.cfg = cfg
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)

    def forward(self, x, positions, cache: dict):
        c = self.cfg
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, c.n_heads, c.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)
        cos, sin = rope_cos_sin(positions[None], c.head_dim, c.rope_theta, torch.float32)
        q, k = apply_rope(q.float(), cos, sin).to(x.dtype), apply_rope(k.float(), cos, sin).to(x.dtype)
        if "k" in cache:
            k = torch.cat([cache["k"], k], 2)
            v = torch.cat([cache["v"], v], 2)
            key_pos = torch.cat([cache["pos"], positions])
        else:
            key_pos = positions
        rel = positions[:, None] - key_pos[None, :]
        allowed = (rel >= 0) & (rel < c.window)  # i - W < j <= i
        G = c.n_heads // c.n_kv_heads
        kk, vv = k.repeat_interleave(G, 1), v.repeat_interleave(G, 1)
        scores = (q.float() @ kk.float().transpose(-1, -2)) / math.sqrt(c.head_dim)
        scores = scores.masked_fill(~allowed, float("-inf"))
        out = (scores.softmax(-1) @ vv.float()).to(x.dtype)
        keep = max(c.window - 1, 0)
        start = k.shape[2] - keep
        cache["k"], cache["v"], cache["pos"] = k[:, :, start:], v[:, :, start:], key_pos[start:]
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class GatedDeltaNetLayer(nn.Module):
    def __init__(self, cfg: HybridGDNConfig):
        super().__init__()
        self.cfg = cfg
        H, K = cfg.gdn_heads, cfg.gdn_head_dim
        Vd = K * cfg.expand_v
        self.key_dim, self.value_dim = H * K, H * Vd
        self.q_proj = nn.Linear(cfg.d_model, H * K, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, H * K, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, H * Vd, bias=False)
        self.z_proj = nn.Linear(cfg.d_model, H * Vd, bias=False)
        self.a_proj = nn.Linear(cfg.d_model, H, bias=False)
        self.b_proj = nn.Linear(cfg.d_model, H, bias=False)
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(1, 16)))
        self.dt_bias = nn.Parameter(torch.log(torch.expm1(torch.empty(H).uniform_(1e-3, 1e-1))))
        channels = 2 * H * K + H * Vd
        self.conv_weight = nn.Parameter(torch.randn(channels, cfg.conv_size) / math.sqrt(cfg.conv_size))
        self.o_norm_weight = nn.Parameter(torch.ones(Vd))
        self.o_proj = nn.Linear(H * Vd, cfg.d_model, bias=False)

    def _short_conv(self, x, cache):
        """Depthwise causal conv + SiLU over time; x [B,T,C]; conv state = last (conv_size-1) inputs."""
        B, T, C = x.shape
        w = self.cfg.conv_size
        past = cache.get("conv")
        if past is None:
            past = x.new_zeros(B, C, w - 1)
        xt = torch.cat([past, x.transpose(1, 2)], -1)  # [B, C, w-1+T]
        cache["conv"] = xt[..., xt.shape[-1] - (w - 1) :] if w > 1 else xt[..., :0]
        out = F.conv1d(xt, self.conv_weight[:, None, :], groups=C)  # [B, C, T]
        return F.silu(out.transpose(1, 2))

    def forward(self, x, cache: dict, mode="auto", impl="auto"):
        c = self.cfg
        B, T, _ = x.shape
        H, K = c.gdn_heads, c.gdn_head_dim
        Vd = K * c.expand_v
        qkv = self._short_conv(torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], -1), cache)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.value_dim], -1)
        q = F.normalize(q.view(B, T, H, K).float(), dim=-1)
        k = F.normalize(k.view(B, T, H, K).float(), dim=-1)
        v = v.view(B, T, H, Vd).float()
        beta = torch.sigmoid(self.b_proj(x).float())
        g = -self.A_log.float().exp() * F.softplus(self.a_proj(x).float() + self.dt_bias.float())
        o, cache["S"] = gated_delta_rule(
            q, k, v, g, beta, initial_state=cache.get("S"), output_final_state=True, mode=mode, impl=impl
        )
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + c.norm_eps) * self.o_norm_weight.float()
        o = o * F.silu(self.z_proj(x).float().view(B, T, H, Vd))
        return self.o_proj(o.reshape(B, T, -1).to(x.dtype))


class _Block(nn.Module):
    def __init__(self, cfg, layer_type):
        super().__init__()
        self.layer_type = layer_type
        self.norm1 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.norm2 = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mixer = SlidingWindowAttention(cfg) if layer_type == "sliding_attention" else GatedDeltaNetLayer(cfg)
        self.gate = nn.Linear(cfg.d_model, cfg.mlp_hidden, bias=False)
        self.up = nn.Linear(cfg.d_model, cfg.mlp_hidden, bias=False)
        self.down = nn.Linear(cfg.mlp_hidden, cfg.d_model, bias=False)

    def forward(self, x, positions, cache, mode, impl):
        h = self.norm1(x)
        if self.layer_type == "sliding_attention":
            x = x + self.mixer(h, positions, cache)
        else:
            x = x + self.mixer(h, cache, mode=mode, impl=impl)
        h = self.norm2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class HybridGDNModel(nn.Module):
    """Decoder-only hybrid stack. ``forward(input_ids [B,T], state=None) -> (logits [B,T,V], state)``."""

    def __init__(self, cfg: HybridGDNConfig | None = None):
        super().__init__()
        cfg = cfg or HybridGDNConfig()
        cfg.validate()
        self.cfg = cfg
        gen = torch.random.fork_rng()
        with gen:
            torch.manual_seed(cfg.seed)
            self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
            self.blocks = nn.ModuleList(_Block(cfg, t) for t in cfg.layer_types)
            self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
            self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def new_state(self) -> HybridGDNState:
        return HybridGDNState(layers={i: {} for i in range(self.cfg.n_layers)})

    @torch.no_grad()
    def forward(self, input_ids, state: HybridGDNState | None = None, *, gdn_mode="auto", impl="auto"):
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"input_ids must be an integer [B, T] tensor, got {tuple(input_ids.shape)} {input_ids.dtype}"
            )
        state = state if state is not None else self.new_state()
        T = input_ids.shape[1]
        positions = torch.arange(state.seen, state.seen + T, device=input_ids.device)
        x = self.embed(input_ids)
        for i, block in enumerate(self.blocks):
            x = block(x, positions, state.layers[i], gdn_mode, impl)
        state.seen += T
        return self.lm_head(self.norm(x)), state
