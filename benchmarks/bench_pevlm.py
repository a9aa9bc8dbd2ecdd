"""PEVLM parallel-encoding attention vs full causal attention (paper claims up to 7.47x attention speedup).

    python -m benchmarks.bench_pevlm            # GPU: bf16, T in {32, 64, 128} frames x N in {64, 196} tokens
    python -m benchmarks.bench_pevlm --smoke    # CPU: small shapes, checks the script end to end

Attention-only time (one layer, Qwen2.5-VL-7B head layout: 28 q / 4 kv heads, head_dim 128) of
  * full causal SDPA over the whole prefill (the baseline; one backend forced and recorded: flash, then cuDNN, then
    memory-efficient, see ``benchmarks._common.sdpa_with_backend``),
  * PEVLM block-sparse path (``prefill.pevlm.blocksparse_pevlm_attention``: batched SDPA over sink + own block),
  * PEVLM Triton path (GPU only: context rows in ``prefill/pevlm_triton.py``, sink/query rows on SDPA),
  * the dense-mask SDPA with the PEVLM boolean mask (same maths, no sparsity exploited: shows the gain is the
    block structure, not a different kernel),
plus, on the tiny minimal LVLM, output agreement of a PEVLM prefill vs the full-attention prefill (top-1 of the
last-token logits and cosine). The PEVLM paths call SDPA themselves (masked, GQA): ``sdpa_calls_*`` records the backend
of each of those calls (audited once untimed; the math backend is off for the timing unless the audit needs it, so a
math fallback is always in the record). Layout: 16 prefix tokens, sink = prefix + 1 frame, blocks of 4 frames, 32
question tokens. Median of CUDA-event timings after warm-up; nothing is asserted.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from benchmarks._common import audited, pick_device, sdpa_with_backend, time_ms, write_result
from reference_impls.models.config import LVLMConfig
from reference_impls.models.minimal_lvlm import MinimalLVLM
from reference_impls.prefill.pevlm import (
    PEVLMLayout,
    blocksparse_pevlm_attention,
    pevlm_attention,
    pevlm_mask,
    pevlm_prefill,
)


@torch.no_grad()
def run(args):
    device = pick_device(args.device, one_thread=args.smoke)
    if args.smoke:
        frames, tokens, (Hq, Hkv, D), dtype, reps = (4, 8), (16,), (4, 2, 32), torch.float32, 3
    else:
        frames, tokens, (Hq, Hkv, D), dtype, reps = (32, 64, 128), (64, 196), (28, 4, 128), torch.bfloat16, 10
    rows = []
    for n in tokens:
        for t in frames:
            lay = PEVLMLayout.from_frames(16, t, n, 32, sink_frames=1, frames_per_block=args.frames_per_block)
            L = lay.total_len
            g = torch.Generator(device="cpu").manual_seed(0)
            q = torch.randn(1, Hq, L, D, generator=g).to(device, dtype)
            k = torch.randn(1, Hkv, L, D, generator=g).to(device, dtype)
            v = torch.randn(1, Hkv, L, D, generator=g).to(device, dtype)
            full_fn, full_backend = sdpa_with_backend(q, k, v, is_causal=True, enable_gqa=True)
            full = time_ms(full_fn, device, reps)
            pe, pe_calls = audited(time_ms, lambda: blocksparse_pevlm_attention(q, k, v, lay), device, reps)
            row = dict(
                frames=t,
                tokens_per_frame=n,
                seq_len=L,
                n_blocks=lay.n_blocks,
                full_causal_ms=full,
                full_causal_sdpa_backend=full_backend,
                pevlm_blocksparse_ms=pe,
                sdpa_calls_blocksparse=pe_calls,
                speedup=full / pe,
                attended_pairs_fraction=float(pevlm_mask(lay, "cpu").sum()) / (L * (L + 1) / 2) if L <= 16384 else None,
            )
            if device.type == "cuda":
                row["pevlm_triton_ms"], row["sdpa_calls_triton"] = audited(
                    time_ms, lambda: pevlm_attention(q, k, v, lay, impl="triton"), device, reps
                )
                row["speedup_triton"] = full / row["pevlm_triton_ms"]
            if L <= 12000:
                mask = pevlm_mask(lay, device)
                dense_fn, row["pevlm_dense_mask_sdpa_backend"] = sdpa_with_backend(
                    q, k, v, attn_mask=mask, enable_gqa=True
                )
                row["pevlm_dense_mask_ms"] = time_ms(dense_fn, device, reps)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                blocksparse_pevlm_attention(q, k, v, lay)
                row["pevlm_peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            rows.append(row)
            print({kk: (round(vv, 3) if isinstance(vv, float) else vv) for kk, vv in row.items()})
    # output agreement on the tiny model (text-token stand-ins for video tokens)
    model = MinimalLVLM(LVLMConfig.tiny(max_seq_len=1024), seed=0, device=device)
    agree = []
    for fpb in (1, 2, 4):
        lay = PEVLMLayout.from_frames(4, 16, 16, 8, sink_frames=1, frames_per_block=fpb)
        ids = torch.randint(0, 250, (4, lay.total_len), generator=torch.Generator().manual_seed(1)).to(device)
        ref = model.prefill(ids).logits
        out, _ = pevlm_prefill(model, ids, lay)
        agree.append(
            dict(
                frames_per_block=fpb,
                n_blocks=lay.n_blocks,
                top1_agreement=float((out.argmax(-1) == ref.argmax(-1)).float().mean()),
                logit_cosine=float(F.cosine_similarity(out, ref, dim=-1).mean()),
            )
        )
        print(agree[-1])
    write_result(
        "pevlm",
        device,
        args.smoke,
        dict(
            dtype=str(dtype),
            heads=dict(q=Hq, kv=Hkv, head_dim=D),
            layout=f"16 prefix + (1 sink frame) + blocks of {args.frames_per_block} frames + 32 question tokens",
            baseline="SDPA is_causal, backend forced and recorded per row (full_causal_sdpa_backend)",
            paper_claim="up to 7.47x attention speedup",
            attention=rows,
            tiny_model_agreement=agree,
        ),
        path=args.out,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<topic>_<device>.json)")
    p.add_argument("--device", default=None)
    p.add_argument("--frames-per-block", type=int, default=4)
    run(p.parse_args())


if __name__ == "__main__":
    main()
