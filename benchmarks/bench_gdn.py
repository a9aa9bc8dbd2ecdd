"""Hybrid SWA + Gated DeltaNet stack (InfiniteVL pattern) vs a full-attention stack of the same width.

    python -m benchmarks.bench_gdn            # GPU
    python -m benchmarks.bench_gdn --smoke    # CPU: tiny shapes, checks the script end to end

1. Kernel: one recurrent GDN decode step, Triton fused kernel vs the naive PyTorch recurrence (B=1, 16 heads,
   K=128, V=256 as InfiniteVL's expand_v=2), ms and achieved state bandwidth (fp32 state read + written).
2. Model: TPOT (median decode-step ms) and carried-state bytes after a context of L tokens, for
   (a) the hybrid stack (1 SWA : 3 GDN, window ``--window``), (b) the same stack with every layer full attention
   (``swa_every=1``, unbounded window: the reference model's eager attention over a ``torch.cat``-grown cache), and
   (c) the honest full-attention baseline: a decoder of the same width with every layer attention, a preallocated
   (static) KV cache of the context length and SDPA with one backend forced and recorded (flash, then cuDNN, then
   memory-efficient), in the same dtype (bf16 on GPU). Its cache is filled with random keys / values for L tokens
   (a decode step's cost depends only on L), the new token written into slot L. The hybrid context is fed in chunks
   of ``--chunk`` tokens (GDN chunked form, state carried). All models run in ``dtype`` (bf16 on GPU, fp32 on CPU).
   Expectation: hybrid TPOT and memory flat in L, full attention growing. Nothing asserted.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks._common import pick_device, sdpa_backends_of, sdpa_with_backend, time_ms, write_result
from reference_impls.models.hybrid_gdn import HybridGDNConfig, HybridGDNModel
from reference_impls.ops.gated_delta import gated_delta_rule


class StaticCacheAttentionStack(nn.Module):
    """Decoder of the hybrid's width with every layer GQA attention (RoPE, SwiGLU MLP, RMSNorm), a preallocated KV
    cache ``[layers, B, Hkv, capacity, D]`` and SDPA decode over its first ``length + 1`` slots."""

    def __init__(
        self,
        *,
        vocab_size,
        d_model,
        n_layers,
        n_heads,
        n_kv_heads,
        head_dim,
        mlp_hidden,
        capacity,
        rope_theta=10000.0,
        device=None,
        dtype=None,
        **_,
    ):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.embed = nn.Embedding(vocab_size, d_model, **kw)
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                dict(
                    norm1=nn.RMSNorm(d_model, eps=1e-6, **kw),
                    norm2=nn.RMSNorm(d_model, eps=1e-6, **kw),
                    q=nn.Linear(d_model, n_heads * head_dim, bias=False, **kw),
                    k=nn.Linear(d_model, n_kv_heads * head_dim, bias=False, **kw),
                    v=nn.Linear(d_model, n_kv_heads * head_dim, bias=False, **kw),
                    o=nn.Linear(n_heads * head_dim, d_model, bias=False, **kw),
                    gate=nn.Linear(d_model, mlp_hidden, bias=False, **kw),
                    up=nn.Linear(d_model, mlp_hidden, bias=False, **kw),
                    down=nn.Linear(mlp_hidden, d_model, bias=False, **kw),
                )
            )
            for _ in range(n_layers)
        )
        self.norm = nn.RMSNorm(d_model, eps=1e-6, **kw)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False, **kw)
        shape = (n_layers, 1, n_kv_heads, capacity, head_dim)
        self.k_cache = torch.randn(shape, **kw)
        self.v_cache = torch.randn(shape, **kw)
        self.inv_freq = 1.0 / rope_theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim)

    def rope(self, x, position: int):
        ang = position * self.inv_freq
        cos, sin = torch.cat([ang.cos(), ang.cos()]).to(x.dtype), torch.cat([ang.sin(), ang.sin()]).to(x.dtype)
        half = x.shape[-1] // 2
        return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin

    def decode_step(self, token, length: int):
        """One token at position ``length``: its K/V written to slot ``length``, attention over slots 0..length."""
        x = self.embed(token)  # [1, 1, C]
        for i, layer in enumerate(self.layers):
            h = layer["norm1"](x)
            q = self.rope(layer["q"](h).view(1, 1, self.n_heads, self.head_dim).transpose(1, 2), length)
            k = self.rope(layer["k"](h).view(1, 1, self.n_kv_heads, self.head_dim).transpose(1, 2), length)
            self.k_cache[i, :, :, length] = k[:, :, 0]
            self.v_cache[i, :, :, length] = layer["v"](h).view(1, self.n_kv_heads, self.head_dim)
            o = F.scaled_dot_product_attention(
                q, self.k_cache[i, :, :, : length + 1], self.v_cache[i, :, :, : length + 1], enable_gqa=True
            )
            x = x + layer["o"](o.transpose(1, 2).reshape(1, 1, -1))
            h = layer["norm2"](x)
            x = x + layer["down"](F.silu(layer["gate"](h)) * layer["up"](h))
        return self.lm_head(self.norm(x))


def static_cache_baseline(base: dict, L: int, device, dtype, steps: int) -> dict:
    """TPOT of :class:`StaticCacheAttentionStack` at context ``L`` with the SDPA backend forced and recorded."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = StaticCacheAttentionStack(**base, capacity=L + 1, device=device, dtype=dtype)
    q = torch.randn(1, base["n_heads"], 1, base["head_dim"], device=device, dtype=dtype)
    _, backend = sdpa_with_backend(q, model.k_cache[0, :, :, : L + 1], model.v_cache[0, :, :, : L + 1], enable_gqa=True)
    tok = torch.zeros(1, 1, dtype=torch.long, device=device)

    def step():
        with sdpa_kernel(getattr(SDPBackend, backend)):
            model.decode_step(tok, L)

    calls = sdpa_backends_of(step)
    tpot = time_ms(step, device, reps=steps, warmup=2)
    state = model.k_cache.numel() * model.k_cache.element_size() * 2
    del model
    return dict(
        model="full_attention_sdpa_static_cache",
        context=L,
        tpot_ms=tpot,
        state_bytes=state,
        sdpa_backend=backend,
        sdpa_calls=calls,
    )


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
        ms = time_ms(
            lambda: gated_delta_rule(q, k, v, gate, beta, initial_state=s0, mode="recurrent", impl=impl),
            device,
            reps=20 if not smoke else 3,
        )
        kernel_rows.append(dict(impl=impl, ms=ms, state_gb_per_s=2 * s0.numel() * 4 / (ms * 1e-3) / 1e9))
        print(kernel_rows[-1])
    # ---- 2. model TPOT vs context
    if smoke:
        base = dict(
            vocab_size=256,
            d_model=64,
            n_layers=4,
            n_heads=4,
            n_kv_heads=2,
            head_dim=16,
            gdn_heads=4,
            gdn_head_dim=16,
            mlp_hidden=128,
        )
        contexts, chunk, window, steps = (64, 256), 64, 32, 3
    else:
        base = dict(
            vocab_size=32000,
            d_model=2048,
            n_layers=8,
            n_heads=16,
            n_kv_heads=2,
            head_dim=128,
            gdn_heads=16,
            gdn_head_dim=128,
            mlp_hidden=5632,
        )
        contexts, chunk, window, steps = tuple(int(x) for x in args.contexts.split(",")), args.chunk, args.window, 20
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    variants = {
        "hybrid_swa_gdn": HybridGDNConfig(**base, window=window, swa_every=4),
        "full_attention_eager_cat_cache": HybridGDNConfig(**base, window=10**9, swa_every=1),
    }
    model_rows = []
    for L in contexts:
        try:
            row = static_cache_baseline(base, L, device, dtype, steps)
        except torch.cuda.OutOfMemoryError:  # pragma: no cover - GPU only
            row = dict(model="full_attention_sdpa_static_cache", context=L, tpot_ms=None, state_bytes=None, note="OOM")
            torch.cuda.empty_cache()
        model_rows.append(row)
        print(row)
    for name, cfg in variants.items():
        model = HybridGDNModel(cfg).to(device=device, dtype=dtype)
        for L in contexts:
            ids = torch.randint(0, cfg.vocab_size, (1, L), generator=torch.Generator().manual_seed(L)).to(device)
            state = None
            try:
                for s in range(0, L, chunk):
                    _, state = model(ids[:, s : s + chunk], state, gdn_mode="chunk")
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
    write_result(
        "gdn",
        device,
        smoke,
        dict(
            kernel=dict(shape=dict(B=1, H=H, K=K, V=V), rows=kernel_rows),
            model=dict(
                config={k: v for k, v in base.items()}, dtype=str(dtype), window=window, chunk=chunk, rows=model_rows
            ),
            note="decode step timing copies the state dict shell only (tensors are replaced, not mutated, per step)",
        ),
        path=args.out,
    )


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
