"""Speculative decoding references: chain (``chain.py``), tree (``tree.py``), LVSpec loose verification
(``lvspec.py``), SpecVLM verifier-guided draft pruning (``specvlm.py``); ``base.py`` holds the model protocol
and ``lvlm_adapter.py`` adapts the minimal LVLM to it. Each method is also a technique applied to the minimal
LVLM: ``with SpeculativeDecoding(k=4)(model): model.generate(ids, pixels, max_new_tokens=32)``."""

from reference_impls.decode.speculative.base import SpecStats, autoregressive_generate
from reference_impls.decode.speculative.chain import SpeculativeDecoding, speculative_generate
from reference_impls.decode.speculative.lvspec import LVSpec
from reference_impls.decode.speculative.specvlm import SpecVLM
from reference_impls.decode.speculative.tree import (
    TreeSpeculativeDecoding,
    build_tree,
    speculative_generate_tree,
    tree_from_choices,
)

__all__ = [
    "SpecStats",
    "autoregressive_generate",
    "speculative_generate",
    "speculative_generate_tree",
    "build_tree",
    "tree_from_choices",
    "SpeculativeDecoding",
    "TreeSpeculativeDecoding",
    "LVSpec",
    "SpecVLM",
]
