"""INT8 / FP8-E4M3 KV cache: quantise on append with one scale per (token, KV head).

    with KVQuant(fmt="int8")(model):          # or fmt="fp8_e4m3"
        model.generate(...)

The cache is ``CompressedKVCache`` with ``kv_format`` and a policy that never evicts: keys/values are stored as
int8 or float8_e4m3fn plus fp32 scales -- half the bytes of a bf16 cache (a quarter of fp32) plus 8 bytes per
token and head. Appends go through ``ops.quant.kv_quant.quantize_kv`` (Triton: row amax + scale + cast + scatter
in one pass; ``naive_quantize_kv`` is the specification). Two read paths: ``cache.attend(layer, q)`` runs the decode
attention over the quantised buffers (``ops.decode_attention``, values converted in registers, no dequantised copy:
the serving path); the model protocol (``update``) returns a dequantised copy for the model's own attention, with
identical numerics. ``kv_format`` composes with every eviction policy of ``base.CompressedKVCache``.

No single paper: a generic technique (the catalogue's ``kv_quantization``). Deviations from calibrated deployments:
dynamic per-(token, head) scales only (no static per-head calibration); scales stored in fp32; lossy, so there is
no identity setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from reference_impls.decode.kv.base import CompressedKVCache, KVPolicy
from reference_impls.ops.quant.kv_quant import KV_FORMATS
from reference_impls.technique import CacheTechnique

__all__ = ["KVQuant"]


@dataclass
class KVQuant(CacheTechnique):
    """A full (non-evicting) KV cache stored in ``fmt`` (``"int8"`` or ``"fp8_e4m3"``)."""

    name: ClassVar[str] = "kv_quant"
    fmt: str = "int8"
    impl: str = "auto"

    def __post_init__(self):
        if self.fmt not in KV_FORMATS:
            raise ValueError(f"fmt must be one of {sorted(KV_FORMATS)}, got {self.fmt!r}")

    def make_cache(self, spec, batch_size: int) -> CompressedKVCache:
        return CompressedKVCache(
            KVPolicy(),
            spec.n_layers,
            batch_size,
            spec.n_kv_heads,
            spec.head_dim,
            dtype=spec.dtype,
            device=spec.device,
            kv_format=self.fmt,
            impl=self.impl,
        )
