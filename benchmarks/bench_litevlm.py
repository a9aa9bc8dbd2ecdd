"""LiteVLM pipeline ablation: per-stage latency as components are enabled one by one (the paper's table shape).

    python -m benchmarks.bench_litevlm            # GPU
    python -m benchmarks.bench_litevlm --smoke    # CPU: tiny model, checks the script end to end

Six camera views; rows: baseline (all off) -> + view selection -> + token selection (FastV K=2, keep 50 %) ->
+ speculative decoding (chain, k=4, truncated self-draft) -> + FP8 (W8A8). Per row: view-selection, vision,
prefill, decode and total ms (median of ``--reps`` runs after a warm-up), cumulative speedup vs the baseline,
visual tokens reaching the LLM, and token agreement with the baseline output. The ViewSelector is untrained
(random) and the LLM has random weights: which views survive and how often drafts are accepted are not
representative of the paper's DriveLM setting (2.5x end to end, 3.2x with FP8, on DRIVE Thor). Nothing asserted.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from benchmarks._common import pick_device, sdpa_backends_of, sdpa_math_off, write_result
from reference_impls.encode.litevlm_view_selection import ViewSelector
from reference_impls.models.config import LVLMConfig
from reference_impls.models.minimal_lvlm import MinimalLVLM
from reference_impls.pipelines.litevlm import LiteVLMConfig, LiteVLMPipeline
from reference_impls.prefill.litevlm_token_selection import TokenSelection


@torch.no_grad()
def run(args):
    device = pick_device(args.device, one_thread=args.smoke)
    if args.smoke:
        cfg, dtype, new_tokens, reps = LVLMConfig.tiny(max_seq_len=512), torch.float32, 8, 2
    else:
        cfg = LVLMConfig(
            vocab_size=32000,
            hidden=2048,
            n_layers=16,
            n_heads=16,
            n_kv_heads=4,
            intermediate=5632,
            max_seq_len=4096,
            image_token_id=31999,
            name="litevlm-0.9b",
        )
        dtype, new_tokens, reps = torch.bfloat16, args.new_tokens, args.reps
    model = MinimalLVLM(cfg, seed=0, dtype=dtype, device=device)
    torch.manual_seed(0)
    selector = ViewSelector(6, 1000).to(device)
    g = torch.Generator().manual_seed(0)
    views = torch.randn(1, 6, 3, cfg.vision.image_size, cfg.vision.image_size, generator=g).to(device, dtype)
    q = torch.randint(0, cfg.image_token_id, (1, 16), generator=g).to(device)
    question = "is the car in the front left camera moving"
    ts = TokenSelection("fastv", keep_ratio=0.5)
    steps = [
        ("baseline", LiteVLMConfig()),
        ("+view_selection", LiteVLMConfig(view_selection=True)),
        ("+token_selection", LiteVLMConfig(view_selection=True, token_selection=ts)),
        (
            "+speculative",
            LiteVLMConfig(view_selection=True, token_selection=ts, speculative=True, draft_layers=args.draft_layers),
        ),
        (
            "+fp8",
            LiteVLMConfig(
                view_selection=True, token_selection=ts, speculative=True, draft_layers=args.draft_layers, fp8=True
            ),
        ),
    ]
    rows, base_total, base_tokens = [], None, None
    for name, pc in steps:
        pc.max_new_tokens = new_tokens
        pipe = LiteVLMPipeline(model, pc, selector)
        calls = sdpa_backends_of(lambda: pipe.run(question, q, views))  # warm-up + SDPA audit
        with sdpa_math_off(calls):
            runs = [pipe.run(question, q, views) for _ in range(reps)]
        lat = {k: statistics.median(r.latency_ms[k] for r in runs) for k in runs[0].latency_ms}
        res = runs[0]
        base_total = base_total or lat["total"]
        base_tokens = res.tokens if base_tokens is None else base_tokens
        row = dict(
            config=name,
            **{f"{k}_ms": v for k, v in lat.items()},
            speedup_vs_baseline=base_total / lat["total"],
            sdpa_calls=calls,
            visual_tokens=res.visual_tokens,
            kept_views=res.kept_views.tolist(),
            agreement_with_baseline=float((res.tokens.cpu() == base_tokens.cpu()).float().mean()),
        )
        if res.spec_stats is not None:
            row["tau"] = res.spec_stats.mean_accepted_length
        rows.append(row)
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()})
    write_result(
        "litevlm",
        device,
        args.smoke,
        dict(model=cfg.name, dtype=str(dtype), new_tokens=new_tokens, reps=reps, views=6, rows=rows),
        path=args.out,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<topic>_<device>.json)")
    p.add_argument("--device", default=None)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--draft-layers", type=int, default=2)
    run(p.parse_args())


if __name__ == "__main__":
    main()
