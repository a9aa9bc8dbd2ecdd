"""Configuration of the minimal LVLM (vision encoder -> projector -> Llama-style decoder).

Presets (shapes checked against the public Hugging Face configs ``llava-hf/llava-1.5-7b-hf``
(CLIP ViT-L/14-336 + Vicuna-7B v1.5) and ``Qwen/Qwen2.5-VL-7B-Instruct``):

* ``LVLMConfig.tiny()``: a few-layer random model for CPU tests (GQA 4 q / 2 kv heads).
* ``LVLMConfig.llava_1_5_7b()``: exact decoder and projector shapes; vision tower = CLIP ViT-L/14-336
  (24 layers, width 1024, 16 heads, MLP 4096, CLS + 576 patches, pre-LayerNorm, quick-GELU); the
  projector reads layer -2 (penultimate) without CLS, so the LLM sees 576 visual tokens. The image
  placeholder id is 31999 inside the 32000-token vocabulary (HF's llava-1.5 adds token 32000 and pads the
  vocabulary to 32064; the original repository splices at index -200) -- a convention, not a shape.
* ``LVLMConfig.qwen2_5_vl_7b()``: exact decoder shapes (28 layers, hidden 3584, 28 q / 4 kv heads,
  18944 intermediate, vocab 152064, qkv bias, rope theta 1e6) and vision width/depth/heads/MLP
  (32 layers, 1280, 16 heads, SwiGLU 3420, RMSNorm) and the 2x2 patch merger (5120 -> 5120 -> 3584).
  **Approximations**: the ViT uses a learned absolute position embedding and full attention instead of
  2-D RoPE + windowed attention (full attention only in blocks 7/15/23/31); no temporal patch (single
  images, Conv2d patch embed); a fixed 448x448 input (32x32 patches -> 256 merged tokens) instead of
  dynamic resolution; decoder positions are 1-D RoPE instead of M-RoPE.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass
class VisionConfig:
    image_size: int = 32
    patch_size: int = 8
    n_layers: int = 2
    width: int = 32
    n_heads: int = 2
    mlp_dim: int = 64
    use_cls: bool = True  # prepend a CLS token (CLIP); Qwen's ViT has none
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    mlp_act: str = "quick_gelu"  # "quick_gelu" | "gelu" | "swiglu"
    pre_norm: bool = True  # CLIP's pre_layrnorm after the embeddings
    feature_layer: int = -2  # hidden state fed to the projector (-1 = last block output)
    norm_eps: float = 1e-5

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def n_patches(self) -> int:
        return self.grid * self.grid

    @property
    def n_encoder_tokens(self) -> int:
        """Tokens inside the ViT (patches + CLS if any)."""
        return self.n_patches + int(self.use_cls)

    @property
    def n_layers_run(self) -> int:
        """Blocks actually run to produce the feature layer (-2 -> all but the last)."""
        if self.feature_layer < 0:
            return self.n_layers + 1 + self.feature_layer
        return self.feature_layer


@dataclass
class LVLMConfig:
    # decoder
    vocab_size: int = 256
    hidden: int = 64
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    intermediate: int = 128
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    qkv_bias: bool = False
    max_seq_len: int = 512
    # vision + projector
    vision: VisionConfig = field(default_factory=VisionConfig)
    projector: str = "mlp2x_gelu"  # "mlp2x_gelu" (LLaVA) | "patch_merger" (Qwen2.5-VL, 2x2)
    merge_size: int = 2  # patch merger window (patch_merger only)
    image_token_id: int = 255  # placeholder id in input_ids, one per visual token
    init_std: float = 0.02
    name: str = "tiny"

    def __post_init__(self):
        if self.hidden % self.n_heads:
            raise ValueError(f"hidden={self.hidden} not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} not divisible by n_kv_heads={self.n_kv_heads}")
        if self.projector not in ("mlp2x_gelu", "patch_merger"):
            raise ValueError(f"unknown projector {self.projector!r}")
        if self.projector == "patch_merger" and self.vision.grid % self.merge_size:
            raise ValueError("patch grid must be divisible by merge_size")
        if not 0 <= self.image_token_id < self.vocab_size:
            raise ValueError("image_token_id must be a valid vocabulary id")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_heads

    @property
    def n_visual_tokens(self) -> int:
        """Visual tokens per image that reach the LLM (CLS dropped, patches merged if needed)."""
        if self.projector == "patch_merger":
            return self.vision.n_patches // (self.merge_size**2)
        return self.vision.n_patches

    def with_(self, **kw) -> "LVLMConfig":
        return replace(self, **kw)

    # ---------------------------------------------------------------- presets
    @classmethod
    def tiny(cls, **kw) -> "LVLMConfig":
        return cls(**kw)

    @classmethod
    def llava_1_5_7b(cls, **kw) -> "LVLMConfig":
        vision = VisionConfig(
            image_size=336,
            patch_size=14,
            n_layers=24,
            width=1024,
            n_heads=16,
            mlp_dim=4096,
            use_cls=True,
            norm="layernorm",
            mlp_act="quick_gelu",
            pre_norm=True,
            feature_layer=-2,
            norm_eps=1e-5,
        )
        base = dict(
            vocab_size=32000,
            hidden=4096,
            n_layers=32,
            n_heads=32,
            n_kv_heads=32,
            intermediate=11008,
            rope_theta=10000.0,
            norm_eps=1e-5,
            qkv_bias=False,
            max_seq_len=4096,
            vision=vision,
            projector="mlp2x_gelu",
            image_token_id=32000 - 1,
            name="llava-1.5-7b",
        )
        base.update(kw)
        return cls(**base)

    @classmethod
    def qwen2_5_vl_7b(cls, **kw) -> "LVLMConfig":
        vision = VisionConfig(
            image_size=448,
            patch_size=14,
            n_layers=32,
            width=1280,
            n_heads=16,
            mlp_dim=3420,
            use_cls=False,
            norm="rmsnorm",
            mlp_act="swiglu",
            pre_norm=False,
            feature_layer=-1,
            norm_eps=1e-6,
        )
        base = dict(
            vocab_size=152064,
            hidden=3584,
            n_layers=28,
            n_heads=28,
            n_kv_heads=4,
            intermediate=18944,
            rope_theta=1_000_000.0,
            norm_eps=1e-6,
            qkv_bias=True,
            max_seq_len=32768,
            vision=vision,
            projector="patch_merger",
            merge_size=2,
            image_token_id=151655,
            name="qwen2.5-vl-7b",
        )
        base.update(kw)
        return cls(**base)
