"""Weight quantisation: INT8 weight-only and FP8 W8A8 GEMMs vs bf16, and decode tokens/s of the minimal LVLM.

    python -m benchmarks.bench_quant            # GPU
    python -m benchmarks.bench_quant --smoke    # CPU: small shapes, naive paths, checks the script end to end

1. GEMM ``y = x W^T`` for M in {1, 16, 128} tokens and (N, K) in {(4096, 4096), (11008, 4096), (4096, 11008)}:
   bf16 cuBLAS (``F.linear``), INT8 weight-only Triton kernel (dequant in the K loop), FP8 W8A8
   (``torch._scaled_mm`` with row-wise scales where supported, else the dequant fallback -- reported as
   ``fp8_path``), each with ms, TFLOP/s and weight GB/s (weight bytes / time: decode GEMMs are weight-bound),
   and the relative error vs an fp32 GEMM.
2. Decode: tokens/s of greedy decoding on the minimal LVLM (``--layers`` x hidden 4096 decoder, random weights)
   with bf16 weights vs ``quantize_model(..., "int8" | "fp8")``, and the achieved weight bandwidth
   (quantised linear bytes x tok/s). Baselines measured in the same process; nothing is asserted.
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F

from benchmarks._common import audited, pick_device, time_ms, write_result
from reference_impls.decode.quantization import quantize_model
from reference_impls.models.config import LVLMConfig
from reference_impls.models.minimal_lvlm import MinimalLVLM
from reference_impls.ops.quant.weight_gemm import (
    fp8_linear,
    int8_weight_only_matmul,
    quantize_fp8_rowwise,
    quantize_weight_int8,
    scaled_mm_supported,
)


def _rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


@torch.no_grad()
def run(args):
    device = pick_device(args.device, one_thread=args.smoke)
    smoke = args.smoke
    if smoke:
        Ms, shapes, dtype, impl, reps = (1, 16), ((256, 256), (512, 256)), torch.float32, "naive", 3
    else:
        Ms, shapes, dtype, impl, reps = (
            (1, 16, 128),
            ((4096, 4096), (11008, 4096), (4096, 11008)),
            torch.bfloat16,
            "auto",
            20,
        )
    gemm_rows = []
    for N, K in shapes:
        g = torch.Generator().manual_seed(N + K)
        w = (torch.randn(N, K, generator=g) * 0.02).to(device)
        w_lp = w.to(dtype)
        w8, s8 = quantize_weight_int8(w)
        wf8, sf8 = quantize_fp8_rowwise(w)
        fp8_path = "torch._scaled_mm" if scaled_mm_supported(device) else "dequant fallback"
        for M in Ms:
            x = torch.randn(M, K, generator=g).to(device, dtype)
            ref = x.float() @ w.t()
            row = dict(M=M, N=N, K=K, fp8_path=fp8_path)
            lp_name = "bf16" if dtype == torch.bfloat16 else str(dtype)
            fp8_impl = "naive" if smoke else "auto"
            for name, fn, wbytes in (
                (lp_name, lambda: F.linear(x, w_lp), N * K * x.element_size()),
                ("int8_weight_only", lambda: int8_weight_only_matmul(x, w8, s8, impl=impl), N * K + 4 * N),
                ("fp8_w8a8", lambda: fp8_linear(x, wf8, sf8, impl=fp8_impl), N * K + 4 * N),
            ):
                ms = time_ms(fn, device, reps)
                row[f"{name}_ms"] = ms
                row[f"{name}_tflops"] = 2 * M * N * K / (ms * 1e-3) / 1e12
                row[f"{name}_weight_gbps"] = wbytes / (ms * 1e-3) / 1e9
                row[f"{name}_rel_err_vs_fp32"] = _rel(fn(), ref)
            gemm_rows.append(row)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
    # ---- decode tokens/s
    if smoke:
        cfg = LVLMConfig.tiny(max_seq_len=256)
        new_tokens = 8
    else:
        cfg = LVLMConfig(
            vocab_size=32000,
            hidden=4096,
            n_layers=args.layers,
            n_heads=32,
            n_kv_heads=8,
            intermediate=11008,
            max_seq_len=1024,
            image_token_id=31999,
            name=f"{args.layers}L-4096",
        )
        new_tokens = args.new_tokens
    base = MinimalLVLM(cfg, seed=0, dtype=dtype, device=device)
    ids = torch.randint(0, cfg.image_token_id, (1, 32), generator=torch.Generator().manual_seed(0)).to(device)
    decode_rows = []
    ref_tokens = None
    for mode in ("none", "int8", "fp8"):
        model = base if mode == "none" else copy.deepcopy(base)
        qbytes = None
        if mode != "none":
            quantize_model(model, mode, impl=impl if mode == "int8" else ("naive" if smoke else "auto"))
            qbytes = sum(
                m.weight_q.numel() * m.weight_q.element_size() + 4 * m.scale.numel()
                for n, m in model.named_modules()
                if hasattr(m, "weight_q") and n.startswith("layers")
            )
        lin_bytes = sum(
            m.weight.numel() * m.weight.element_size()
            for n, m in base.named_modules()
            if isinstance(m, torch.nn.Linear) and n.startswith("layers")
        )
        toks = {}

        def generate():
            toks["t"] = model.generate(ids, max_new_tokens=new_tokens)

        ms, sdpa_calls = audited(time_ms, generate, device, reps=3 if smoke else 5, warmup=1)
        out = toks["t"][0]
        if ref_tokens is None:
            ref_tokens = out
        row = dict(
            weights=mode,
            ms=ms,
            tokens_per_s=new_tokens / ms * 1e3,
            sdpa_calls=sdpa_calls,
            decoder_linear_bytes=qbytes if qbytes is not None else lin_bytes,
            token_agreement_with_unquantised=float((out == ref_tokens).float().mean()),
        )
        row["achieved_weight_gbps"] = row["decoder_linear_bytes"] * row["tokens_per_s"] / 1e9
        decode_rows.append(row)
        print(row)
        del model
    write_result(
        "quant",
        device,
        smoke,
        dict(
            dtype=str(dtype),
            gemm=gemm_rows,
            decode=dict(
                model=cfg.name, new_tokens=new_tokens, note="ms includes the 32-token prefill", rows=decode_rows
            ),
        ),
        path=args.out,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<topic>_<device>.json)")
    p.add_argument("--device", default=None)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=64)
    run(p.parse_args())


if __name__ == "__main__":
    main()
