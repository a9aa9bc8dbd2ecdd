"""FastViT / FastViTHD: a hybrid convolutional-attention vision encoder with structural reparameterisation (Vasu et
al., "FastViT: A Fast Hybrid Vision Transformer using Structural Reparameterization", arXiv 2303.14189; FastVLM's
encoder, Vasu et al., "FastVLM: Efficient Vision Encoding for Vision Language Models", arXiv 2412.13303).

Why this paper: FastVLM's FastViTHD is the catalogue's efficient vision encoder for LVLMs: convolutional RepMixer
stages at high resolution, attention only in the last, down-sampled stages, and a total stride of 64, so a 1024 x 1024
image yields 256 tokens (a ViT-L/14 at 336 x 336 yields 576) at a fraction of the encoding time.

The architecture (checked against the official code, github.com/apple/ml-fastvit ``models/fastvit.py`` and
github.com/apple/ml-fastvlm ``mci.py``):
* stem: three MobileOne blocks (3x3 stride 2, 3x3 depthwise stride 2, 1x1) -> stride 4;
* stages of ``RepMixerBlock`` (token mixing ``x + g * (mixer(x) - norm(x))`` with depthwise convolutions, then a
  convolutional FFN) or ``AttentionBlock`` (multi-head self-attention, head size 32, then the FFN), a
  conditional positional encoding (``RepCPE``, ``x + dwconv7x7(x)``) before attention stages, and a ``PatchEmbed``
  (7x7 depthwise stride 2 with a parallel 3x3 branch, then a 1x1 MobileOne block) between stages;
* head ``conv_exp``: a 3x3 depthwise MobileOne block doubling the channels (``cls_ratio = 2``); its output is the
  visual tokens FastVLM feeds to the projector.
FastViTHD: layers (2, 12, 24, 4, 2), widths (96, 192, 384, 768, 1536), mixers (repmixer x 3, attention x 2),
RepCPE before stages 4 and 5, LayerNorm over channels in the attention blocks, no scale branch in the stem.

**Structural reparameterisation** (the paper's inference-time speed-up): every multi-branch block is an affine map
of its input, so each folds into one convolution at inference: batch norms into the preceding convolutions, parallel
branches (k x k, 1 x 1, identity) into one kernel, RepMixer's ``x + g (mixer(x) - norm(x))`` and RepCPE's skip into
one depthwise convolution.

Classes: ``MobileOneBlock``, ``ReparamLargeKernelConv``, ``RepMixer``, ``RepCPE``, ``ConvFFN``, ``MHSA``,
``RepMixerBlock``, ``AttentionBlock``, ``PatchEmbed``, ``FastViT`` (``FastViTConfig.fastvithd()``, ``.tiny()``);
``reparameterize(module)`` folds every block in place. The multi-branch training-time form is the specification;
the reparameterised network is tested equal to it (eval mode).

Deviations: no squeeze-excitation in the ``conv_exp`` head and in stage-5 patch embedding (FastVLM uses SE there);
weights are random (no checkpoint loading); no classification head or global pooling (FastVLM does not use them).

Identity: reparameterisation changes no output (tested to float rounding): it is an exact algebraic rewrite.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MobileOneBlock",
    "ReparamLargeKernelConv",
    "RepMixer",
    "RepCPE",
    "ConvFFN",
    "MHSA",
    "LayerNormChannel",
    "RepMixerBlock",
    "AttentionBlock",
    "PatchEmbed",
    "FastViTConfig",
    "FastViT",
    "reparameterize",
]


def _fuse(conv_weight: Tensor, bn: nn.BatchNorm2d, conv_bias=None) -> tuple[Tensor, Tensor]:
    """Fold eval-mode ``bn(conv(x))`` into one (kernel, bias)."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    bias = bn.bias - bn.running_mean * scale + (0 if conv_bias is None else conv_bias * scale)
    return conv_weight * scale.reshape(-1, 1, 1, 1), bias


