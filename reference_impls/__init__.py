"""Reference implementations of efficient-LVLM-inference techniques.

Layout: ``ops/`` holds the shared kernels (naive PyTorch spec beside each Triton kernel);
``models/`` the minimal LVLM; ``encode/``, ``prefill/``, ``decode/`` the techniques grouped by
the inference stage they act on; ``adapters/`` thin Hugging Face adapters; ``pipelines/``
compositions of techniques. Needs only torch (+ triton for kernels, + transformers for adapters).
"""
