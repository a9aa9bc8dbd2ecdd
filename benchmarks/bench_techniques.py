"""One row per reference technique without a benchmark of its own, each beside its baseline measured in the same run.

    python -m benchmarks.bench_techniques            # GPU
    python -m benchmarks.bench_techniques --smoke    # CPU: tiny shapes, checks the script end to end

Sections (``--only a,b`` runs a subset):
  kv          KIVI (2/4-bit), CaM, MiniCache vs the full cache (and CaM vs plain StreamingLLM eviction) on the
              minimal LVLM: decode ms per token, KV bytes, greedy-token agreement with the full cache. KIVI and
              MiniCache attend over a dequantised / restored copy (no fused kernel): their times are not the papers'.
  kv_policies Knorm, TOVA, AdaKV, ChunkKV, ThinK, DuoAttention, Expected Attention, Q-Filters (and SnapKV) on the
              compressed cache vs the full cache, minimal LVLM, half the prompt kept: prefill ms (scoring cost
              included), decode ms per token, KV bytes, greedy-token agreement with the full cache.
  palu        latent-cache decode attention (values attended in latent space) vs SDPA over full keys; cache bytes.
  paged       paged decode kernel vs gather + SDPA vs contiguous split-K decode attention, same lengths.
  serving     continuous batching with chunked prefill vs one request at a time: wall time, mean TTFT / TPOT.
  lookahead   lookahead decoding vs greedy autoregressive decoding: tokens per step, wall time (random weights:
              the accepted n-grams come from the text's repetitions).
  sparsegpt   layer output error of SparseGPT (50%, 2:4) vs magnitude pruning; pruning time.
  llmlingua   prompt compression: kept fraction, compression time (KV-reusing vs uncached), target prefill saved.
  shared      Shared Attention vs the unmodified decoder: decode ms per token and KV bytes.
  encoders    FastViTHD (multi-branch vs reparameterised) and a CLIP-L/14-336-shaped ViT: ms per image and tokens;
              pixel-shuffle projector vs LLaVA's MLP projector: tokens and ms.
  frames      FOCUS: frames scored and selection ms vs scoring every frame; LongVU tokens under a budget.
  offload     the KV cache offloaded to host memory (no prefetch, next-layer prefetch) vs the resident static cache:
              decode ms per token, peak bytes resident on the device, bytes copied, token agreement.
  early_exit  confidence-based early exit vs ``model.generate``: generate ms, mean exit layer, token agreement (the
              reference still runs the skipped layers, so its time shows the exit test's overhead, not a saving).
  feature_cache  frames encoded and ms for a video with repeated frames, every frame vs the feature cache.
Rows not added: CAR (needs a model trained for short and long answers), RoPE (no baseline: every decoder uses it),
dynamic tiling (a resize; its effect is the token count, reported under ``encoders`` via the tile count).
Random weights throughout: quality columns measure agreement with the unmodified computation, not accuracy.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from benchmarks._common import pick_device, sync, time_ms, wall_ms, write_result
from reference_impls.models.config import LVLMConfig, VisionConfig
from reference_impls.models.minimal_lvlm import MinimalLVLM

SECTIONS = (
    "kv",
    "kv_policies",
    "palu",
    "paged",
    "serving",
    "lookahead",
    "sparsegpt",
    "llmlingua",
    "shared",
    "encoders",
    "frames",
    "offload",
    "early_exit",
    "feature_cache",
)


def _decoder_cfg(smoke: bool, **kw) -> LVLMConfig:
    if smoke:
        return LVLMConfig.tiny(init_std=0.1, max_seq_len=512, **kw)
    return LVLMConfig(
        vocab_size=32000,
        hidden=2048,
        n_layers=8,
        n_heads=16,
        n_kv_heads=8,
        intermediate=5632,
        max_seq_len=8192,
        image_token_id=31999,
        init_std=0.02,
        name="8L-2048",
        **kw,
    )


def _ids(n, vocab, seed=0, device="cpu"):
    return torch.randint(0, vocab - 1, (1, n), generator=torch.Generator().manual_seed(seed)).to(device)


@torch.no_grad()
def _greedy(model, ids, cache, n_new):
    logits = model.prefill(ids, cache=cache).logits
    toks = [logits.argmax(-1)]
    sync(model.device)
    t0 = time.perf_counter()
    for _ in range(n_new - 1):
        toks.append(model.decode_step(toks[-1], cache).argmax(-1))
    sync(model.device)
    return torch.stack(toks, 1), (time.perf_counter() - t0) * 1e3 / max(n_new - 1, 1)


def bench_kv(device, smoke, dtype):
    from reference_impls.decode.kv.cam import CaMCache
    from reference_impls.decode.kv.kivi import KIVICache
    from reference_impls.decode.kv.minicache import MiniCacheKV

    cfg = _decoder_cfg(smoke)
    model = MinimalLVLM(cfg, seed=0, dtype=dtype, device=device)
    prompt, n_new = (48, 6) if smoke else (2048, 32)
    ids = _ids(prompt, cfg.vocab_size, device=device)
    cap = prompt + n_new
    group = 4 if smoke else 32
    window = prompt // 4
    caches = {
        "full": lambda: model.new_cache(1, cap),
        "kivi_2bit": lambda: KIVICache.for_model(
            cfg, 1, cap, bits=2, group_size=group, residual_length=group, dtype=dtype, device=device
        ),
        "kivi_4bit": lambda: KIVICache.for_model(
            cfg, 1, cap, bits=4, group_size=group, residual_length=group, dtype=dtype, device=device
        ),
        "streamingllm": lambda: CaMCache.for_model(
            cfg, 1, cap, n_sink=4, window=window, merge=False, dtype=dtype, device=device
        ),
        "cam": lambda: CaMCache.for_model(
            cfg,
            1,
            cap,
            n_sink=4,
            window=window,
            merge_size=16 if not smoke else 4,
            dtype=dtype,
            device=device,
            generator=torch.Generator(device).manual_seed(0),
        ),
        "minicache": lambda: MiniCacheKV.for_model(cfg, 1, cap, dtype=dtype, device=device),
    }
    rows, ref = [], None
    for name, make in caches.items():
        cache = make()
        toks, ms = _greedy(model, ids, cache, n_new)
        ref = toks if ref is None else ref
        kv_bytes = (
            cache.kv_bytes()
            if hasattr(cache, "kv_bytes")
            else 2 * cap * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * model.dtype.itemsize
        )
        rows.append(
            dict(
                cache=name,
                prompt=prompt,
                decode_ms_per_token=ms,
                kv_bytes=kv_bytes,
                token_agreement_with_full=float((toks == ref).float().mean()),
            )
        )
    return dict(model=cfg.name, rows=rows)


def bench_kv_policies(device, smoke, dtype):
    from reference_impls.decode.kv import (
        TOVA,
        AdaKV,
        ChunkKV,
        DuoAttention,
        ExpectedAttention,
        Knorm,
        QFilters,
        SnapKV,
        ThinK,
    )

    cfg = _decoder_cfg(smoke)
    model = MinimalLVLM(cfg, seed=0, dtype=dtype, device=device)
    prompt, n_new = (48, 6) if smoke else (4096, 32)
    window = 4 if smoke else 32
    ids = _ids(prompt, cfg.vocab_size, device=device)
    spec = model.cache_spec()
    half = prompt // 2
    policies = {
        "full": None,
        "snapkv": SnapKV(budget=half, window=window),
        "knorm": Knorm(compression_ratio=0.5),
        "tova": TOVA(budget=half),
        "adakv_snapkv": AdaKV(scorer=SnapKV(window=window), compression_ratio=0.5),
        "chunkkv_snapkv": ChunkKV(scorer=SnapKV(window=window), compression_ratio=0.5),
        "think_half_channels": ThinK(key_channel_ratio=0.5, window=window),
        "duo_all_streaming": DuoAttention(head_compression_ratio=1.0, sink=window, recent=half - window),
        "expected_attention": ExpectedAttention(compression_ratio=0.5),
        "qfilters_self_calibrated": QFilters(compression_ratio=0.5),
    }
    rows, ref = [], None
    for name, policy in policies.items():
        cache = model.new_cache(1, prompt + n_new) if policy is None else policy.make_cache(spec, 1)
        sync(model.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            logits = model.prefill(ids, cache=cache).logits
        sync(model.device)
        prefill_ms = (time.perf_counter() - t0) * 1e3
        toks = [logits.argmax(-1)]
        t0 = time.perf_counter()
        with torch.no_grad():
            for _ in range(n_new - 1):
                toks.append(model.decode_step(toks[-1], cache).argmax(-1))
        sync(model.device)
        ms = (time.perf_counter() - t0) * 1e3 / max(n_new - 1, 1)
        toks = torch.stack(toks, 1)
        ref = toks if ref is None else ref
        kv_bytes = (
            cache.kv_bytes()
            if hasattr(cache, "kv_bytes")
            else 2 * (prompt + n_new) * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * model.dtype.itemsize
        )
        rows.append(
            dict(
                policy=name,
                prompt=prompt,
                prefill_ms=prefill_ms,
                decode_ms_per_token=ms,
                kv_bytes=kv_bytes,
                token_agreement_with_full=float((toks == ref).float().mean()),
            )
        )
    return dict(model=cfg.name, rows=rows)


def bench_palu(device, smoke, dtype):
    from reference_impls.decode.kv.palu import group_low_rank, palu_attention

    B, L, Hq, Hkv, D, C = (2, 64, 4, 2, 16, 64) if smoke else (8, 4096, 32, 8, 128, 4096)
    g = torch.Generator().manual_seed(0)
    pk = group_low_rank((torch.randn(Hkv * D, C, generator=g) * C**-0.5).to(device), D, 2 if smoke else 4, 0.5)
    pv = group_low_rank((torch.randn(Hkv * D, C, generator=g) * C**-0.5).to(device), D, 2 if smoke else 4, 0.5)
    x = torch.randn(B, L, C, generator=g).to(device)
    hk, hv = pk.latent(x), pv.latent(x)
    q = torch.randn(B, Hq, D, generator=g).to(device)
    pos = torch.arange(L, device=device).expand(B, L)
    lengths = torch.full((B,), L, device=device)
    k = pk.reconstruct(hk).view(B, L, Hkv, D).transpose(1, 2).to(dtype)
    v = pv.reconstruct(hv).view(B, L, Hkv, D).transpose(1, 2).to(dtype)
    qd = q.to(dtype)[:, :, None]
    full_ms = time_ms(lambda: F.scaled_dot_product_attention(qd, k, v, enable_gqa=True), device, reps=10)
    palu_ms = time_ms(lambda: palu_attention(q, hk, hv, pk, pv, pos, 10000.0, lengths), device, reps=10)
    return dict(
        shape=dict(B=B, L=L, Hq=Hq, Hkv=Hkv, D=D),
        rows=[
            dict(path="sdpa_full_keys", ms=full_ms, cache_bytes=2 * B * L * Hkv * D * dtype.itemsize),
            dict(
                path="palu_latent",
                ms=palu_ms,
                cache_bytes=(hk.shape[-1] + hv.shape[-1]) * B * L * dtype.itemsize,
                note="fp32 torch path (no fused kernel); keys are RoPE'd after reconstruction",
            ),
        ],
    )


def bench_paged(device, smoke, dtype):
    from reference_impls.ops.decode_attention import decode_attention
    from reference_impls.ops.paged_attention import gather_blocks, paged_decode_attention

    B, ctx, Hq, Hkv, D, bs = (4, 48, 4, 2, 16, 16) if smoke else (32, 2048, 32, 8, 128, 16)
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(ctx // 2, ctx + 1, (B,), generator=g)
    nb = -(-lengths // bs)
    tables = torch.zeros(B, int(nb.max()), dtype=torch.int32)
    perm = torch.randperm(int(nb.sum()), generator=g)
    used = 0
    for b in range(B):
        tables[b, : nb[b]] = perm[used : used + nb[b]].to(torch.int32)
        used += int(nb[b])
    k_pool = torch.randn(int(nb.sum()), Hkv, bs, D, generator=g).to(device, dtype)
    v_pool = torch.randn_like(k_pool)
    q = torch.randn(B, Hq, D, generator=g).to(device, dtype)
    tables, lengths = tables.to(device), lengths.to(device)
    width = int(lengths.max())
    k_contig = torch.stack(
        [F.pad(gather_blocks(k_pool, tables[b], int(lengths[b])), (0, 0, 0, width - int(lengths[b]))) for b in range(B)]
    )
    v_contig = torch.stack(
        [F.pad(gather_blocks(v_pool, tables[b], int(lengths[b])), (0, 0, 0, width - int(lengths[b]))) for b in range(B)]
    )
    impl = "naive" if smoke else "triton"

    def gather_then_sdpa():
        k = torch.stack(
            [
                F.pad(gather_blocks(k_pool, tables[b], int(lengths[b])), (0, 0, 0, width - int(lengths[b])))
                for b in range(B)
            ]
        )
        v = torch.stack(
            [
                F.pad(gather_blocks(v_pool, tables[b], int(lengths[b])), (0, 0, 0, width - int(lengths[b])))
                for b in range(B)
            ]
        )
        mask = (torch.arange(width, device=device)[None] < lengths[:, None])[:, None, None]
        return F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=mask, enable_gqa=True)

    rows = [
        dict(
            path="paged_kernel",
            ms=time_ms(lambda: paged_decode_attention(q, k_pool, v_pool, tables, lengths, impl=impl), device, reps=10),
        ),
        dict(path="gather_then_sdpa", ms=time_ms(gather_then_sdpa, device, reps=10)),
        dict(
            path="contiguous_split_k",
            ms=time_ms(lambda: decode_attention(q, k_contig, v_contig, lengths, impl=impl), device, reps=10),
        ),
    ]
    kv_bytes = 2 * int(lengths.sum()) * Hkv * D * dtype.itemsize
    for r in rows:
        r["kv_gb_s"] = kv_bytes / (r["ms"] * 1e-3) / 1e9
    return dict(shape=dict(B=B, max_ctx=ctx, Hq=Hq, Hkv=Hkv, D=D, block_size=bs), rows=rows)


def bench_serving(device, smoke, dtype):
    from reference_impls.decode.kv.paged import PagedKVCache
    from reference_impls.serving.continuous_batching import ContinuousBatchingEngine, Request

    cfg = (
        _decoder_cfg(smoke)
        if smoke
        else LVLMConfig(
            vocab_size=32000,
            hidden=1024,
            n_layers=8,
            n_heads=16,
            n_kv_heads=8,
            intermediate=2816,
            max_seq_len=4096,
            image_token_id=31999,
            name="8L-1024",
        )
    )
    model = MinimalLVLM(cfg, seed=0, dtype=dtype, device=device)
    n_req, n_new = (4, 4) if smoke else (16, 32)
    g = torch.Generator().manual_seed(0)
    lens = torch.randint(16 if smoke else 128, 40 if smoke else 512, (n_req,), generator=g).tolist()
    prompts = [torch.randint(0, cfg.vocab_size - 1, (n,), generator=g).tolist() for n in lens]
    # one at a time: TTFT includes waiting for the earlier requests
    t0 = time.perf_counter()
    first, finish = [], []
    for p in prompts:
        cache = model.new_cache(1, len(p) + n_new)
        with torch.no_grad():
            tok = model.prefill(torch.tensor([p], device=device), cache=cache).logits.argmax(-1)
            sync(device)
            first.append(time.perf_counter() - t0)
            for _ in range(n_new - 1):
                tok = model.decode_step(tok, cache).argmax(-1)
        sync(device)
        finish.append(time.perf_counter() - t0)
    seq_total = finish[-1]
    seq_ttft = sum(first) / n_req
    seq_tpot = sum((f - s) / (n_new - 1) for f, s in zip(finish, first)) / n_req
    paged = PagedKVCache.for_model(
        cfg, num_blocks=(sum(lens) + n_req * n_new) // 16 + n_req + 4, block_size=16, dtype=dtype, device=device
    )
    engine = ContinuousBatchingEngine(model, paged, token_budget=64 if smoke else 512, max_batch=n_req)
    out, ms = wall_ms(lambda: engine.run([Request(f"r{i}", p, n_new) for i, p in enumerate(prompts)]), device)
    return dict(
        model=cfg.name,
        requests=n_req,
        new_tokens=n_new,
        rows=[
            dict(mode="one_at_a_time", total_s=seq_total, mean_ttft_s=seq_ttft, mean_tpot_s=seq_tpot),
            dict(
                mode="continuous_batching",
                total_s=ms / 1e3,
                mean_ttft_s=sum(o.ttft for o in out.values()) / n_req,
                mean_tpot_s=sum(o.tpot for o in out.values()) / n_req,
                iterations=len(engine.history),
                note="the engine attends over gathered copies of the paged blocks",
            ),
        ],
    )


def bench_lookahead(device, smoke, dtype):
    from reference_impls.decode.lookahead import lookahead_generate
    from reference_impls.decode.speculative.lvlm_adapter import LVLMSpecLM

    cfg = _decoder_cfg(smoke).with_(init_std=0.1)
    model = MinimalLVLM(cfg, seed=0, dtype=dtype, device=device)
    ids = _ids(12 if smoke else 64, cfg.vocab_size, device=device)
    n_new = 24 if smoke else 128
    ref, ar_ms = wall_ms(lambda: model.generate(ids, max_new_tokens=n_new)[0], device)
    rows = [dict(method="greedy_autoregressive", ms=ar_ms, tokens_per_step=1.0)]
    for w, n, gs in ((5, 4, 5), (7, 5, 7)):
        (out, stats), ms = wall_ms(
            lambda: lookahead_generate(
                LVLMSpecLM(model, ids.shape[1] + n_new + 64),
                ids,
                n_new,
                window=w,
                ngram=n,
                max_candidates=gs,
                generator=torch.Generator().manual_seed(0),
            ),
            device,
        )
        rows.append(
            dict(
                method=f"lookahead W={w} N={n} G={gs}",
                ms=ms,
                tokens_per_step=stats.tokens_per_step,
                identical_to_greedy=bool(torch.equal(out.to(ref.device), ref)),
            )
        )
    return dict(model=cfg.name, new_tokens=n_new, rows=rows)


def bench_sparsegpt(device, smoke, dtype):
    from reference_impls.decode.sparsegpt import hessian, sparsegpt

    n, cols, rows_ = (256, 64, 48) if smoke else (2048, 4096, 4096)
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(cols, cols, generator=g) / cols**0.5 + torch.eye(cols)
    x = (torch.randn(n, cols, generator=g) @ mix).to(device)
    w = (torch.randn(rows_, cols, generator=g) * cols**-0.5).to(device)
    H = hessian(x)
    out = []

    def err(pruned):
        return float((x.double() @ (w.double() - pruned.double()).T).norm() / (x.double() @ w.double().T).norm())

    for label, kw in (("50%", dict(sparsity=0.5)), ("2:4", dict(sparsity=0.0, prunen=2, prunem=4))):
        pruned, ms = wall_ms(lambda: sparsegpt(w, H, blocksize=128 if not smoke else 16, **kw), device)
        mag = w.clone()
        if "prunen" in kw:
            groups = mag.view(rows_, cols // 4, 4)
            drop = groups.abs().argsort(-1)[..., :2]
            groups.scatter_(-1, drop, 0.0)
        else:
            mag[mag.abs() < mag.abs().flatten().kthvalue(int(mag.numel() * 0.5)).values] = 0
        out += [
            dict(pattern=label, method="sparsegpt", rel_output_error=err(pruned), prune_ms=ms),
            dict(pattern=label, method="magnitude", rel_output_error=err(mag)),
        ]
    return dict(shape=dict(rows=rows_, cols=cols, calibration_tokens=n), rows=out)


def bench_llmlingua(device, smoke, dtype):
    from reference_impls.decode.speculative.lvlm_adapter import LVLMSpecLM
    from reference_impls.prefill.llmlingua import llmlingua_keep, naive_llmlingua_keep

    small = MinimalLVLM(LVLMConfig.tiny(init_std=0.1, max_seq_len=4096), seed=1, dtype=dtype, device=device)
    target = MinimalLVLM(_decoder_cfg(smoke), seed=0, dtype=dtype, device=device)
    n = 64 if smoke else 2048
    ids = _ids(n, small.cfg.vocab_size, seed=2, device=device)[0]
    segment = 16 if smoke else 200
    keep, cached_ms = wall_ms(lambda: llmlingua_keep(LVLMSpecLM(small, n + 8), ids, 0.5, segment), device)
    _, naive_ms = wall_ms(
        lambda: naive_llmlingua_keep(lambda x: small.forward_tokens(input_ids=x), ids, 0.5, segment), device
    )
    full_ms = time_ms(lambda: target.forward_tokens(input_ids=ids[None]), device, reps=3, warmup=1)
    short_ms = time_ms(lambda: target.forward_tokens(input_ids=ids[keep][None]), device, reps=3, warmup=1)
    return dict(
        prompt=n,
        rate=0.5,
        rows=[
            dict(path="llmlingua_kv_reuse", compress_ms=cached_ms, kept_fraction=keep.numel() / n),
            dict(path="llmlingua_uncached", compress_ms=naive_ms),
            dict(path="target_prefill_full", ms=full_ms),
            dict(path="target_prefill_compressed", ms=short_ms),
        ],
    )


def bench_shared(device, smoke, dtype):
    from reference_impls.decode.shared_attention import SharedAttention

    cfg = _decoder_cfg(smoke)
    model = MinimalLVLM(cfg, seed=0, dtype=dtype, device=device)
    ids = _ids(48 if smoke else 2048, cfg.vocab_size, device=device)
    n_new = 6 if smoke else 32
    rows = []
    share = tuple(range(cfg.n_layers // 2, cfg.n_layers))
    for name, technique in (("full", SharedAttention(())), (f"shared {share}", SharedAttention(share))):
        _, ms = wall_ms(lambda: technique.generate(model, ids, n_new), device)
        rows.append(dict(model_variant=name, generate_ms=ms, kv_bytes=technique.kv_bytes(model, ids.shape[1] + n_new)))
    _, native = wall_ms(lambda: model.generate(ids, max_new_tokens=n_new), device)
    rows.append(dict(model_variant="model.generate (baseline)", generate_ms=native))
    return dict(model=cfg.name, prompt=ids.shape[1], new_tokens=n_new, rows=rows)


def bench_encoders(device, smoke, dtype):
    from reference_impls.encode import fastvit as fv
    from reference_impls.encode.dynamic_tiling import closest_grid
    from reference_impls.encode.pixel_shuffle import PixelShuffleProjector
    from reference_impls.models.minimal_lvlm import Projector, VisionEncoder

    rows = []
    fcfg, size = (fv.FastViTConfig.tiny(), 128) if smoke else (fv.FastViTConfig.fastvithd(), 1024)
    enc = fv.FastViT(fcfg).to(device, dtype)
    img = torch.randn(1, 3, size, size, device=device, dtype=dtype)
    with torch.no_grad():
        multi = time_ms(lambda: enc(img), device, reps=5)
        fv.reparameterize(enc)
        rep = time_ms(lambda: enc(img), device, reps=5)
    rows += [
        dict(encoder=f"{fcfg.name} multi-branch", image=size, ms=multi, tokens=fcfg.n_tokens(size, size)),
        dict(encoder=f"{fcfg.name} reparameterised", image=size, ms=rep, tokens=fcfg.n_tokens(size, size)),
    ]
    vcfg = (
        VisionConfig(image_size=32, patch_size=8, n_layers=2, width=32, n_heads=2, mlp_dim=64)
        if smoke
        else LVLMConfig.llava_1_5_7b().vision
    )
    vit = VisionEncoder(vcfg).to(device, dtype).eval()
    vimg = torch.randn(1, 3, vcfg.image_size, vcfg.image_size, device=device, dtype=dtype)
    with torch.no_grad():
        rows.append(
            dict(
                encoder="ViT (CLIP-L/14-336 shape)" if not smoke else "ViT tiny",
                image=vcfg.image_size,
                ms=time_ms(lambda: vit(vimg), device, reps=5),
                tokens=vcfg.n_patches,
            )
        )
    # adapters: InternVL's pixel shuffle vs LLaVA's MLP on one tile of patch features
    lcfg = LVLMConfig.tiny() if smoke else LVLMConfig.llava_1_5_7b()
    patches = torch.randn(1, 16 if smoke else 1024, lcfg.vision.width, device=device, dtype=dtype)
    mlp = Projector(lcfg).to(device, dtype)
    shuffle = PixelShuffleProjector(lcfg.vision.width, lcfg.hidden, 0.5).to(device, dtype)
    with torch.no_grad():
        rows += [
            dict(adapter="mlp2x_gelu (LLaVA)", tokens=patches.shape[1], ms=time_ms(lambda: mlp(patches), device)),
            dict(
                adapter="pixel_shuffle 0.5 (InternVL)",
                tokens=patches.shape[1] // 4,
                ms=time_ms(lambda: shuffle(patches), device),
            ),
        ]
    for w, h in ((448, 448), (1344, 448), (1920, 1080)):
        cols, rows_ = closest_grid(w, h, 1, 6)
        n = cols * rows_ + (1 if cols * rows_ > 1 else 0)
        rows.append(dict(dynamic_tiling=f"{w}x{h}", tiles=n, tokens_at_256_per_tile=256 * n))
    return dict(rows=rows)


def bench_frames(device, smoke, dtype):
    from reference_impls.encode.focus import FOCUS
    from reference_impls.encode.longvu import LongVU

    n, fps = (3000, 30.0) if smoke else (108000, 30.0)  # 100 s / one hour
    g = torch.Generator().manual_seed(0)
    relevance = 0.1 + 0.05 * torch.rand(n, generator=g)
    relevance[n // 2 : n // 2 + n // 30] = 0.9
    calls = []

    def score(frames):
        calls.append(len(frames))
        return relevance[frames]

    t0 = time.perf_counter()
    out = FOCUS().select(n, fps, score, 32, torch.Generator().manual_seed(0))
    focus_ms = (time.perf_counter() - t0) * 1e3
    uniform = torch.linspace(0, n - 1, 32).round().long()
    rows = [
        dict(
            selector="FOCUS",
            frames_scored=out.scored,
            selection_ms=focus_ms,
            mean_relevance=float(relevance[out.frames].mean()),
        ),
        dict(selector="uniform", frames_scored=0, mean_relevance=float(relevance[uniform].mean())),
        dict(
            selector="score every frame (top-k)",
            frames_scored=n,
            mean_relevance=float(relevance.topk(32).values.mean()),
        ),
    ]
    F_, side, C = (32, 16, 8) if smoke else (256, 24, 256)
    grid = torch.randn(F_, side * side, C, generator=g)
    dino = grid[:, :16]
    text = torch.randn(12, C, generator=g)
    for budget in (F_ * 64, F_ * 64 + 16 * 80, F_ * 144):
        t0 = time.perf_counter()
        tokens, frames, high = LongVU().compress(dino, grid, text, budget)
        rows.append(
            dict(
                longvu_budget=budget,
                tokens=tokens.shape[0],
                frames=len(frames),
                high_res_frames=len(high),
                ms=(time.perf_counter() - t0) * 1e3,
            )
        )
    return dict(video_frames=n, rows=rows)


def bench_offload(device, smoke, dtype):
    from reference_impls.decode.offload import OffloadedKVCache
    from reference_impls.models.kv_cache import StaticKVCache

    cfg = _decoder_cfg(smoke)
    model = MinimalLVLM(cfg, seed=0, dtype=dtype, device=device)
    ids = _ids(48 if smoke else 4096, cfg.vocab_size, device=device)
    n_new = 6 if smoke else 32
    capacity = ids.shape[1] + n_new
    static = StaticKVCache.for_model(cfg, 1, capacity, dtype=dtype, device=device)
    want, base_ms = _greedy(model, ids, static, n_new)
    rows = [dict(cache="static (resident)", decode_ms_per_token=base_ms, resident_bytes=static.kv_bytes())]
    for prefetch in (False, True):
        cache = OffloadedKVCache.for_model(cfg, 1, capacity, dtype=dtype, device=device, prefetch=prefetch)
        out, ms = _greedy(model, ids, cache, n_new)
        rows.append(
            dict(
                cache=f"offloaded ({'next-layer prefetch' if prefetch else 'on demand'})",
                decode_ms_per_token=ms,
                resident_bytes=cache.peak_resident_bytes,
                bytes_copied=cache.bytes_fetched,
                same_tokens=bool(torch.equal(out, want)),
            )
        )
    return dict(model=cfg.name, prompt=ids.shape[1], new_tokens=n_new, rows=rows)


def bench_early_exit(device, smoke, dtype):
    from reference_impls.decode.early_exit import early_exit_generate

    cfg = _decoder_cfg(smoke)
    model = MinimalLVLM(cfg, seed=0, dtype=dtype, device=device)
    ids = _ids(48 if smoke else 2048, cfg.vocab_size, device=device)
    n_new = 6 if smoke else 32
    want, base_ms = wall_ms(lambda: model.generate(ids, max_new_tokens=n_new), device)
    rows = [dict(variant="model.generate (baseline)", generate_ms=base_ms)]
    for threshold in (2.0, 0.0):
        (out, stats), ms = wall_ms(
            lambda: early_exit_generate(model, ids, max_new_tokens=n_new, threshold=threshold), device
        )
        rows.append(
            dict(
                variant=f"early exit, threshold {threshold}",
                generate_ms=ms,
                mean_exit_layer=stats.mean_exit_layer,
                layers=cfg.n_layers,
                same_tokens=bool(torch.equal(out, want)),
            )
        )
    return dict(model=cfg.name, prompt=ids.shape[1], new_tokens=n_new, rows=rows)


def bench_feature_cache(device, smoke, dtype):
    from reference_impls.encode.feature_cache import FrameFeatureCache

    cfg = _decoder_cfg(smoke)
    model = MinimalLVLM(cfg, seed=0, dtype=dtype, device=device)
    size, distinct, repeats = cfg.vision.image_size, (4 if smoke else 16), 4
    g = torch.Generator().manual_seed(0)
    scenes = torch.randn(distinct, 3, size, size, generator=g)
    frames = scenes.repeat_interleave(repeats, 0)
    frames = (frames + 0.01 * torch.randn(frames.shape, generator=g)).to(device=device, dtype=dtype)
    rows = []
    for threshold in (2.0, 0.99):
        out, ms = wall_ms(lambda: FrameFeatureCache(threshold)(model.encode_images, frames), device)
        rows.append(dict(threshold=threshold, frames=frames.shape[0], frames_encoded=out.frames_encoded, ms=ms))
    return dict(model=cfg.name, rows=rows)


BENCHES = dict(
    kv=bench_kv,
    kv_policies=bench_kv_policies,
    palu=bench_palu,
    paged=bench_paged,
    serving=bench_serving,
    lookahead=bench_lookahead,
    sparsegpt=bench_sparsegpt,
    llmlingua=bench_llmlingua,
    shared=bench_shared,
    encoders=bench_encoders,
    frames=bench_frames,
    offload=bench_offload,
    early_exit=bench_early_exit,
    feature_cache=bench_feature_cache,
)


def run(args):
    device = pick_device(args.device, one_thread=args.smoke)
    dtype = torch.float32 if args.smoke or device.type == "cpu" else torch.bfloat16
    only = args.only.split(",") if args.only else SECTIONS
    unknown = set(only) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections: {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}")
    results = {}
    for name in only:
        t0 = time.perf_counter()
        results[name] = BENCHES[name](device, args.smoke, dtype)
        results[name]["section_s"] = time.perf_counter() - t0
        print(name, {k: v for k, v in results[name].items() if k != "rows"})
        for row in results[name]["rows"]:
            print("   ", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
    write_result("techniques", device, args.smoke, dict(dtype=str(dtype), sections=results), path=args.out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<topic>_<device>.json)")
    p.add_argument("--device", default=None)
    p.add_argument("--only", default=None, help=f"comma-separated sections of {', '.join(SECTIONS)}")
    run(p.parse_args())


if __name__ == "__main__":
    main()
