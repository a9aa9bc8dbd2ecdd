"""KV-cache compression as small composable policies acting on a real cache (see ``base.py``).

All caches implement the protocol of ``reference_impls/models/kv_cache.py`` and plug into ``MinimalLVLM``
(``model.prefill(..., cache=cache)`` / ``model.decode_step``). The decode attention kernels they use live in
``reference_impls.ops.decode_attention``; KV quantise-on-append in ``reference_impls.ops.quant.kv_quant``.
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
