"""KV-cache compression as small composable policies acting on a real cache (see ``base.py``).

All caches implement the protocol of ``reference_impls/models/kv_cache.py`` and plug into ``MinimalLVLM``
(``model.prefill(..., cache=cache)`` / ``model.decode_step``). The decode attention kernels they use live in
``reference_impls.ops.decode_attention``; KV quantise-on-append in ``reference_impls.ops.quant.kv_quant``.

    cfg = model.cfg
    cache = h2o_cache(cfg, B, heavy=64, recent=64)                  # or snapkv_cache(cfg, B, budget=256),
    #   pyramidkv_cache(cfg, B, budget=256), lightvlm_kv_cache(cfg, B), SinkWindowCache.for_model(cfg, B, window=256),
    #   QuantizedKVCache.for_model(cfg, B, capacity, fmt="int8"), h2o_cache(..., kv_format="fp8_e4m3")
    out = generate_with_cache(model, ids, pixels, cache=cache, lengths=lengths, max_new_tokens=32)
    hyb = HybridKVCache.for_model(cfg, B, budget_ratio=0.1)         # needs the real decode query per layer:
    out = generate_with_cache(model, ids, pixels, cache=hyb, decode_hooks=[hyb.query_hook()])
    cache.lengths(layer)  # [B, Hkv] kept rows per KV head;  cache.kv_bytes(), cache.attend(layer, q) (kernel path)
    # ragged per-head budgets without padding: HybridKVCache.for_model(cfg, B, ..., layout="packed")

Plain tensors (one attention layer, no model): ``attention_step(cache, layer, q, k, v, positions, n_new)``.

Standalone methods over ``[B, H, L, D]`` tensors, each with its own protocol cache (import the modules directly):
``kivi.py`` (KIVI 2-bit quantisation), ``cam.py`` (CaM merging), ``minicache.py`` (cross-layer merging), ``palu.py``
(low-rank latent KV), ``paged.py`` (PagedAttention's block tables, used by ``reference_impls.serving``).
"""
from .base import CompressedKVCache, KVPolicy, LayerView, VisualMaskHook, attention_step, generate_with_cache
from .h2o import H2OPolicy, h2o_cache
from .hybridkv import HybridKVCache, HybridQueryHook
from .lightvlm_kv import LightVLMKVPolicy, lightvlm_kv_cache
from .pyramidkv import PyramidKVPolicy, pyramid_budgets, pyramidkv_cache
from .quantized import QuantizedKVCache
from .snapkv import SnapKVPolicy, snapkv_cache
from .streaming import SinkWindowCache

__all__ = ["CompressedKVCache", "KVPolicy", "LayerView", "VisualMaskHook", "attention_step", "generate_with_cache",
           "HybridKVCache", "HybridQueryHook", "LightVLMKVPolicy", "lightvlm_kv_cache", "QuantizedKVCache", "H2OPolicy",
           "h2o_cache", "SnapKVPolicy", "snapkv_cache", "PyramidKVPolicy", "pyramid_budgets", "pyramidkv_cache",
           "SinkWindowCache"]