def _identity_kernel(channels: int, groups: int, k: int, like: Tensor) -> Tensor:
    """The (k x k, grouped) kernel of the identity map."""
    per_group = channels // groups
    w = torch.zeros(channels, per_group, k, k, dtype=like.dtype, device=like.device)
    w[torch.arange(channels), torch.arange(channels) % per_group, k // 2, k // 2] = 1.0
    return w


class _ConvBN(nn.Sequential):
    def __init__(self, cin, cout, k, stride, padding, groups):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)


class _Reparameterizable(nn.Module):
    """A block with a multi-branch form and, after ``reparameterize()``, a single convolution ``self.reparam``."""

    def __init__(self):
        super().__init__()
        self.reparam = None

    def _fused(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _conv_args(self) -> dict:
        raise NotImplementedError

    @torch.no_grad()
    def reparameterize(self) -> None:
        weight, bias = self._fused()
        conv = nn.Conv2d(**self._conv_args(), bias=True).to(weight.device, weight.dtype)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        self.reparam = conv


class MobileOneBlock(_Reparameterizable):
    """``act(BN(x) + BN(conv1x1(x)) + sum_i BN(conv_kxk_i(x)))`` (the skip branch when shapes allow)."""

    def __init__(
        self, cin, cout, k, stride=1, padding=0, groups=1, use_act=True, use_scale_branch=True, num_conv_branches=1
    ):
        super().__init__()
        self.args = dict(
            in_channels=cin, out_channels=cout, kernel_size=k, stride=stride, padding=padding, groups=groups
        )
        self.activation = nn.GELU() if use_act else nn.Identity()
        self.skip = nn.BatchNorm2d(cin) if cin == cout and stride == 1 else None
        self.convs = nn.ModuleList(_ConvBN(cin, cout, k, stride, padding, groups) for _ in range(num_conv_branches))
        self.scale = _ConvBN(cin, cout, 1, stride, 0, groups) if k > 1 and use_scale_branch else None

    def _conv_args(self):
        return self.args

    def forward(self, x):
        if self.reparam is not None:
            return self.activation(self.reparam(x))
        out = 0
        if self.skip is not None:
            out = self.skip(x)
        if self.scale is not None:
            out = out + self.scale(x)
        for branch in self.convs:
            out = out + branch(x)
        return self.activation(out)

    def _fused(self):
        k, groups, cout = self.args["kernel_size"], self.args["groups"], self.args["out_channels"]
        ref = next(self.parameters())
        weight = torch.zeros(cout, self.args["in_channels"] // groups, k, k, dtype=ref.dtype, device=ref.device)
        bias = torch.zeros(cout, dtype=ref.dtype, device=ref.device)
        for branch in self.convs:
            w, b = _fuse(branch.conv.weight, branch.bn)
            weight, bias = weight + w, bias + b
        if self.scale is not None:
            w, b = _fuse(self.scale.conv.weight, self.scale.bn)
            weight, bias = weight + F.pad(w, [k // 2] * 4), bias + b
        if self.skip is not None:
            w, b = _fuse(_identity_kernel(cout, groups, k, ref), self.skip)
            weight, bias = weight + w, bias + b
        return weight, bias


class ReparamLargeKernelConv(_Reparameterizable):
    """``GELU(BN(conv_kxk(x)) + BN(conv_3x3(x)))`` (RepLKNet-style), grouped."""

    def __init__(self, cin, cout, k, stride, groups, small_kernel=3):
        super().__init__()
        self.args = dict(
            in_channels=cin, out_channels=cout, kernel_size=k, stride=stride, padding=k // 2, groups=groups
        )
        self.large = _ConvBN(cin, cout, k, stride, k // 2, groups)
        self.small = _ConvBN(cin, cout, small_kernel, stride, small_kernel // 2, groups)
        self.activation = nn.GELU()

    def _conv_args(self):
        return self.args

    def forward(self, x):
        if self.reparam is not None:
            return self.activation(self.reparam(x))
        return self.activation(self.large(x) + self.small(x))

    def _fused(self):
        w, b = _fuse(self.large.conv.weight, self.large.bn)
        ws, bs = _fuse(self.small.conv.weight, self.small.bn)
        pad = (self.args["kernel_size"] - ws.shape[-1]) // 2
        return w + F.pad(ws, [pad] * 4), b + bs


class RepMixer(_Reparameterizable):
    """``x + g * (mixer(x) - norm(x))`` with depthwise MobileOne blocks (norm: the BN skip branch only)."""

    def __init__(self, dim, k=3, layer_scale_init=1e-5):
        super().__init__()
        self.dim, self.k = dim, k
        self.norm = MobileOneBlock(
            dim, dim, k, padding=k // 2, groups=dim, use_act=False, use_scale_branch=False, num_conv_branches=0
        )
        self.mixer = MobileOneBlock(dim, dim, k, padding=k // 2, groups=dim, use_act=False)
        self.layer_scale = nn.Parameter(layer_scale_init * torch.ones(dim, 1, 1))

    def _conv_args(self):
        return dict(
            in_channels=self.dim, out_channels=self.dim, kernel_size=self.k, padding=self.k // 2, groups=self.dim
        )

    def forward(self, x):
        if self.reparam is not None:
            return self.reparam(x)
        return x + self.layer_scale * (self.mixer(x) - self.norm(x))

    def _fused(self):
        wm, bm = self.mixer._fused()
        wn, bn = self.norm._fused()
        identity = _identity_kernel(self.dim, self.dim, self.k, wm)
        return identity + self.layer_scale[..., None] * (wm - wn), self.layer_scale.flatten() * (bm - bn)


class RepCPE(_Reparameterizable):
    """Conditional positional encoding ``x + dwconv_kxk(x)``."""

    def __init__(self, dim, k=7):
        super().__init__()
        self.dim, self.k = dim, k
        self.pe = nn.Conv2d(dim, dim, k, 1, k // 2, groups=dim, bias=True)

    def _conv_args(self):
        return dict(
            in_channels=self.dim, out_channels=self.dim, kernel_size=self.k, padding=self.k // 2, groups=self.dim
        )

    def forward(self, x):
        return self.reparam(x) if self.reparam is not None else x + self.pe(x)

    def _fused(self):
        return _identity_kernel(self.dim, self.dim, self.k, self.pe.weight) + self.pe.weight, self.pe.bias


class ConvFFN(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.conv = _ConvBN(dim, dim, 7, 1, 3, dim)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(self.conv(x))))


class MHSA(nn.Module):
    def __init__(self, dim, head_dim=32):
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"dim {dim} is not a multiple of head_dim {head_dim}")
        self.heads, self.head_dim = dim // head_dim, head_dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, C, H, W = x.shape
        t = x.flatten(2).transpose(1, 2)
        q, k, v = self.qkv(t).reshape(B, H * W, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.proj(o.transpose(1, 2).reshape(B, H * W, C)).transpose(1, 2).reshape(B, C, H, W)


class LayerNormChannel(nn.Module):
    """LayerNorm over the channels of ``[B, C, H, W]``."""

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class RepMixerBlock(nn.Module):
    def __init__(self, dim, mlp_ratio=4.0, layer_scale_init=1e-5):
        super().__init__()
        self.token_mixer = RepMixer(dim, 3, layer_scale_init)
        self.convffn = ConvFFN(dim, int(dim * mlp_ratio))
        self.layer_scale = nn.Parameter(layer_scale_init * torch.ones(dim, 1, 1))

    def forward(self, x):
        x = self.token_mixer(x)
        return x + self.layer_scale * self.convffn(x)


class AttentionBlock(nn.Module):
    def __init__(self, dim, mlp_ratio=4.0, layer_scale_init=1e-5, channel_layernorm=False):
        super().__init__()
        self.norm = LayerNormChannel(dim) if channel_layernorm else nn.BatchNorm2d(dim)
        self.token_mixer = MHSA(dim)
        self.convffn = ConvFFN(dim, int(dim * mlp_ratio))
        self.layer_scale_1 = nn.Parameter(layer_scale_init * torch.ones(dim, 1, 1))
        self.layer_scale_2 = nn.Parameter(layer_scale_init * torch.ones(dim, 1, 1))

    def forward(self, x):
        x = x + self.layer_scale_1 * self.token_mixer(self.norm(x))
        return x + self.layer_scale_2 * self.convffn(x)


class PatchEmbed(nn.Sequential):
    def __init__(self, cin, cout, patch_size=7, stride=2):
        super().__init__(
            ReparamLargeKernelConv(cin, cout, patch_size, stride, groups=cin), MobileOneBlock(cout, cout, 1)
        )


@dataclass
class FastViTConfig:
    layers: tuple = (2, 12, 24, 4, 2)
    widths: tuple = (96, 192, 384, 768, 1536)
    mixers: tuple = ("repmixer", "repmixer", "repmixer", "attention", "attention")
    cpe: tuple = (False, False, False, True, True)  # RepCPE before the stage
    mlp_ratio: float = 4.0
    channel_layernorm: bool = True  # FastViTHD: LayerNorm in attention blocks
    stem_scale_branch: bool = False
    cls_ratio: float = 2.0
    layer_scale_init: float = 1e-5
    name: str = field(default="fastvithd")

    @classmethod
    def fastvithd(cls) -> "FastViTConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "FastViTConfig":
        """Five stages, one block each, widths 32..64 (stride 64 like FastViTHD) for CPU tests."""
        return cls(layers=(1, 1, 1, 1, 1), widths=(32, 32, 32, 64, 64), name="tiny")

    @property
    def stride(self) -> int:
        return 4 * 2 ** (len(self.layers) - 1)

    def n_tokens(self, height: int, width: int) -> int:
        """Visual tokens for an image of ``height x width`` pixels (ceil division by the stride per axis)."""
        return -(-height // self.stride) * -(-width // self.stride)


class FastViT(nn.Module):
    """``FastViT(cfg)(images [B, 3, H, W])`` -> visual tokens ``[B, (H / stride) * (W / stride), cls_ratio *
    width]``."""

    def __init__(self, cfg: FastViTConfig = FastViTConfig(), seed: int = 0):
        super().__init__()
        self.cfg = cfg
        w0 = cfg.widths[0]
        self.stem = nn.Sequential(
            MobileOneBlock(3, w0, 3, 2, 1, use_scale_branch=cfg.stem_scale_branch),
            MobileOneBlock(w0, w0, 3, 2, 1, groups=w0, use_scale_branch=cfg.stem_scale_branch),
            MobileOneBlock(w0, w0, 1, use_scale_branch=cfg.stem_scale_branch),
        )
        stages = []
        for i, (n, width, mixer) in enumerate(zip(cfg.layers, cfg.widths, cfg.mixers)):
            if i > 0:
                stages.append(PatchEmbed(cfg.widths[i - 1], width))
            if cfg.cpe[i]:
                stages.append(RepCPE(width))
            for _ in range(n):
                stages.append(
                    RepMixerBlock(width, cfg.mlp_ratio, cfg.layer_scale_init)
                    if mixer == "repmixer"
                    else AttentionBlock(width, cfg.mlp_ratio, cfg.layer_scale_init, cfg.channel_layernorm)
                )
        self.stages = nn.Sequential(*stages)
        last = cfg.widths[-1]
        self.conv_exp = MobileOneBlock(last, int(last * cfg.cls_ratio), 3, 1, 1, groups=last)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                if p.dim() > 1:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        self.eval()

    def forward(self, images: Tensor) -> Tensor:
        x = self.conv_exp(self.stages(self.stem(images)))
        return x.flatten(2).transpose(1, 2)


def reparameterize(module: nn.Module) -> nn.Module:
    """Fold every reparameterisable block of ``module`` into single convolutions (in place; eval mode)."""
    module.eval()
    for m in module.modules():
        if isinstance(m, _Reparameterizable) and m.reparam is None:
            m.reparameterize()
    return module
