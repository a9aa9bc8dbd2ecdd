"""Decode-stage techniques: ``kv/`` compressed KV caches (StreamingLLM, H2O, SnapKV, PyramidKV, HybridKV,
LightVLM-KV, quantised KV, KIVI, CaM, MiniCache, Palu, the paged cache), ``speculative/`` speculative decoding,
``quantization.py`` weight quantisation, ``sparsegpt.py`` weight pruning, ``lookahead.py`` lookahead decoding,
``shared_attention.py`` attention reuse, ``car.py`` certainty-based adaptive reasoning."""
