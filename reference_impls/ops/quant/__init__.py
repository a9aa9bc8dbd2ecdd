"""Quantisation ops: KV-cache quantise-on-append (``kv_quant``) and the int8 / fp8 weight GEMMs (``weight_gemm``)."""

from .kv_quant import KV_FORMATS, dequantize_kv_naive, quantize_kv, quantize_kv_naive
from .weight_gemm import (
    dequantize_weight_int8,
    fp8_linear,
    int8_weight_only_matmul,
    quantize_fp8_rowwise,
    quantize_weight_int8,
)

__all__ = [
    "KV_FORMATS",
    "dequantize_kv_naive",
    "quantize_kv",
    "quantize_kv_naive",
    "dequantize_weight_int8",
    "fp8_linear",
    "int8_weight_only_matmul",
    "quantize_fp8_rowwise",
    "quantize_weight_int8",
]
