"""Decode-stage techniques: ``kv/`` compressed KV caches (StreamingLLM, H2O, SnapKV, PyramidKV, HybridKV,
LightVLM-KV, quantised KV), ``speculative/`` speculative decoding, ``quantization.py`` weight quantisation."""
