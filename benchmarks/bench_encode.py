"""Encoder-side techniques: ToMe throughput and VisionZip ViT time / LLM TTFT, each against a baseline measured in
the same process.

    python -m benchmarks.bench_encode            # GPU: full sizes, writes benchmarks/results/encode_<device>.json
    python -m benchmarks.bench_encode --smoke    # CPU or GPU: tiny shapes, checks the script end to end

Sections
  tome       ``ToMeViT`` at ViT-B/16 shapes (dim 768, 12 blocks, 12 heads, 197 tokens, batch 64, fp16, random weights):
             images/s vs r in {0, 4, 8, 13, 16} with the matching on the torch matmul + max path and on the fused
             Triton cosine max/argmax (upstream protocol: warm-up, synchronise, discard the first 25% of timings).
  cosine     the row-wise cosine max/argmax at ToMe set sizes (T/2 x T/2 for T = 197, 577, 2304, 8192): Triton kernel
             vs normalise + bmm + max (``benchmarks.bench_ops.bench_cosine``), time and peak memory.
  visionzip  HF ``LlavaForConditionalGeneration`` at LLaVA-1.5-7B shapes (CLIP ViT-L/14-336: 24 layers, 577 tokens;
             Llama 32 layers, d 4096; random weights, bf16, SDPA everywhere): ViT + projector ms and TTFT (one
             prefill forward, last-token logits) for the 576-token baseline and VisionZip (54,10), (108,20),
             (162,30); also the upstream way of getting the CLS attention (eager ViT with ``output_attentions``)
             to show the cost of forcing eager attention (VisionZip issues #24/#25/#29). Peak memory per row.
Each row also carries the layer-averaged token count (ToMe) or the LLM token count and theoretical prefill FLOPs
(VisionZip, ``reference_impls.accounting``), and ``sdpa_calls``: the SDPA backend of every attention call of the timed
function (audited once untimed; the math backend is off for the timing unless the audit needs it). Nothing is
asserted; ratios are against the baseline of the same run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import torch

from benchmarks._common import audited, peak_extra_bytes, pick_device, random_llava, trimmed_wall_ms, write_result
from benchmarks.bench_ops import bench_cosine
from reference_impls import accounting
from reference_impls.encode.tome import ToMeViT, max_merge_count, tome_schedule


# ------------------------------------------------------------------------------------------------------------ ToMe
def tome_layer_averaged_tokens(tokens: int, depth: int, r) -> float:
    """Tokens entering each block's attention, averaged over blocks (merging happens after attention)."""
    counts, current = [], tokens
    for r_layer in tome_schedule(depth, r):
        counts.append(current)
        current -= min(r_layer, max_merge_count(current, 1))
    return accounting.layer_averaged_tokens(counts)


def bench_tome(device, dtype, dim, depth, heads, tokens, batch, rs, impls, iters, warmup):
    torch.manual_seed(0)
    model = ToMeViT(dim=dim, depth=depth, heads=heads).to(device=device, dtype=dtype).eval()
    x = torch.randn(batch, tokens, dim, device=device, dtype=dtype)
    rows, base = [], None
    with torch.no_grad():
        for r in rs:
            for impl in impls:
                if r == 0 and impl != impls[0]:
                    continue  # r = 0 runs no matching
                ms, sdpa_calls = audited(trimmed_wall_ms, lambda: model(x, r=r, impl=impl), device, iters, warmup)
                out_tokens = model(x, r=r, impl=impl)[0].shape[1]
                row = {
                    "r": r,
                    "impl": impl if r else "none",
                    "ms": ms,
                    "img_per_s": batch / ms * 1e3,
                    "sdpa_calls": sdpa_calls,
                    "tokens_out": out_tokens,
                    "schedule": tome_schedule(depth, r),
                    "layer_averaged_tokens": tome_layer_averaged_tokens(tokens, depth, r),
                }
                if r == 0:
                    base = row["img_per_s"]
                row["speedup_vs_r0"] = row["img_per_s"] / base
                rows.append(row)
                print(
                    f"tome r={r:2d} {row['impl']:6s}: {ms:8.2f} ms/batch {row['img_per_s']:9.1f} img/s "
                    f"(x{row['speedup_vs_r0']:.2f} vs r=0), {out_tokens} tokens out"
                )
    return rows


