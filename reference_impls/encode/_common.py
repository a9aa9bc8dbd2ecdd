"""Helpers shared by the encoder-side techniques."""

from __future__ import annotations


def cosine_impl(impl: str) -> str:
    """Map an ``impl`` name to ``cosine_max_argmax``'s: ``"torch"`` is the matmul + max baseline = its naive path."""
    return "naive" if impl == "torch" else impl
