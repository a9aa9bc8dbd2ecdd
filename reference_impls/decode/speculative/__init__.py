"""Speculative decoding references: chain (``chain.py``), tree (``tree.py``), LVSpec loose verification
(``lvspec.py``), SpecVLM verifier-guided draft pruning (``specvlm.py``); ``base.py`` holds the model protocol
and ``lvlm_adapter.py`` adapts the minimal LVLM to it."""
from .base import SpecStats, autoregressive_generate
from .chain import speculative_generate
from .tree import build_tree, speculative_generate_tree, tree_from_choices

__all__ = ["SpecStats", "autoregressive_generate", "speculative_generate", "speculative_generate_tree",
           "build_tree", "tree_from_choices"]
