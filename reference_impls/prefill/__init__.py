"""Prefill-stage techniques acting inside the LLM (token pruning / merging between decoder layers), and prompt
compression before it (``llmlingua.py``).

Each module: a naive function (the spec, plain tensors), an optimised path on ``reference_impls.ops``,
and a hook for ``reference_impls.models.MinimalLVLM``.
"""
