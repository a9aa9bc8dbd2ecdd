"""Reference implementations of efficient-LVLM-inference techniques.

Layout: ``ops/`` holds the shared kernels (naive PyTorch spec beside each Triton kernel);
``models/`` the minimal LVLM; ``encode/``, ``prefill/``, ``decode/`` the techniques grouped by
the inference stage they act on; ``serving/`` a continuous-batching engine over the paged KV cache;
``adapters/`` thin Hugging Face adapters; ``pipelines/`` compositions of techniques. Each technique module added
for issue 15 carries a ``REGISTRY_ENTRY`` dict (paper, taxonomy technique and cell, hosts, identity setting). Needs only torch (+ triton for kernels, + transformers for adapters).
"""
