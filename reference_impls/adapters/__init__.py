"""Thin Hugging Face adapters (context managers that add forward hooks and remove them on exit).

- ``FastVAdapter``, ``PyramidDropAdapter``: LLM-side pruning (LLaVA, Qwen2-VL, Qwen2.5-VL).
- ``VisionZipAdapter(model, dominant, contextual)``: picks ``hf_llava.VisionZipAdapter`` (CLIP tower, CLS scores)
  or ``hf_qwen2_vl.VisionZipAdapter`` (no CLS: attention received, after the patch merger) by model class.
Import needs torch only; the adapters act on transformers models passed in.
"""
from ._hooks import CompressionError, FastVAdapter, PyramidDropAdapter
from .hf_llava import VisionZipAdapter as LlavaVisionZipAdapter
from .hf_qwen2_vl import VisionZipAdapter as Qwen2VLVisionZipAdapter, is_qwen2_vl


def VisionZipAdapter(model, dominant: int = 54, contextual: int = 10, **kwargs):  # noqa: N802 (factory)
    """The VisionZip adapter matching ``model`` (Qwen2-VL / Qwen2.5-VL, else LLaVA)."""
    cls = Qwen2VLVisionZipAdapter if is_qwen2_vl(model) else LlavaVisionZipAdapter
    return cls(model, dominant=dominant, contextual=contextual, **kwargs)


__all__ = ["CompressionError", "FastVAdapter", "PyramidDropAdapter", "VisionZipAdapter", "LlavaVisionZipAdapter",
           "Qwen2VLVisionZipAdapter"]
