"""Quantisation ops: KV-cache quantise-on-append (``kv_quant``) and the int8 / fp8 weight GEMMs (``weight_gemm``)."""

from reference_impls.ops.quant.kv_quant import KV_FORMATS, naive_dequantize_kv, naive_quantize_kv, quantize_kv
from reference_impls.ops.quant.weight_gemm import (
    dequantize_weight_int8,
    fp8_linear,
    int8_weight_only_matmul,
    quantize_fp8_rowwise,
    quantize_weight_int8,
)

__all__ = [
    "KV_FORMATS",
    "naive_dequantize_kv",
    "quantize_kv",
    "naive_quantize_kv",
    "dequantize_weight_int8",
    "fp8_linear",
    "int8_weight_only_matmul",
    "quantize_fp8_rowwise",
    "quantize_weight_int8",
]
