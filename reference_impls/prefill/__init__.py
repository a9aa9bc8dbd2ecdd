"""Prefill-stage techniques acting inside the LLM (token pruning / merging between decoder layers), and prompt
compression before it (``llmlingua.py``).

Each module: a naive function (the spec, plain tensors), an optimised path on ``reference_impls.ops``, and one
technique class (``FastV``, ``PyramidDrop``, ``SparseVLM``, ``LightVLM``) applied to any host:
``with FastV(k=2, ratio=0.5)(model): model.generate(...)``.
"""
