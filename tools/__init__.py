"""Catalogue tooling of the Efficient LVLM Inference Atlas.

Data flows one way: ``papers/*.yaml`` + ``taxonomy.yaml`` -> validation (``schema``, ``taxonomy``, ``validate``)
-> outputs (site, BibTeX, JSON Schema, README tables). Run ``python -m tools --help``.
None of this needs torch or triton.
"""