# ------------------------------------------------------------------------------------------------------- VisionZip
def bench_visionzip(device, dtype, smoke, settings, iters, warmup, text_tokens):
    from reference_impls.encode.visionzip import VisionZip

    model = random_llava(smoke, device, dtype)
    vcfg = model.config.vision_config
    side = vcfg.image_size
    patches = (side // vcfg.patch_size) ** 2
    image_id = model.config.image_token_id
    pix = torch.randn(1, 3, side, side, device=device, dtype=dtype)
    text = torch.randint(1, 1000 if not smoke else 200, (text_tokens,), device=device)

    def prompt(n_image):
        ids = torch.cat([text[:5], torch.full((n_image,), image_id, device=device), text[5:]])
        return ids[None]

    def vit():
        return model.model.get_image_features(
            pixel_values=pix, vision_feature_layer=-2, vision_feature_select_strategy="default"
        )

    def prefill(ids):
        return model(input_ids=ids, pixel_values=pix, logits_to_keep=1, use_cache=True)

    tcfg = model.config.text_config
    flops_cfg = SimpleNamespace(
        hidden=tcfg.hidden_size,
        n_kv_heads=tcfg.num_key_value_heads,
        head_dim=tcfg.hidden_size // tcfg.num_attention_heads,
        intermediate=tcfg.intermediate_size,
        vocab_size=tcfg.vocab_size,
        n_layers=tcfg.num_hidden_layers,
    )

    def llm_flops(n_image):
        return accounting.prefill_flops(flops_cfg, [n_image + text_tokens] * tcfg.num_hidden_layers)

    rows = []
    with torch.no_grad():
        ids_full = prompt(patches)
        base_vit, _ = audited(trimmed_wall_ms, vit, device, iters, warmup)
        base_ttft, sdpa_calls = audited(trimmed_wall_ms, lambda: prefill(ids_full), device, iters, warmup)
        base_peak = peak_extra_bytes(lambda: prefill(ids_full), device)
        rows.append(
            {
                "method": "baseline",
                "image_tokens": patches,
                "llm_tokens": patches + text_tokens,
                "llm_prefill_flops": llm_flops(patches),
                "vit_ms": base_vit,
                "ttft_ms": base_ttft,
                "peak_bytes": base_peak,
                "vit_speedup": 1.0,
                "ttft_speedup": 1.0,
                "sdpa_calls": sdpa_calls,
            }
        )
        print(f"visionzip baseline: {patches} image tokens, ViT {base_vit:.2f} ms, TTFT {base_ttft:.2f} ms")
        for dominant, contextual in settings:
            technique = VisionZip(dominant=dominant, contextual=contextual)
            n_image = technique.tokens_per_image(patches)
            ids = prompt(n_image)
            with technique(model):
                vit_ms, _ = audited(trimmed_wall_ms, vit, device, iters, warmup)
                ttft, sdpa_calls = audited(trimmed_wall_ms, lambda: prefill(ids), device, iters, warmup)
                peak = peak_extra_bytes(lambda: prefill(ids), device)
            row = {
                "method": f"visionzip({dominant},{contextual})",
                "image_tokens": n_image,
                "llm_tokens": n_image + text_tokens,
                "llm_prefill_flops": llm_flops(n_image),
                "llm_flops_ratio_vs_baseline": llm_flops(patches) / llm_flops(n_image),
                "vit_ms": vit_ms,
                "ttft_ms": ttft,
                "peak_bytes": peak,
                "vit_speedup": base_vit / vit_ms,
                "ttft_speedup": base_ttft / ttft,
                "sdpa_calls": sdpa_calls,
            }
            rows.append(row)
            print(
                f"visionzip ({dominant},{contextual}): ViT {vit_ms:.2f} ms (x{row['vit_speedup']:.2f}), "
                f"TTFT {ttft:.2f} ms (x{row['ttft_speedup']:.2f}), peak {peak}"
            )
        # the upstream way: eager attention in the ViT so that output_attentions returns the CLS row
        model.model.vision_tower.set_attn_implementation("eager")
        tower = model.model.vision_tower

        def eager_scores():
            return tower(pix, output_attentions=True, output_hidden_states=True)

        eager_ms = trimmed_wall_ms(eager_scores, device, iters, warmup)
        eager_peak = peak_extra_bytes(eager_scores, device)
        model.model.vision_tower.set_attn_implementation("sdpa")
        sdpa_ms, sdpa_calls = audited(
            trimmed_wall_ms, lambda: tower(pix, output_hidden_states=True), device, iters, warmup
        )
        rows.append(
            {
                "method": "vit_eager_output_attentions (upstream scoring)",
                "vit_ms": eager_ms,
                "peak_bytes": eager_peak,
                "vit_sdpa_ms": sdpa_ms,
                "eager_over_sdpa": eager_ms / sdpa_ms,
                "sdpa_calls": sdpa_calls,
            }
        )
        print(
            f"ViT eager + output_attentions {eager_ms:.2f} ms vs SDPA {sdpa_ms:.2f} ms "
            f"(x{eager_ms / sdpa_ms:.2f} slower)"
        )
    del model
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny shapes (CPU or GPU)")
    p.add_argument("--only", default="tome,cosine,visionzip", help="comma-separated sections")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/encode_<device>.json)")
    args = p.parse_args(argv)
    device = pick_device()
    if device.type == "cpu" and not args.smoke:
        p.error("full benchmarks need a CUDA device; use --smoke on CPU")
    sections = set(args.only.split(","))
    out = {
        "timer": "perf_counter + synchronize, median of the last 75% of timed calls",
        "note": (
            "smoke run: tiny shapes; on CPU the Triton kernels run in the interpreter, so timings are not "
            "performance figures"
        )
        if args.smoke
        else "full run, random weights",
    }
    impls = ["torch", "triton"]
    if args.smoke:
        dtype = torch.float32 if device.type == "cpu" else torch.float16
        tome_cfg = dict(dim=64, depth=4, heads=4, tokens=65, batch=4, rs=[0, 4, 8], impls=impls, iters=4, warmup=1)
        cos_shapes = [(2, 32, 32)]
        vz_cfg = dict(settings=[(12, 4), (24, 8)], iters=3, warmup=1, text_tokens=16)
        reps = 2
    else:
        dtype = torch.float16
        tome_cfg = dict(
            dim=768, depth=12, heads=12, tokens=197, batch=64, rs=[0, 4, 8, 13, 16], impls=impls, iters=40, warmup=10
        )
        cos_shapes = [(64, 98, 64), (64, 288, 64), (8, 1152, 64), (2, 4096, 64), (64, 98, 768)]
        vz_cfg = dict(settings=[(54, 10), (108, 20), (162, 30)], iters=20, warmup=5, text_tokens=64)
        reps = 0
    out["dtype"] = str(dtype)
    if "tome" in sections:
        out["tome"] = bench_tome(device, dtype, **tome_cfg)
    if "cosine" in sections:
        out["cosine_max_argmax"] = bench_cosine(device, dtype, cos_shapes, reps=reps)
    if "visionzip" in sections:
        vz_dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
        out["visionzip"] = bench_visionzip(device, vz_dtype, args.smoke, **vz_cfg)
    write_result("encode", device, args.smoke, out, path=args.out, modules=("triton", "transformers"))


if __name__ == "__main__":
    main()
