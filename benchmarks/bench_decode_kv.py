"""Decode-time KV-cache compression: attention time per decode token and KV bytes vs budget, against the full cache
with SDPA, plus achieved decode-attention bandwidth as a fraction of a measured device-to-device copy.

    python -m benchmarks.bench_decode_kv            # GPU: 8k-64k contexts -> results/decode_kv_<device>.json
    python -m benchmarks.bench_decode_kv --smoke    # CPU (Triton interpreter) or GPU: tiny shapes, end-to-end check

Shapes (default): one decode query per row, batch 1 and 8, Llama-2-7B-like attention (32 query heads, 8 KV heads
(GQA 4), head dim 128, bf16), 32 layers for the per-token totals. Rows:
  copy           torch ``copy_`` of a 1 GiB buffer: bandwidth = 2 x bytes / time (read + write), the roofline proxy.
  sdpa_full      ``F.scaled_dot_product_attention(enable_gqa=True)`` over the full cache (the baseline).
  full           our split-K kernel over the full cache (``ops.decode_attention``, the public call).
  full_cuda_graph the same call captured in a CUDA graph and replayed (the kernels without the launch overhead).
  compressed     our kernel over a compressed cache with per-KV-head ragged lengths around ``budget x L`` (what
                 H2O / SnapKV / PyramidKV / HybridKV-static leave), padded per layer (``compressed``) and packed
                 per head (``compressed_packed``, only kept rows stored), and SDPA over the padded cache + mask
                 (``sdpa_compressed``; ``sdpa_compressed_expanded_kv`` with K/V repeated per query head, which
                 backends without GQA support accept).
  int8 / fp8     full cache quantised per (token, head); dequantisation inside the kernel.
  ring_rolled    StreamingLLM ring of ``budget x L`` slots with RoPE-on-read.
  retrieval      HybridKV dynamic heads: Quest chunk scoring (chunk 64) + top-chunk selection + block-sparse
                 attention over the full cache (the cache keeps every row; only the selected chunks are read).
Kernel rows time the public calls (on CUDA they read no value back to the host: see
``reference_impls.ops._triton.check_values``). Per row: ``ms`` per layer (median of ``triton.testing.do_bench`` on
GPU, perf_counter on CPU), ``ms_per_token`` = ms x n_layers, ``kv_bytes`` for n_layers, ``gb_s`` = K/V bytes read /
time and ``frac_copy`` = gb_s / copy bandwidth (target >= 0.7 for the full-cache kernel, listed in ``targets``),
``speedup_vs_sdpa_full``. Nothing is asserted; ratios are against baselines measured in the same process.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks._common import (
    bandwidth_ceilings,
    cuda_graph_replay,
    do_bench_ms,
    sdpa_with_backend,
    target,
    write_result,
)
from reference_impls.ops.decode_attention import (
    chunk_scores,
    chunk_summaries,
    decode_attention,
    packed_decode_attention,
    ring_decode_attention,
    select_chunks,
    sparse_decode_attention,
)
from reference_impls.ops.quant.kv_quant import quantize_kv


def timed_ms(fn, device) -> float:
    """Median ms: ``triton.testing.do_bench`` on CUDA, a perf_counter median of 3 calls on CPU (smoke only)."""
    return do_bench_ms(fn, device, reps=3)


def ragged_lengths(B, H, target, L, g):
    lo, hi = max(1, int(target * 0.9)), min(L, max(int(target * 1.1), int(target * 0.9) + 1))
    return torch.randint(lo, hi + 1, (B, H), generator=g).clamp(max=L)


def unpack_to_packed(x, lens, row0):
    """Padded ``[B, H, C, D]`` -> flat ``[sum(lens), D]`` with head (b, h) at rows ``row0[b, h]..``."""
    C = x.shape[2]
    live = torch.arange(C, device=x.device)[None, None, :] < lens[..., None]
    return x[live].contiguous()


def bench_context(device, dtype, B, Hq, Hkv, D, L, budgets, n_layers, copy_gb_s, impl, chunk):
    g = torch.Generator().manual_seed(L)
    q = torch.randn(B, Hq, D, generator=g).to(device, dtype)
    k = torch.randn(B, Hkv, L, D, generator=g).to(device, dtype)
    v = torch.randn(B, Hkv, L, D, generator=g).to(device, dtype)
    full_len = torch.full((B, Hkv), L, device=device)
    el = k.element_size()
    rows = []

    def row(kind, ms, kv_rows_read, kv_bytes_layer, **extra):
        gb_s = kv_rows_read / ms / 1e6
        r = {
            "L": L,
            "batch": B,
            "kind": kind,
            "ms": ms,
            "ms_per_token": ms * n_layers,
            "kv_bytes": kv_bytes_layer * n_layers,
            "gb_s": gb_s,
            "frac_copy": gb_s / copy_gb_s,
            **extra,
        }
        rows.append(r)
        return r

    full_bytes = 2 * B * Hkv * L * D * el
    sdpa, backend = sdpa_with_backend(q[:, :, None], k, v, enable_gqa=True)
    base = row("sdpa_full", timed_ms(sdpa, device), full_bytes, full_bytes, sdpa_backend=backend)

    def full():
        return decode_attention(q, k, v, full_len, impl=impl)

    row("full", timed_ms(full, device), full_bytes, full_bytes)
    # sanity: the kernel agrees with the naive spec / SDPA (relative error recorded with the row)
    o_ref = sdpa()[:, :, 0]
    err = (full()[0].float() - o_ref.float()).norm() / o_ref.float().norm()
    rows[-1]["rel_err_vs_sdpa"] = float(err)
    replay = cuda_graph_replay(full)
    if replay is not None:
        row("full_cuda_graph", timed_ms(replay, device), full_bytes, full_bytes)

    for fmt in ("int8", "fp8_e4m3"):
        if fmt == "fp8_e4m3" and device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
            continue
        kq, ks = quantize_kv(k, fmt, impl=impl)
        vq, vs = quantize_kv(v, fmt, impl=impl)
        qbytes = 2 * (kq.numel() + ks.numel() * 4)
        ms = timed_ms(lambda: decode_attention(q, kq, vq, full_len, k_scale=ks, v_scale=vs, impl=impl), device)
        row(fmt, ms, qbytes, qbytes)

    for frac in budgets:
        C = max(1, int(L * frac))
        lens = ragged_lengths(B, Hkv, C, L, g).to(device)
        cmax = int(lens.max())
        kc, vc = k[:, :, :cmax].contiguous(), v[:, :, :cmax].contiguous()
        read = int(lens.sum()) * D * el * 2
        alloc = 2 * B * Hkv * cmax * D * el
        ms = timed_ms(lambda: decode_attention(q, kc, vc, lens, impl=impl), device)
        row("compressed", ms, read, alloc, budget=frac)
        # the same kept rows in the packed per-head layout (no padding: bytes = kept rows only)
        row0 = (torch.cumsum(lens.reshape(-1), 0) - lens.reshape(-1)).view_as(lens)
        kp, vp = unpack_to_packed(kc, lens, row0), unpack_to_packed(vc, lens, row0)
        ms = timed_ms(lambda: packed_decode_attention(q, kp, vp, row0, lens, impl=impl), device)
        row("compressed_packed", ms, read, read, budget=frac)
        mask = (torch.arange(cmax, device=device)[None, None, :] < lens[..., None])[:, :, None, :]
        mask = mask.repeat_interleave(Hq // Hkv, dim=1)
        sd, backend = sdpa_with_backend(q[:, :, None], kc, vc, attn_mask=mask, enable_gqa=True)
        row("sdpa_compressed", timed_ms(sd, device), read, alloc, budget=frac, sdpa_backend=backend)
        # masked SDPA with GQA may only be accepted by the math backend: the same with K/V repeated per query head
        G = Hq // Hkv
        sd, backend = sdpa_with_backend(
            q[:, :, None], kc.repeat_interleave(G, 1), vc.repeat_interleave(G, 1), attn_mask=mask
        )
        row("sdpa_compressed_expanded_kv", timed_ms(sd, device), G * read, G * alloc, budget=frac, sdpa_backend=backend)

        ring_len = torch.full((B, Hkv), C, device=device)
        pos = torch.arange(C, device=device).expand(B, Hkv, C).contiguous()
        inv = 1.0 / (10000 ** (torch.arange(0, D, 2, device=device).float() / D))
        kr, vr = k[:, :, :C].contiguous(), v[:, :, :C].contiguous()
        ms = timed_ms(lambda: ring_decode_attention(q, kr, vr, ring_len, pos, inv, impl=impl), device)
        row("ring_rolled", ms, 2 * B * Hkv * C * D * el, 2 * B * Hkv * C * D * el, budget=frac)

        kmin, kmax, nch = chunk_summaries(k, full_len, chunk)
        n_sel = max(2, -(-C // chunk))

        def retrieval():
            s = chunk_scores(q, kmin, kmax, nch, impl=impl)
            sel = select_chunks(s, n_sel, n_chunks=nch, n_first=1, n_last=1)
            return sparse_decode_attention(q, k, v, full_len, sel, chunk, impl=impl)

        summ_bytes = 2 * kmin.numel() * 4
        row(
            "retrieval",
            timed_ms(retrieval, device),
            2 * B * Hkv * n_sel * chunk * D * el + summ_bytes,
            full_bytes + summ_bytes,
            budget=frac,
        )

    for r in rows:
        r["speedup_vs_sdpa_full"] = base["ms"] / r["ms"]
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny shapes (CPU: Triton interpreter)")
    p.add_argument("--contexts", default="8192,16384,32768,65536")
    p.add_argument("--budgets", default="0.05,0.1,0.25,0.5")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.smoke:
        p.error("full-size runs need a GPU; use --smoke on CPU")
    if args.smoke:
        contexts, budgets, batches = [67, 130], [0.1, 0.5], [2]
        Hq, Hkv, D, n_layers, dtype, chunk, copy_bytes = 4, 2, 32, 32, torch.float32, 16, 1 << 22
    else:
        contexts = [int(x) for x in args.contexts.split(",")]
        budgets = [float(x) for x in args.budgets.split(",")]
        batches = [int(x) for x in args.batches.split(",")]
        Hq, Hkv, D, n_layers, dtype, chunk, copy_bytes = 32, 8, 128, 32, torch.bfloat16, 64, 1 << 30
    impl = "triton"
    copy = bandwidth_ceilings(device, copy_bytes)
    rows = []
    for B in batches:
        for L in contexts:
            new = bench_context(device, dtype, B, Hq, Hkv, D, L, budgets, n_layers, copy["copy_gb_s"], impl, chunk)
            rows += new
            for r in new:
                print(
                    f"B={r['batch']:2d} L={r['L']:6d} {r['kind']:16s} budget={r.get('budget', 1.0):<5} "
                    f"{r['ms']:9.4f} ms/layer  {r['ms_per_token']:9.3f} ms/token  KV {r['kv_bytes'] / 2**20:9.1f} MiB"
                    f"  {r['gb_s']:8.1f} GB/s ({r['frac_copy']:.2f} of copy)  x{r['speedup_vs_sdpa_full']:.2f}"
                )
    out = {
        "shape": {"Hq": Hq, "Hkv": Hkv, "D": D, "n_layers": n_layers, "dtype": str(dtype), "chunk": chunk},
        "bandwidth": copy,
        "rows": rows,
        "targets": [
            target(
                f"decode attention over the full cache, B={r['batch']} L={r['L']}"
                f"{' (CUDA graph replay)' if r['kind'] == 'full_cuda_graph' else ''}: fraction of copy "
                "bandwidth",
                r["frac_copy"],
                0.7,
                smoke=args.smoke,
            )
            for r in rows
            if r["kind"] in ("full", "full_cuda_graph")
        ],
        "note": "CPU smoke numbers come from the Triton interpreter and say nothing about speed."
        if args.smoke
        else (
            "ms per layer and per token (x n_layers); ratios vs SDPA over the full cache measured in the same process."
        ),
    }
    write_result("decode_kv", device, args.smoke, out, path=args.out)


if __name__ == "__main__":
    main()
