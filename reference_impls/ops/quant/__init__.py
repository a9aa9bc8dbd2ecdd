"""Quantisation ops (spec 18). KV-cache quantise-on-append (DECODE-A) and int8/fp8 GEMMs (DECODE-B) live in
separate modules; each owner only adds lines here."""
from .kv_quant import KV_FORMATS, dequantize_kv_naive, quantize_kv, quantize_kv_naive  # noqa: F401  (DECODE-A)
from .weight_gemm import (dequantize_weight_int8, fp8_linear, int8_weight_only_matmul,  # noqa: F401  (DECODE-B)
                          quantize_fp8_rowwise, quantize_weight_int8)
