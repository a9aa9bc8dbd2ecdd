"""Hybrid SWA + Gated DeltaNet stack (InfiniteVL pattern) vs a full-attention stack of the same width.

    python -m benchmarks.bench_gdn            # GPU
    python -m benchmarks.bench_gdn --smoke    # CPU: tiny shapes, checks the script end to end

1. Kernel: one recurrent GDN decode step, Triton fused kernel vs the naive PyTorch recurrence (B=1, 16 heads,
   K=128, V=256 as InfiniteVL's expand_v=2), ms and achieved state bandwidth (fp32 state read + written).
2. Model: TPOT (median decode-step ms) and carried-state bytes after a context of L tokens, for
   (a) the hybrid stack (1 SWA : 3 GDN, window ``--window``) and (b) the same stack with every layer full
   attention (``swa_every=1``, unbounded window). The context is fed in chunks of ``--chunk`` tokens (GDN chunked
   form, state carried). Expectation: hybrid TPOT and memory flat in L, full attention growing. Nothing asserted.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from benchmarks._common import pick_device, time_ms, write_result
from reference_impls.models.hybrid_gdn import HybridGDNConfig, HybridGDNModel
from reference_impls.ops.gated_delta import gated_delta_rule


@torch.no_grad()
def run(args):
    device = pick_device(args.device, one_thread=args.smoke)
    smoke = args.smoke
    # ---- 1. kernel
    H, K, V = (2, 16, 32) if smoke else (16, 128, 256)
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(1, 1, H, K, generator=g), dim=-1).to(device)
    k = F.normalize(torch.randn(1, 1, H, K, generator=g), dim=-1).to(device)
    v = torch.randn(1, 1, H, V, generator=g).to(device)
    gate, beta = (-torch.rand(1, 1, H, generator=g)).to(device), torch.rand(1, 1, H, generator=g).to(device)
    s0 = torch.randn(1, H, K, V, generator=g).to(device)
    kernel_rows = []
    impls = ["naive"] + (["triton"] if device.type == "cuda" else [])
    for impl in impls:
        ms = time_ms(lambda: gated_delta_rule(q, k, v, gate, beta, initial_state=s0, mode="recurrent", impl=impl),
                     device, reps=20 if not smoke else 3)
        kernel_rows.append(dict(impl=impl, ms=ms, state_gb_per_s=2 * s0.numel() * 4 / (ms * 1e-3) / 1e9))
        print(kernel_rows[-1])
    # ---- 2. model TPOT vs context
    if smoke:
        base = dict(vocab_size=256, d_model=64, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=16, gdn_heads=4,
                    gdn_head_dim=16, mlp_hidden=128)
        contexts, chunk, window, steps = (64, 256), 64, 32, 3
    else:
        base = dict(vocab_size=32000, d_model=2048, n_layers=8, n_heads=16, n_kv_heads=2, head_dim=128,
                    gdn_heads=16, gdn_head_dim=128, mlp_hidden=5632)
        contexts, chunk, window, steps = tuple(int(x) for x in args.contexts.split(",")), args.chunk, args.window, 20
    variants = {"hybrid_swa_gdn": HybridGDNConfig(**base, window=window, swa_every=4),
                "full_attention": HybridGDNConfig(**base, window=10 ** 9, swa_every=1)}
    model_rows = []
    for name, cfg in variants.items():
        model = HybridGDNModel(cfg).to(device)
        for L in contexts:
            ids = torch.randint(0, cfg.vocab_size, (1, L), generator=torch.Generator().manual_seed(L)).to(device)
            state = None
            try:
                for s in range(0, L, chunk):
                    _, state = model(ids[:, s:s + chunk], state, gdn_mode="chunk")
                tok = torch.zeros(1, 1, dtype=torch.long, device=device)
                import copy

                snapshot = copy.deepcopy(state)

                def step():
                    st = copy.copy(snapshot)
                    st.layers = {i: dict(e) for i, e in snapshot.layers.items()}
                    model(tok, st, gdn_mode="recurrent")

                tpot = time_ms(step, device, reps=steps, warmup=2)
                row = dict(model=name, context=L, tpot_ms=tpot, state_bytes=state.nbytes())
            except torch.cuda.OutOfMemoryError:  # pragma: no cover - GPU only
                row = dict(model=name, context=L, tpot_ms=None, state_bytes=None, note="OOM")
                torch.cuda.empty_cache()
            model_rows.append(row)
            print(row)
        del model
    write_result("gdn", device, smoke, dict(
        kernel=dict(shape=dict(B=1, H=H, K=K, V=V), rows=kernel_rows),
        model=dict(config={k: v for k, v in base.items()}, window=window, chunk=chunk, rows=model_rows),
        note="decode step timing copies the state dict shell only (tensors are replaced, not mutated, per step)"), path=args.out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<topic>_<device>.json)")
    p.add_argument("--device", default=None)
    p.add_argument("--contexts", default="1024,4096,16384,32768")
    p.add_argument("--chunk", type=int, default=1024)
    p.add_argument("--window", type=int, default=2048)
    run(p.parse_args())


if __name__ == "__main__":
    main()
