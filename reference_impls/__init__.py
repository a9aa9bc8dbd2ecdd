"""Reference implementations of efficient-LVLM-inference techniques.

One entry point per technique, applied to a host model as a context manager
(``with SnapKV(budget=0.25)(model): model.generate(...)``; ``technique.py``), listed with its paper, taxonomy
place, hosts and identity setting in ``registry.py`` (``python -m reference_impls list``). Layout: ``ops/`` holds
the shared kernels (naive PyTorch spec beside each Triton kernel); ``models/`` the minimal LVLM; ``encode/``,
``prefill/``, ``decode/`` the techniques grouped by the inference stage they act on, each beside its naive
specification; ``serving/`` a continuous-batching engine over the paged KV cache; ``hosts/`` how techniques attach to
the minimal LVLM and to Hugging Face models; ``pipelines/`` compositions of techniques. Needs only torch (+ triton for
kernels, + transformers for Hugging Face hosts); importing this package or its registry needs neither. See
``README.md`` for the quick start.
"""
