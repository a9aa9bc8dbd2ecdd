"""Post-training weight quantisation of a model's linear layers.

* ``"int8"``: INT8 weight-only (gpt-fast ``WeightOnlyInt8QuantHandler`` style) -- symmetric per output channel,
  activations stay in the model dtype; matmul via ``ops.quant.int8_weight_only_matmul`` (Triton kernel with the
  dequantisation fused in the K loop on GPU).
* ``"fp8"``: FP8-E4M3 W8A8 -- per-channel weight scales, dynamic per-token activation scales; matmul via
  ``ops.quant.fp8_linear`` (``torch._scaled_mm`` on SM89+, dequantise fallback elsewhere).

``quantize_model(model, mode)`` swaps every ``nn.Linear`` (except names matching ``skip``, default the LM head)
for a quantised module in place and returns a report (``report.restore()`` puts the original modules back);
``WeightQuant`` is the technique form, for any host (the vision tower and projector are quantised too):

    with WeightQuant(mode="int8")(model):
        model.generate(...)

No single paper: a generic technique (the catalogue's ``weight_quantization``), lossy, so no identity setting.
Memory: int8/fp8 weights are 1 byte per element (+4 bytes
per output channel). Deviations: no calibration / SmoothQuant-style activation smoothing; static per-tensor
activation scales are not offered (dynamic per-token only); the KV cache side lives in ``decode/kv/quantized.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Sequence

import torch.nn as nn

from reference_impls.ops.quant.weight_gemm import (
    fp8_linear,
    int8_weight_only_matmul,
    quantize_fp8_rowwise,
    quantize_weight_int8,
)
from reference_impls.technique import Technique

MODES = ("int8", "fp8")


class _QuantizedLinear(nn.Module):
    """A frozen ``nn.Linear`` with 1-byte weights and per-output-channel scales; subclasses name the weight
    quantiser and the matmul."""

    quantize = None  # weight [N, K] -> (w_q [N, K], scale [N])
    matmul = None  # (x, w_q, scale, bias, impl=...) -> y

    def __init__(self, linear: nn.Linear, impl: str = "auto"):
        super().__init__()
        w_q, scale = type(self).quantize(linear.weight)
        self.register_buffer("weight_q", w_q)
        self.register_buffer("scale", scale)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.impl = impl

    def forward(self, x):
        return type(self).matmul(x, self.weight_q, self.scale, self.bias, impl=self.impl)


class Int8WeightOnlyLinear(_QuantizedLinear):
    """INT8 weight-only: symmetric per-channel int8 weights, activations in the model dtype."""

    quantize = staticmethod(quantize_weight_int8)
    matmul = staticmethod(int8_weight_only_matmul)


class FP8Linear(_QuantizedLinear):
    """FP8-E4M3 W8A8: per-channel weight scales, dynamic per-token activation scales."""

    quantize = staticmethod(quantize_fp8_rowwise)
    matmul = staticmethod(fp8_linear)


@dataclass
class QuantReport:
    mode: str
    quantized: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    bytes_before: int = 0
    bytes_after: int = 0
    originals: list = field(default_factory=list, repr=False)  # (parent module, attribute, original nn.Linear)

    def restore(self) -> None:
        """Put the original full-precision modules back (undo ``quantize_model``)."""
        for parent, attr, original in reversed(self.originals):
            setattr(parent, attr, original)
        self.originals.clear()


def quantize_model(
    model: nn.Module, mode: str = "int8", *, skip: Sequence[str] = ("lm_head",), impl: str = "auto"
) -> QuantReport:
    """Replace ``nn.Linear`` modules in place. ``skip``: substrings of qualified names to leave in full precision."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    cls = Int8WeightOnlyLinear if mode == "int8" else FP8Linear
    report = QuantReport(mode)
    targets = [(name, mod) for name, mod in model.named_modules() if isinstance(mod, nn.Linear)]
    if not targets:
        raise ValueError("model has no nn.Linear layers to quantise")
    for name, lin in targets:
        if any(s in name for s in skip):
            report.skipped.append(name)
            continue
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        q = cls(lin, impl=impl)
        setattr(parent, name.rsplit(".", 1)[-1], q)
        report.originals.append((parent, name.rsplit(".", 1)[-1], lin))
        report.quantized.append(name)
        report.bytes_before += lin.weight.numel() * lin.weight.element_size()
        report.bytes_after += q.weight_q.numel() * q.weight_q.element_size() + q.scale.numel() * 4
    return report


@dataclass
class WeightQuant(Technique):
    """Post-training weight quantisation of a host's ``nn.Linear`` layers while attached (``mode`` int8 or fp8)."""

    name: ClassVar[str] = "weight_quant"
    stage: ClassVar[str] = "weights"
    mode: str = "int8"
    skip: Sequence[str] = ("lm_head",)
    impl: str = "auto"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")

    def attach(self, host):
        report = quantize_model(host.model, self.mode, skip=self.skip, impl=self.impl)
        host.stats.extra["weight_quant"] = report
        return report.restore
