"""Shared ops of the reference implementations (naive PyTorch spec beside each Triton kernel).

Public API: :func:`scored_attention`, :func:`colsum_to_kv_heads`,
:func:`select_topk`, :func:`gather_tokens`, :func:`kv_compact`, :func:`cosine_max_argmax`.
Every optimised op takes ``impl="auto" | "naive" | "triton" | "torch"``; see ``_triton.resolve_impl``. The ops that
check argument values (lengths, indices) take ``validate``: by default those checks run only on CPU tensors, so on
CUDA no op reads a value back to the host and a decode step can be captured in a CUDA graph (see
``_triton.check_values``). Subpackages imported directly: ``decode_attention`` (split-K decoding),
``paged_attention`` (PagedAttention's kernel), ``rope`` (RoFormer's rotary embedding), ``quant``, ``gated_delta``,
``spec_verify``. Importing this package does not import triton.
"""

from reference_impls.ops.cosine_match import cosine_max_argmax
from reference_impls.ops.scored_attention import colsum_to_kv_heads, scored_attention
from reference_impls.ops.select import gather_tokens, kv_compact, select_topk

__all__ = ["scored_attention", "colsum_to_kv_heads", "select_topk", "gather_tokens", "kv_compact", "cosine_max_argmax"]
