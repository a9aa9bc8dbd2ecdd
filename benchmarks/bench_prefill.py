"""Prefill-stage pruning at LLaVA-1.5-7B shapes: FastV and PyramidDrop vs the unpruned model, on the minimal LVLM
and on the unmodified Hugging Face LLaVA.

    python -m benchmarks.bench_prefill                 # GPU: bf16, SDPA, writes
    benchmarks/results/prefill_<device>.json
    python -m benchmarks.bench_prefill --smoke         # CPU: tiny models, checks the script end to end
    python -m benchmarks.bench_prefill --only hf       # only the Hugging Face section

Per configuration (baseline; FastV K=2 with R = 0.25 / 0.5 / 0.75; PyramidDrop layers [8, 16, 24] with
ratios (l, l^2, l^3), l = 1 - R, so R = 0.5 is the paper's default 0.5/0.25/0.125):
  * LLM prefill ms (the decoder on image features; TTFT = vision ms + this), median over CUDA-event timings
    after warm-up; TPOT = median decode-step ms over ``--decode-steps`` steps after that prefill;
  * layer-averaged token count, theoretical prefill FLOPs and the FLOP-predicted speedup (reference_impls.accounting)
    beside the measured speedup and their ratio (target >= 0.9 of predicted);
  * peak memory above the weights (``max_memory_allocated`` after ``reset_peak_memory_stats``) and KV-cache bytes.
Random weights (timing does not depend on them). Attention: SDPA for outputs, ``ops.scored_attention`` only on
the score rows. Baselines are measured in the same process; nothing is asserted.

Hugging Face section (``hf``): ``LlavaForConditionalGeneration`` at LLaVA-1.5-7B shapes with random weights
(``benchmarks._common.random_llava``), SDPA attention, one prompt of ``prefix`` text + 576 image + ``suffix`` text
tokens. Rows: the unmodified model (TTFT = ViT + projector + LLM prefill, ``logits_to_keep=1``); the same model inside
``prefill.fastv.FastV`` on the Hugging Face host (K = 2, R as above); and the unmodified model on a text-only
prompt of FastV's pruned token count (the LLM cost depends only on the count). LLM prefill ms: the same forward with
the ViT + projector result
computed once and replayed (``image_features_replayed``); TTFT: the whole forward.
``ceiling_speedup`` is what FastV could reach if pruning cost nothing: the first K layers at the full count, the other
L - K at the pruned one, each layer costing 1/L of the measured forward at that count; ``fraction_of_ceiling`` is the
measured LLM speedup over it.

Every timed function's SDPA calls are audited (``sdpa_calls``: backend -> calls, from one untimed call; the math
backend is off for the timing unless the audit needs it). ``targets``: FastV's measured speedup >= 0.9 x its
FLOP-predicted speedup, per ratio, on both models.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from types import SimpleNamespace

import torch

from benchmarks._common import (
    audited,
    peak_extra_bytes,
    pick_device,
    random_llava,
    sdpa_backends_of,
    target,
    time_ms,
    write_result,
)
from reference_impls import accounting
from reference_impls.models import LVLMConfig, MinimalLVLM
from reference_impls.prefill.fastv import FastV
from reference_impls.prefill.pyramiddrop import PyramidDrop


def make_prompt(cfg, batch, n_prefix, n_suffix, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = n_prefix + cfg.n_visual_tokens + n_suffix
    ids = torch.randint(0, cfg.image_token_id, (batch, n), generator=g)
    ids[:, n_prefix : n_prefix + cfg.n_visual_tokens] = cfg.image_token_id
    pix = torch.randn(batch, 3, cfg.vision.image_size, cfg.vision.image_size, generator=g)
    return ids.to(device), pix.to(device)


def configs(ratios):
    out = [("baseline", lambda: [])]
    for r in ratios:
        out.append((f"fastv_K2_R{r}", lambda r=r: [FastV(k=2, ratio=r)]))
    for r in ratios:
        lam = 1.0 - r
        out.append((f"pdrop_R{r}", lambda lam=lam: [PyramidDrop(ratio_list=(lam, lam**2, lam**3))]))
    return out


def run(args):
    device = pick_device(args.device)
    sections = set(args.only.split(","))
    unknown = sections - {"minimal", "hf"}
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}: choose from minimal, hf")
    out = {"batch": args.batch, "target": "measured speedup >= 0.9 x FLOP-predicted speedup", "targets": []}
    if "minimal" in sections:
        out.update(bench_minimal(args, device))
        out["targets"] += [
            target(
                f"minimal LVLM {row['name']}: measured / FLOP-predicted speedup",
                row["fraction_of_predicted"],
                0.9,
                smoke=args.smoke,
            )
            for row in out["results"]
            if row["name"].startswith("fastv")
        ]
    if "hf" in sections:
        out["hf_llava"] = bench_hf_llava(args, device)
        out["targets"] += [
            target(
                f"HF LLaVA {row['name']}: measured / FLOP-predicted LLM prefill speedup",
                row["fraction_of_predicted"],
                0.9,
                smoke=args.smoke,
                note=f"fraction of the pruned-count ceiling: {row['fraction_of_ceiling']:.2f}",
            )
            for row in out["hf_llava"]["rows"]
            if row["name"].startswith("fastv")
        ]
    write_result("prefill", device, args.smoke, out, path=args.out, modules=("triton", "transformers"))
    return out


def bench_minimal(args, device):
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
    capacity = ids.shape[1] + steps + 2  # + the audited decode step
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

            prefill_ms, sdpa_calls = audited(time_ms, prefill, device, reps, warmup)
            # peak memory of one prefill, above what is allocated before it (weights + cache buffers)
            peak = peak_extra_bytes(prefill, device)
            res = prefill()
            tokens = res.layer_tokens[:, 0].tolist()
            kv_bytes = int(sum(int(res.cache.lengths(l)[0]) for l in range(cfg.n_layers)) * kv_slot_bytes * args.batch)
            # TPOT: decode steps after this prefill
            tok = res.logits.argmax(-1)
            decode_calls = sdpa_backends_of(lambda: model.decode_step(tok, cache))
            step_times = []
            for _ in range(steps):
                t = time_ms(lambda: model.decode_step(tok, cache), device, 1, 0)
                step_times.append(t)
            tpot_ms = statistics.median(step_times)
            if base is None:
                base = {"tokens": tokens, "ms": prefill_ms, "tpot": tpot_ms}
            row = accounting.timing_report(
                cfg,
                name=name,
                tokens_per_layer=tokens,
                wall_ms=prefill_ms,
                baseline_tokens_per_layer=base["tokens"],
                baseline_ms=base["ms"],
                ttft_ms=vision_ms + prefill_ms,
                tpot_ms=tpot_ms,
                tpot_speedup=base["tpot"] / tpot_ms,
                decode_step_gflops=accounting.decode_step_flops(
                    cfg, [int(res.cache.lengths(l)[0]) for l in range(cfg.n_layers)]
                )
                / 1e9,
                peak_prefill_bytes=peak,
                kv_cache_bytes=kv_bytes,
                sdpa_calls_prefill=sdpa_calls,
                sdpa_calls_decode_step=decode_calls,
            )
            rows.append(row)
            print(
                f"{name:>16}: prefill {prefill_ms:8.2f} ms  TTFT {vision_ms + prefill_ms:8.2f} ms  "
                f"TPOT {tpot_ms:7.3f} ms  tokens/layer {row['layer_avg_tokens']:7.1f}  "
                f"speedup {row['measured_speedup']:.2f}x (FLOP-predicted {row['predicted_speedup']:.2f}x, "
                f"{row['fraction_of_predicted']:.0%})"
            )

    return {
        "model": cfg.name,
        "dtype": str(dtype),
        "prompt_tokens": int(ids.shape[1]),
        "visual_tokens": cfg.n_visual_tokens,
        "weights_bytes": weights_bytes,
        "vision_ms": vision_ms,
        "reps": reps,
        "attention": "SDPA (outputs) + ops.scored_attention (score rows)",
        "results": rows,
    }


@contextlib.contextmanager
def image_features_replayed(model):
    """Inside: LLaVA's ``get_image_features`` runs once and later calls return that result (the LLM prefill alone
    is timed; the pixel values must stay the same)."""
    inner = model.model
    original = inner.get_image_features
    cached = []

    def replay(*args, **kwargs):
        if not cached:
            cached.append(original(*args, **kwargs))
        return cached[0]

    inner.get_image_features = replay
    try:
        yield
    finally:
        del inner.get_image_features


def bench_hf_llava(args, device):
    """The unmodified HF LLaVA, the FastV adapter on it, and the unmodified model at FastV's pruned token count."""

    dtype = torch.float32 if args.smoke else torch.bfloat16
    reps, warmup = (2, 1) if args.smoke else (args.reps, args.warmup)
    n_prefix, n_suffix = (5, 7) if args.smoke else (args.prefix, args.suffix)
    K = 2
    model = random_llava(args.smoke, device, dtype)
    vcfg, tcfg = model.config.vision_config, model.config.text_config
    side = vcfg.image_size
    patches = (side // vcfg.patch_size) ** 2
    image_id = model.config.image_token_id
    g = torch.Generator().manual_seed(0)
    text = torch.randint(1, min(1000, image_id), (n_prefix + n_suffix,), generator=g)
    ids = torch.cat([text[:n_prefix], torch.full((patches,), image_id), text[n_prefix:]])[None].to(device)
    pix = torch.randn(1, 3, side, side, generator=g).to(device, dtype)
    n_text, n_layers = n_prefix + n_suffix, tcfg.num_hidden_layers
    flops_cfg = SimpleNamespace(
        hidden=tcfg.hidden_size,
        n_kv_heads=tcfg.num_key_value_heads,
        head_dim=tcfg.hidden_size // tcfg.num_attention_heads,
        intermediate=tcfg.intermediate_size,
        vocab_size=tcfg.vocab_size,
        n_layers=n_layers,
    )

    def forward(input_ids, pixel_values=None):
        return model(input_ids=input_ids, pixel_values=pixel_values, logits_to_keep=1, use_cache=True)

    def vit():
        return model.model.get_image_features(
            pixel_values=pix, vision_feature_layer=-2, vision_feature_select_strategy="default"
        )

    rows = []
    with torch.inference_mode():
        vit_ms, _ = audited(time_ms, vit, device, reps, warmup)
        base_ttft, base_calls = audited(time_ms, lambda: forward(ids, pix), device, reps, warmup)
        with image_features_replayed(model):
            base_llm = time_ms(lambda: forward(ids, pix), device, reps, warmup)
        full_tokens = [n_text + patches] * n_layers
        rows.append(
            accounting.timing_report(
                flops_cfg,
                name="unmodified",
                tokens_per_layer=full_tokens,
                wall_ms=base_llm,
                ttft_ms=base_ttft,
                sdpa_calls=base_calls,
            )
        )
        for r in args.ratios:
            tokens = accounting.fastv_tokens_per_layer(n_layers, n_text, patches, K, r)
            pruned = tokens[-1]
            with FastV(k=K, ratio=r)(model):
                ttft, calls = audited(time_ms, lambda: forward(ids, pix), device, reps, warmup)
                with image_features_replayed(model):
                    llm_ms = time_ms(lambda: forward(ids, pix), device, reps, warmup)
            short = torch.randint(1, min(1000, image_id), (1, pruned), generator=g).to(device)
            at_pruned, pruned_calls = audited(time_ms, lambda: forward(short), device, reps, warmup)
            ceiling_ms = (K * base_llm + (n_layers - K) * at_pruned) / n_layers
            row = accounting.timing_report(
                flops_cfg,
                name=f"fastv_K{K}_R{r}",
                tokens_per_layer=tokens,
                wall_ms=llm_ms,
                baseline_tokens_per_layer=full_tokens,
                baseline_ms=base_llm,
                ttft_ms=ttft,
                ttft_speedup=base_ttft / ttft,
                sdpa_calls=calls,
                pruned_tokens=pruned,
                unmodified_at_pruned_count_ms=at_pruned,
                sdpa_calls_at_pruned_count=pruned_calls,
                ceiling_speedup=base_llm / ceiling_ms,
            )
            row["fraction_of_ceiling"] = row["measured_speedup"] / row["ceiling_speedup"]
            rows.append(row)
            print(
                f"HF LLaVA {row['name']:>14}: LLM {row['wall_ms']:8.2f} ms (x{row['measured_speedup']:.2f}; "
                f"FLOP-predicted x{row['predicted_speedup']:.2f} = {row['fraction_of_predicted']:.0%}; "
                f"unmodified at {pruned} tokens: {at_pruned:.2f} ms, ceiling x{row['ceiling_speedup']:.2f} = "
                f"{row['fraction_of_ceiling']:.0%})"
            )
    del model
    return {
        "model": "LlavaForConditionalGeneration, LLaVA-1.5-7B shapes" if not args.smoke else "tiny LLaVA",
        "dtype": str(dtype),
        "prompt_tokens": int(ids.shape[1]),
        "visual_tokens": patches,
        "vit_ms": vit_ms,
        "unmodified_ttft_ms": base_ttft,
        "K": K,
        "reps": reps,
        "rows": rows,
    }


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
    p.add_argument("--only", default="minimal,hf", help="comma-separated sections: minimal, hf")
    p.add_argument("--out", default=None)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    main()
