"""Thin Hugging Face adapters (context managers that add forward hooks and remove them on exit).

``FastVAdapter``, ``PyramidDropAdapter`` (LLM-side, LLaVA / Qwen2-VL / Qwen2.5-VL) and ``VisionZipAdapter``
(LLaVA's CLIP tower). Import needs torch only; the adapters act on transformers models passed in.
"""
from ._hooks import CompressionError, FastVAdapter, PyramidDropAdapter
from .hf_llava import VisionZipAdapter

__all__ = ["CompressionError", "FastVAdapter", "PyramidDropAdapter", "VisionZipAdapter"]
