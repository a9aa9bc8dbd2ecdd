"""KV-cache compression: one technique class per method, applied to any host model, on real caches (not masks).

    with SnapKV(budget=0.25)(model): model.generate(...)      # model: MinimalLVLM or a supported HF model
    H2O(heavy=64, recent=64)    SnapKV(budget=256)    PyramidKV(budget=0.25)    StreamingLLM(n_sink=4, window=2000)
    HybridKV(budget_ratio=0.1)  LightVLMKV(gen_heavy=64, gen_recent=64)         KVQuant(fmt="int8")
    Knorm(compression_ratio=0.5)   TOVA(budget=512)   ExpectedAttention(compression_ratio=0.5)
    QFilters(compression_ratio=0.5)   ThinK(key_channel_ratio=0.5)   DuoAttention(head_scores=s,
    head_compression_ratio=0.5)
    AdaKV(scorer=SnapKV(), compression_ratio=0.5)   ChunkKV(scorer=SnapKV(), compression_ratio=0.5)   # wrappers

Every technique builds a cache implementing the protocol of ``reference_impls/models/kv_cache.py``
(``base.CompressedKVCache`` driven by a policy, ``hybridkv.HybridKVCache``, ``streaming.SinkWindowCache``); the
hosts use it directly (minimal LVLM) or through a ``transformers`` Cache (``reference_impls.hosts.hf``). The decode
attention kernels live in ``reference_impls.ops.decode_attention``; KV quantise-on-append in
``reference_impls.ops.quant.kv_quant``. Plain tensors, one attention layer, no model:
``base.attention_step(cache, layer, q, k, v, positions, n_new)``.

Standalone methods over ``[B, H, L, D]`` tensors, each with its own protocol cache (import the modules directly):
``kivi.py`` (KIVI 2-bit quantisation), ``cam.py`` (CaM merging), ``minicache.py`` (cross-layer merging), ``palu.py``
(low-rank latent KV), ``paged.py`` (PagedAttention's block tables, used by ``reference_impls.serving``).
"""

from reference_impls.decode.kv.adakv import AdaKV
from reference_impls.decode.kv.chunkkv import ChunkKV
from reference_impls.decode.kv.duo_attention import DuoAttention
from reference_impls.decode.kv.expected_attention import ExpectedAttention
from reference_impls.decode.kv.h2o import H2O
from reference_impls.decode.kv.hybridkv import HybridKV
from reference_impls.decode.kv.knorm import Knorm
from reference_impls.decode.kv.lightvlm_kv import LightVLMKV
from reference_impls.decode.kv.pyramidkv import PyramidKV
from reference_impls.decode.kv.qfilters import QFilters
from reference_impls.decode.kv.quantized import KVQuant
from reference_impls.decode.kv.snapkv import SnapKV
from reference_impls.decode.kv.streaming import StreamingLLM
from reference_impls.decode.kv.think import ThinK
from reference_impls.decode.kv.tova import TOVA

__all__ = [
    "AdaKV",
    "ChunkKV",
    "DuoAttention",
    "ExpectedAttention",
    "H2O",
    "HybridKV",
    "Knorm",
    "LightVLMKV",
    "PyramidKV",
    "KVQuant",
    "QFilters",
    "SnapKV",
    "StreamingLLM",
    "ThinK",
    "TOVA",
]
