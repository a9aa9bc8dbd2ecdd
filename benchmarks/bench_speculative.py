"""Speculative decoding on the minimal LVLM: AR vs chain / adaptive chain / tree SD, LVSpec and SpecVLM.

    python -m benchmarks.bench_speculative            # GPU: ~0.9B-parameter random target in bf16, 2-layer self-draft
    python -m benchmarks.bench_speculative --smoke    # CPU: tiny model, checks the script end to end

Per method: mean accepted length tau (tokens per target call), the acceptance histogram, tokens/s and speedup vs
AR measured in the same process, ms per verification step, and whether the greedy output equals AR (lossless
methods must; LVSpec is lossy by design, its token agreement with AR is reported). The draft is the target's
first ``--draft-layers`` layers (LayerSkip-style self-draft). Random weights give nearly flat logits, so to
control agreement the target's layers above the draft have their residual-branch output weights (``o_proj``,
``mlp`` down projection) multiplied by ``--upper-scales`` (0 = those layers cost compute but change nothing, so
every draft token is accepted: the ceiling; 1 = the unmodified random model). This is a synthetic knob: the
numbers show mechanics and overheads, not the papers' speedups on trained models. Nothing is asserted.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks._common import pick_device, sdpa_backends_of, sdpa_math_off, wall_ms, write_result
from reference_impls.decode.speculative import autoregressive_generate, speculative_generate, speculative_generate_tree
from reference_impls.decode.speculative.lvlm_adapter import LVLMSpecLM, truncated_draft
from reference_impls.decode.speculative.lvspec import LVSpecConfig, lvspec_generate
from reference_impls.decode.speculative.specvlm import specvlm_generate
from reference_impls.models.config import LVLMConfig
from reference_impls.models.minimal_lvlm import MinimalLVLM


def scaled_upper_layers(model, n_keep: int, scale: float):
    """Copy of ``model`` whose layers >= n_keep have their residual-branch outputs scaled by ``scale``."""
    if scale == 1.0:
        return model
    import copy

    out = copy.deepcopy(model)
    with torch.no_grad():
        for layer in out.layers[n_keep:]:
            layer.attn.o_proj.weight.mul_(scale)
            for name, mod in layer.mlp.named_modules():
                if isinstance(mod, torch.nn.Linear) and mod.out_features == out.cfg.hidden:
                    mod.weight.mul_(scale)
    return out


def run(args):
    device = pick_device(args.device, one_thread=args.smoke)
    if args.smoke:
        cfg, dtype, new_tokens, n_images, text_len = LVLMConfig.tiny(max_seq_len=512), torch.float32, 16, 2, 24
    else:
        cfg = LVLMConfig(
            vocab_size=32000,
            hidden=2048,
            n_layers=16,
            n_heads=16,
            n_kv_heads=4,
            intermediate=5632,
            max_seq_len=2048,
            image_token_id=31999,
            name="spec-0.9b",
        )
        dtype, new_tokens, n_images, text_len = torch.bfloat16, args.new_tokens, 8, 64
    base_model = MinimalLVLM(cfg, seed=0, dtype=dtype, device=device)
    draft_model = truncated_draft(base_model, args.draft_layers)
    g = torch.Generator().manual_seed(0)
    text = torch.randint(0, cfg.image_token_id, (1, text_len), generator=g).to(device)
    nv = n_images * cfg.n_visual_tokens
    mm = torch.cat([text[:, :4], torch.full((1, nv), cfg.image_token_id), text[:, 4:12]], 1).to(device)
    pix = torch.randn(n_images, 3, cfg.vision.image_size, cfg.vision.image_size, generator=g).to(
        device=device, dtype=dtype
    )
    cap = max(text.shape[1], mm.shape[1]) + new_tokens + 80
    kw = dict(pixel_values=pix)
    results = []
    state = {}
    T = lambda: LVLMSpecLM(state["target"], cap)
    D = lambda: LVLMSpecLM(draft_model, cap)

    def record(name, fn, ar_tokens, ar_ms, lossless=True):
        calls = sdpa_backends_of(fn)  # warm-up (allocations, kernel compilation) + SDPA audit
        with sdpa_math_off(calls):
            (out, stats), ms = wall_ms(fn, device)
        out = out[0] if isinstance(out, tuple) else out
        row = dict(
            name=name,
            ms=ms,
            tokens_per_s=new_tokens / ms * 1e3,
            speedup_vs_ar=ar_ms / ms,
            sdpa_calls=calls,
            equal_to_ar=bool(torch.equal(out.cpu(), ar_tokens.cpu())),
            agreement_with_ar=float((out.cpu() == ar_tokens.cpu()).float().mean()),
            lossless_method=lossless,
        )
        if stats is not None:
            row.update(
                tau=stats.mean_accepted_length,
                acceptance_rate=stats.acceptance_rate,
                histogram=stats.histogram(),
                target_calls=stats.target_calls,
                ms_per_verification_step=ms / max(stats.steps, 1),
            )
        results.append(row)
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()})

    def run_prompt(prompt_name, ids, pkw, multimodal):
        ar_fn = lambda: (autoregressive_generate(T(), ids, new_tokens, prefill_kwargs=pkw), None)
        ar_calls = sdpa_backends_of(ar_fn)
        with sdpa_math_off(ar_calls):
            (ar_tokens, _), ar_ms = wall_ms(ar_fn, device)
        results.append(
            dict(
                name=f"{prompt_name}/AR",
                ms=ar_ms,
                tokens_per_s=new_tokens / ar_ms * 1e3,
                speedup_vs_ar=1.0,
                sdpa_calls=ar_calls,
            )
        )
        print(results[-1])
        common = dict(target_prefill_kwargs=pkw, draft_prefill_kwargs=pkw)
        record(
            f"{prompt_name}/chain_k4",
            lambda: speculative_generate(T(), D(), ids, new_tokens, k=4, **common),
            ar_tokens,
            ar_ms,
        )
        record(
            f"{prompt_name}/chain_adaptive",
            lambda: speculative_generate(T(), D(), ids, new_tokens, k=4, adaptive=True, **common),
            ar_tokens,
            ar_ms,
        )
        record(
            f"{prompt_name}/tree_default",
            lambda: speculative_generate_tree(T(), D(), ids, new_tokens, **common),
            ar_tokens,
            ar_ms,
        )
        if not multimodal:
            return
        for tau_v, beta in ((0.0, 0.3), (0.5, 0.3), (1.0, 0.1)):
            record(
                f"{prompt_name}/lvspec_tau{tau_v}_beta{beta}",
                lambda tau_v=tau_v, beta=beta: lvspec_generate(
                    T(), D(), ids, new_tokens, LVSpecConfig(tau_v=tau_v, beta=beta), **common
                )[:2],
                ar_tokens,
                ar_ms,
                lossless=tau_v == 0.0,
            )
        for drop in (0.5, 0.75, 0.9):
            record(
                f"{prompt_name}/specvlm_drop{drop}",
                lambda drop=drop: specvlm_generate(T(), D(), ids, new_tokens, pixel_values=pix, drop_rate=drop)[:2],
                ar_tokens,
                ar_ms,
            )

    scales = [float(x) for x in args.upper_scales.split(",")]
    for scale in scales:
        state["target"] = scaled_upper_layers(base_model, args.draft_layers, scale)
        run_prompt(f"scale{scale}/text", text, {}, False)
        if scale == args.mm_scale:
            run_prompt(f"scale{scale}/multimodal", mm, kw, True)
    write_result(
        "speculative",
        device,
        args.smoke,
        dict(
            model=cfg.name,
            dtype=str(dtype),
            draft_layers=args.draft_layers,
            upper_scales=scales,
            mm_scale=args.mm_scale,
            target_layers=cfg.n_layers,
            new_tokens=new_tokens,
            batch=1,
            attention="SDPA (minimal LVLM); verification via ops.spec_verify",
            note="random weights: acceptance not representative of trained draft/target pairs",
            results=results,
        ),
        path=args.out,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny model on CPU (checks the script)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<topic>_<device>.json)")
    p.add_argument("--device", default=None)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--draft-layers", type=int, default=2)
    p.add_argument("--upper-scales", default="0,0.25,1", help="comma list, see the module docstring")
    p.add_argument("--mm-scale", type=float, default=0.25, help="upper-layer scale for the multimodal methods")
    run(p.parse_args())


if __name__ == "__main__":
    main()
