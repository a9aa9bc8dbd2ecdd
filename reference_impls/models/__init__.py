"""Minimal LVLM (vision encoder -> projector -> Llama-style decoder) with a static KV cache and explicit hooks.

See ``models/README.md`` for the API note, ``kv_cache.py`` for the cache protocol and ``hooks.py`` for the
hook protocol used by the prefill techniques.
"""

from reference_impls.models.config import LVLMConfig, VisionConfig
from reference_impls.models.hooks import Hook, LayerContext, TokenState
from reference_impls.models.kv_cache import AttendKV, KVCache, StaticKVCache
from reference_impls.models.minimal_lvlm import MinimalLVLM, PrefillResult

__all__ = [
    "LVLMConfig",
    "VisionConfig",
    "MinimalLVLM",
    "PrefillResult",
    "KVCache",
    "StaticKVCache",
    "AttendKV",
    "Hook",
    "LayerContext",
    "TokenState",
]
