"""Prefill-stage pruning on the minimal LVLM at LLaVA-1.5-7B shapes: FastV and PyramidDrop vs the unpruned model.

    python -m benchmarks.bench_prefill                 # GPU: bf16, SDPA, writes benchmarks/results/prefill_<device>.json
    python -m benchmarks.bench_prefill --smoke         # CPU: tiny model, checks the script end to end

Per configuration (baseline; FastV K=2 with R = 0.25 / 0.5 / 0.75; PyramidDrop layers [8, 16, 24] with
ratios (l, l^2, l^3), l = 1 - R, so R = 0.5 is the paper's default 0.5/0.25/0.125):
  * LLM prefill ms (the decoder on image features; TTFT = vision ms + this), median over CUDA-event timings
    after warm-up; TPOT = median decode-step ms over ``--decode-steps`` steps after that prefill;
  * layer-averaged token count, theoretical prefill FLOPs and the FLOP-predicted speedup (reference_impls.accounting)
    beside the measured speedup and their ratio (target >= 0.9 of predicted);
  * peak memory above the weights (``max_memory_allocated`` after ``reset_peak_memory_stats``) and KV-cache bytes.
Random weights (timing does not depend on them). Attention: SDPA for outputs, ``ops.scored_attention`` only on
the score rows. Baselines are measured in the same process; nothing is asserted.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from benchmarks._common import pick_device, peak_extra_bytes, time_ms, write_result
from reference_impls import accounting
from reference_impls.models import LVLMConfig, MinimalLVLM
from reference_impls.prefill.fastv import FastV
from reference_impls.prefill.pyramiddrop import PyramidDrop


def make_prompt(cfg, batch, n_prefix, n_suffix, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = n_prefix + cfg.n_visual_tokens + n_suffix
    ids = torch.randint(0, cfg.image_token_id, (batch, n), generator=g)
    ids[:, n_prefix:n_prefix + cfg.n_visual_tokens] = cfg.image_token_id
    pix = torch.randn(batch, 3, cfg.vision.image_size, cfg.vision.image_size, generator=g)
    return ids.to(device), pix.to(device)


def configs(ratios):
    out = [("baseline", lambda: [])]
    for r in ratios:
        out.append((f"fastv_K2_R{r}", lambda r=r: [FastV(k=2, ratio=r)]))
    for r in ratios:
        lam = 1.0 - r
        out.append((f"pdrop_R{r}", lambda lam=lam: [PyramidDrop(ratio_list=(lam, lam ** 2, lam ** 3))]))
    return out


def run(args):
    device = pick_device(args.device)
    if args.smoke:
        cfg = LVLMConfig.tiny(n_layers=8, max_seq_len=256)
        dtype = torch.float32
        n_prefix, n_suffix, reps, warmup, steps = 5, 7, 2, 1, 3
    else:
        cfg = LVLMConfig.llava_1_5_7b()
        dtype = torch.bfloat16
        n_prefix, n_suffix, reps, warmup, steps = args.prefix, args.suffix, args.reps, args.warmup, args.decode_steps
    torch.manual_seed(0)
    model = MinimalLVLM(cfg, seed=0, dtype=dtype, device=device)
    weights_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    ids, pix = make_prompt(cfg, args.batch, n_prefix, n_suffix, device)
    capacity = ids.shape[1] + steps + 1
    cache = model.new_cache(args.batch, capacity)
    kv_slot_bytes = 2 * cfg.n_kv_heads * cfg.head_dim * torch.tensor([], dtype=dtype).element_size()

    with torch.inference_mode():
        vision_ms = time_ms(lambda: model.encode_images(pix), device, reps, warmup)
        feats = model.encode_images(pix)
        rows, base = [], None
        for name, make_hooks in configs(args.ratios):
            def prefill():
                cache.reset()
                return model.prefill(ids, image_features=feats, cache=cache, hooks=make_hooks())

            prefill_ms = time_ms(prefill, device, reps, warmup)
            # peak memory of one prefill, above what is allocated before it (weights + cache buffers)
            peak = peak_extra_bytes(prefill, device)
            res = prefill()
            tokens = res.layer_tokens[:, 0].tolist()
            kv_bytes = int(sum(int(res.cache.lengths(l)[0]) for l in range(cfg.n_layers)) * kv_slot_bytes * args.batch)
            # TPOT: decode steps after this prefill
            tok = res.logits.argmax(-1)
            step_times = []
            for _ in range(steps):
                t = time_ms(lambda: model.decode_step(tok, cache), device, 1, 0)
                step_times.append(t)
            tpot_ms = statistics.median(step_times)
            if base is None:
                base = {"tokens": tokens, "ms": prefill_ms, "tpot": tpot_ms}
            row = accounting.timing_report(
                cfg, name=name, tokens_per_layer=tokens, wall_ms=prefill_ms,
                baseline_tokens_per_layer=base["tokens"], baseline_ms=base["ms"],
                ttft_ms=vision_ms + prefill_ms, tpot_ms=tpot_ms, tpot_speedup=base["tpot"] / tpot_ms,
                decode_step_gflops=accounting.decode_step_flops(
                    cfg, [int(res.cache.lengths(l)[0]) for l in range(cfg.n_layers)]) / 1e9,
                peak_prefill_bytes=peak, kv_cache_bytes=kv_bytes)
            rows.append(row)
            print(f"{name:>16}: prefill {prefill_ms:8.2f} ms  TTFT {vision_ms + prefill_ms:8.2f} ms  "
                  f"TPOT {tpot_ms:7.3f} ms  tokens/layer {row['layer_avg_tokens']:7.1f}  "
                  f"speedup {row['measured_speedup']:.2f}x (FLOP-predicted {row['predicted_speedup']:.2f}x, "
                  f"{row['fraction_of_predicted']:.0%})")

    out = {"model": cfg.name, "dtype": str(dtype), "batch": args.batch, "prompt_tokens": int(ids.shape[1]),
           "visual_tokens": cfg.n_visual_tokens, "weights_bytes": weights_bytes, "vision_ms": vision_ms,
           "reps": reps, "attention": "SDPA (outputs) + ops.scored_attention (score rows)",
           "target": "measured speedup >= 0.9 x FLOP-predicted speedup", "results": rows}
    write_result("prefill", device, args.smoke, out, path=args.out)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny model on CPU (checks the script)")
    p.add_argument("--device", default=None)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prefix", type=int, default=35, help="text tokens before the image")
    p.add_argument("--suffix", type=int, default=45, help="text tokens after the image (the question)")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--decode-steps", type=int, default=32)
    p.add_argument("--out", default=None)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    main()
