"""The registry of every reference implementation: what exists, which paper it follows, where it sits in the
taxonomy, which models it applies to, and which setting leaves the model unchanged.

Plain data: importing this module needs neither torch nor the catalogue tooling (``tools.catalogue.validate`` checks
the papers'
``reference_impls`` links against it; ``python -m reference_impls list`` prints it). Entry points are named by
``module:object`` strings and imported only when asked for (:func:`load`).

Hosts (the models a technique is applied to with ``with Technique(...)(model):``):

* ``minimal`` -- ``reference_impls.models.MinimalLVLM``, the project's readable LVLM;
* ``llava``, ``llava_next``, ``qwen2_vl``, ``qwen2_5_vl`` -- Hugging Face ``LlavaForConditionalGeneration``,
  ``LlavaNextForConditionalGeneration``, ``Qwen2VLForConditionalGeneration``,
  ``Qwen2_5_VLForConditionalGeneration``;
* ``llama``, ``qwen2`` -- Hugging Face ``LlamaForCausalLM`` and ``Qwen2ForCausalLM`` (text models, for the
  decode-side methods).

An entry with no hosts is a set of functions (or a model of its own) used directly, not applied to a host.
``identity`` is a setting under which the technique reproduces the unmodified model's greedy ``generate`` exactly;
``compress`` a setting under which it really shortens the sequence or the cache on the test models (the registry
sweep, ``tests/reference_impls/test_registry_sweep.py``, checks both on every host an entry claims).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

VLM_HOSTS = ("minimal", "llava", "llava_next", "qwen2_vl", "qwen2_5_vl")
TEXT_HOSTS = ("llama", "qwen2")
ALL_HOSTS = VLM_HOSTS + TEXT_HOSTS

#: Hugging Face class name -> host name
HF_CLASSES = {
    "LlavaForConditionalGeneration": "llava",
    "LlavaNextForConditionalGeneration": "llava_next",
    "Qwen2VLForConditionalGeneration": "qwen2_vl",
    "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl",
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
}

#: A budget larger than any prompt of the test models and of the supported checkpoints' usual contexts.
LARGE = 65536


@dataclass(frozen=True)
class Entry:
    name: str  # registry name, also the command line's --technique
    title: str  # the method's name in its paper
    arxiv: tuple  # arXiv ids of the paper(s) followed; empty for a generic technique
    technique: str  # taxonomy.yaml technique id
    cell: str  # taxonomy.yaml cell id ("<stage>.<axis>") the implementation acts in
    entry: str  # "module:object": the one public entry point
    spec: tuple = ()  # "module:function" of the naive specification(s)
    hosts: tuple = ()  # host names (see the module docstring); empty: functions / a model of its own
    identity: dict = field(default_factory=dict)  # parameters that leave the model unchanged (None: none exists)
    compress: dict = field(default_factory=dict)  # parameters that really compress on the test models
    note: str = ""  # one line: what the entry is when it has no host, or a key limitation

    @property
    def module(self) -> str:
        return self.entry.partition(":")[0]

    @property
    def object_name(self) -> str:
        return self.entry.partition(":")[2]

    def links(self) -> set:
        """The catalogue links that name this entry: its module, ``module:object``, and its spec functions."""
        out = {self.module, self.entry}
        out.update(s for s in self.spec)
        out.update(s.partition(":")[0] for s in self.spec)
        return out


ENTRIES = (
    # -------------------------------------------------------------------------------------------------------- encoding
    Entry(
        "visionzip",
        "VisionZip",
        ("2412.04467",),
        "token_pruning",
        "encode.density",
        "reference_impls.encode.visionzip:VisionZip",
        ("reference_impls.encode.visionzip:naive_visionzip",),
        ("minimal", "llava", "qwen2_vl", "qwen2_5_vl"),
        identity={"dominant": LARGE, "contextual": 0},
        compress={"dominant": 2, "contextual": 1},
        note="LLaVA-NeXT packs crops into a grid the merged tokens no longer fill: not a host",
    ),
    Entry(
        "tome",
        "ToMe",
        ("2210.09461",),
        "token_merging",
        "encode.density",
        "reference_impls.encode.tome:ToMe",
        ("reference_impls.encode.tome:naive_tome_merge",),
        ("minimal", "llava"),
        identity={"r": 0},
        compress={"r": 2},
        note="merges inside a CLS ViT; Qwen2-VL's windowed ViT and 2x2 merger are not hosts",
    ),
    Entry(
        "litevlm_view_selection",
        "LiteVLM (view selection)",
        ("2506.07416",),
        "keyframe_selection",
        "encode.density",
        "reference_impls.encode.litevlm_view_selection:ViewSelector",
        ("reference_impls.encode.litevlm_view_selection:naive_encode_selected_views",),
        note="camera-view selection before the ViT: functions on images and text",
    ),
    # --------------------------------------------------------------------------------------------------------- prefill
    Entry(
        "fastv",
        "FastV",
        ("2403.06764",),
        "token_pruning",
        "prefill.density",
        "reference_impls.prefill.fastv:FastV",
        ("reference_impls.prefill.fastv:naive_fastv_keep",),
        VLM_HOSTS,
        identity={"ratio": 0.0},
        compress={"k": 1, "ratio": 0.5},
    ),
    Entry(
        "pyramiddrop",
        "PyramidDrop",
        ("2410.17247",),
        "token_pruning",
        "prefill.density",
        "reference_impls.prefill.pyramiddrop:PyramidDrop",
        ("reference_impls.prefill.pyramiddrop:naive_pyramiddrop_keep",),
        VLM_HOSTS,
        identity={"ratio_list": (1.0, 1.0, 1.0)},
        compress={"ratio_list": (0.5, 0.25, 0.125)},
    ),
    Entry(
        "sparsevlm",
        "SparseVLM",
        ("2410.04417",),
        "token_pruning",
        "prefill.density",
        "reference_impls.prefill.sparsevlm:SparseVLM",
        (
            "reference_impls.prefill.sparsevlm:naive_select_raters",
            "reference_impls.prefill.sparsevlm:naive_dpc_knn_merge",
        ),
        VLM_HOSTS,
        identity={"keep": (1.0, 1.0, 1.0)},
        compress={"keep": (0.5, 0.25, 0.125)},
    ),
    Entry(
        "lightvlm",
        "LightVLM (pyramid token merging)",
        ("2509.00419",),
        "token_merging",
        "prefill.density",
        "reference_impls.prefill.lightvlm:LightVLM",
        ("reference_impls.prefill.lightvlm:naive_lightvlm_merge",),
        VLM_HOSTS,
        identity={"ratio_list": (1.0, 1.0, 1.0)},
        compress={"ratio_list": (0.5, 0.25, 0.1)},
    ),
    Entry(
        "litevlm_token_selection",
        "LiteVLM (token selection)",
        ("2506.07416",),
        "token_pruning",
        "prefill.density",
        "reference_impls.prefill.litevlm_token_selection:TokenSelection",
        note="a pipeline stage composing FastV / PyramidDrop / VisionZip on the minimal LVLM",
    ),
    Entry(
        "pevlm",
        "PEVLM",
        ("2506.19651",),
        "parallel_encoding",
        "prefill.attention",
        "reference_impls.prefill.pevlm:pevlm_prefill",
        ("reference_impls.prefill.pevlm:naive_pevlm_attention",),
        note="block-parallel video prefill: attention functions and a minimal-LVLM prefill",
    ),
    # -------------------------------------------------------------------------------------------------------- KV cache
    Entry(
        "streamingllm",
        "StreamingLLM",
        ("2309.17453",),
        "kv_eviction",
        "decode.memory",
        "reference_impls.decode.kv.streaming:StreamingLLM",
        ("reference_impls.decode.kv.streaming:naive_sink_window_attention",),
        ALL_HOSTS,
        identity={"window": 4096},
        compress={"n_sink": 2, "window": 8},
    ),
    Entry(
        "h2o",
        "H2O",
        ("2306.14048",),
        "kv_eviction",
        "decode.memory",
        "reference_impls.decode.kv.h2o:H2O",
        ("reference_impls.decode.kv.h2o:naive_h2o_attention",),
        ALL_HOSTS,
        identity={"heavy": LARGE, "recent": LARGE},
        compress={"heavy": 6, "recent": 4},
    ),
    Entry(
        "snapkv",
        "SnapKV",
        ("2404.14469",),
        "kv_eviction",
        "prefill.memory",
        "reference_impls.decode.kv.snapkv:SnapKV",
        ("reference_impls.decode.kv.snapkv:naive_snapkv_keep",),
        ALL_HOSTS,
        identity={"budget": 1.0},
        compress={"budget": 0.5, "window": 4},
    ),
    Entry(
        "pyramidkv",
        "PyramidKV",
        ("2406.02069",),
        "kv_budget_allocation",
        "prefill.memory",
        "reference_impls.decode.kv.pyramidkv:PyramidKV",
        ("reference_impls.decode.kv.pyramidkv:pyramid_budgets",),
        ALL_HOSTS,
        identity={"budget": 1.0},
        compress={"budget": 0.5, "window": 4},
    ),
    Entry(
        "hybridkv",
        "HybridKV",
        ("2604.05887",),
        "kv_budget_allocation",
        "decode.memory",
        "reference_impls.decode.kv.hybridkv:HybridKV",
        ("reference_impls.decode.kv.hybridkv:classify_heads",),
        VLM_HOSTS,
        identity={"budget": LARGE},
        compress={"budget": 4, "tau": 0.0, "n_sink": 1, "n_recent": 2},
        note="prunes visual keys only, so text models are not hosts",
    ),
    Entry(
        "lightvlm_kv",
        "LightVLM (decoding KV compression)",
        ("2509.00419",),
        "kv_eviction",
        "decode.memory",
        "reference_impls.decode.kv.lightvlm_kv:LightVLMKV",
        (),
        ALL_HOSTS,
        identity={"gen_heavy": LARGE, "gen_recent": 0},
        compress={"gen_heavy": 1, "gen_recent": 2},
    ),
    Entry(
        "knorm",
        "Knorm (L2-norm eviction)",
        ("2406.11430",),
        "kv_eviction",
        "prefill.memory",
        "reference_impls.decode.kv.knorm:Knorm",
        ("reference_impls.decode.kv.knorm:naive_knorm_keep",),
        ALL_HOSTS,
        identity={"compression_ratio": 0.0},
        compress={"compression_ratio": 0.5},
    ),
    Entry(
        "tova",
        "TOVA",
        ("2401.06104",),
        "kv_eviction",
        "decode.memory",
        "reference_impls.decode.kv.tova:TOVA",
        ("reference_impls.decode.kv.tova:naive_tova_attention",),
        ALL_HOSTS,
        identity={"budget": LARGE},
        compress={"budget": 10},
    ),
    Entry(
        "adakv",
        "Ada-KV (head-wise budget allocation)",
        ("2407.11550",),
        "kv_budget_allocation",
        "prefill.memory",
        "reference_impls.decode.kv.adakv:AdaKV",
        ("reference_impls.decode.kv.adakv:naive_adakv_keep",),
        ALL_HOSTS,
        identity={"compression_ratio": 0.0},
        compress={"compression_ratio": 0.5, "scorer": ("snapkv", {"window": 2})},
        note="wraps any scorer (SnapKV by default)",
    ),
    Entry(
        "chunkkv",
        "ChunkKV",
        ("2502.00299",),
        "kv_eviction",
        "prefill.memory",
        "reference_impls.decode.kv.chunkkv:ChunkKV",
        ("reference_impls.decode.kv.chunkkv:naive_chunkkv_keep",),
        ALL_HOSTS,
        identity={"compression_ratio": 0.0},
        compress={"compression_ratio": 0.5, "chunk_length": 3, "scorer": ("snapkv", {"window": 2})},
        note="wraps any scorer (SnapKV by default)",
    ),
    Entry(
        "think",
        "ThinK (key-channel pruning)",
        ("2407.21018",),
        "low_rank_kv",
        "decode.memory",
        "reference_impls.decode.kv.think:ThinK",
        ("reference_impls.decode.kv.think:naive_think_pruned_channels",),
        ALL_HOSTS,
        identity={"key_channel_ratio": 0.0},
        compress={"key_channel_ratio": 0.5, "window": 4},
        note="zeroes channels (no memory saved in this layout); kv_bytes counts the channels left",
    ),
    Entry(
        "duo_attention",
        "DuoAttention",
        ("2410.10819",),
        "kv_eviction",
        "decode.memory",
        "reference_impls.decode.kv.duo_attention:DuoAttention",
        ("reference_impls.decode.kv.duo_attention:naive_duo_keep",),
        ALL_HOSTS,
        identity={"head_compression_ratio": 0.0},
        compress={"head_compression_ratio": 1.0, "sink": 2, "recent": 4},
        note="streaming vs retrieval heads from a given pattern (the learned patterns are inputs)",
    ),
    Entry(
        "expected_attention",
        "Expected Attention",
        (),
        "kv_eviction",
        "prefill.memory",
        "reference_impls.decode.kv.expected_attention:ExpectedAttention",
        ("reference_impls.decode.kv.expected_attention:naive_expected_attention",),
        ("minimal", "llava", "llava_next", "llama", "qwen2"),
        identity={"compression_ratio": 0.0},
        compress={"compression_ratio": 0.5, "n_sink": 2},
        note="kvpress's method; needs 1-D RoPE, so Qwen2-VL's M-RoPE hosts are not supported",
    ),
    Entry(
        "qfilters",
        "Q-Filters",
        ("2503.02812",),
        "kv_eviction",
        "prefill.memory",
        "reference_impls.decode.kv.qfilters:QFilters",
        ("reference_impls.decode.kv.qfilters:naive_qfilter_direction",),
        ALL_HOSTS,
        identity={"compression_ratio": 0.0},
        compress={"compression_ratio": 0.5},
        note="filters given, or calibrated on the prompt itself",
    ),
    Entry(
        "quest",
        "Quest (query-aware chunk-sparse decode attention)",
        ("2406.10774",),
        "sparse_attention",
        "decode.attention",
        "reference_impls.ops.decode_attention:sparse_decode_attention",
        (
            "reference_impls.ops.decode_attention:naive_chunk_summaries",
            "reference_impls.ops.decode_attention:naive_chunk_scores",
        ),
        note="functions: per-chunk key min/max, the Quest bound of q.k per chunk, attention over the top chunks",
    ),
    Entry(
        "kv_quant",
        "INT8 / FP8 KV cache",
        (),
        "kv_quantization",
        "decode.memory",
        "reference_impls.decode.kv.quantized:KVQuant",
        ("reference_impls.ops.quant.kv_quant:naive_quantize_kv",),
        ALL_HOSTS,
        identity=None,
        compress={"fmt": "int8"},
        note="generic per-(token, head) quantisation on append; lossy, so no identity setting",
    ),
    # -------------------------------------------------------------------------------------------------------- decoding
    Entry(
        "weight_quant",
        "INT8 / FP8 weight quantisation",
        (),
        "weight_quantization",
        "decode.memory",
        "reference_impls.decode.quantization:WeightQuant",
        (),
        ALL_HOSTS,
        identity=None,
        compress={"mode": "int8"},
        note="generic post-training quantisation of nn.Linear layers; lossy, so no identity setting",
    ),
    Entry(
        "speculative",
        "Speculative decoding (chain)",
        ("2211.17192", "2302.01318"),
        "speculative_decoding",
        "decode.memory",
        "reference_impls.decode.speculative.chain:SpeculativeDecoding",
        (),
        ("minimal",),
        identity={},
        compress={"k": 3},
        note="batch size 1; greedy decoding is lossless, so every setting reproduces generate",
    ),
    Entry(
        "eagle_tree",
        "Tree speculative decoding (EAGLE-style static tree)",
        ("2401.15077", "2406.16858"),
        "speculative_decoding",
        "decode.memory",
        "reference_impls.decode.speculative.tree:TreeSpeculativeDecoding",
        ("reference_impls.decode.speculative.tree:build_tree",),
        ("minimal",),
        identity={},
        compress={},
        note="batch size 1; a separate small draft LM, not EAGLE's feature-level head",
    ),
    Entry(
        "lvspec",
        "LVSpec",
        ("2604.05650",),
        "speculative_decoding",
        "decode.memory",
        "reference_impls.decode.speculative.lvspec:LVSpec",
        (),
        ("minimal",),
        identity={"strict": True},
        compress={"tau_v": 0.5},
        note="batch size 1; loose verification is lossy by design (strict=True is lossless)",
    ),
    Entry(
        "specvlm",
        "SpecVLM",
        ("2508.16201",),
        "speculative_decoding",
        "decode.memory",
        "reference_impls.decode.speculative.specvlm:SpecVLM",
        (),
        ("minimal",),
        identity={},
        compress={"drop_rate": 0.25},
        note="batch size 1; verifier-guided pruning of the draft's visual tokens",
    ),
    # -------------------------------------------------------------------------------- encoding (functions, own models)
    Entry(
        "dynamic_tiling",
        "Dynamic high-resolution tiling (InternVL 1.5)",
        ("2404.16821",),
        "adaptive_resolution",
        "encode.density",
        "reference_impls.encode.dynamic_tiling:dynamic_tiles",
        ("reference_impls.encode.dynamic_tiling:closest_grid",),
        identity={"max_tiles": 1},
        compress={"max_tiles": 6},
        note="functions on images: the tile grid, and so the visual token count, follows the aspect ratio",
    ),
    Entry(
        "fastvit",
        "FastViT / FastViTHD (FastVLM's encoder)",
        ("2303.14189", "2412.13303"),
        "efficient_vision_encoder",
        "encode.attention",
        "reference_impls.encode.fastvit:FastViT",
        ("reference_impls.encode.fastvit:FastViT",),
        note=(
            "an encoder of its own (random weights): stride 64, reparameterised convolutions, attention at low "
            "resolution"
        ),
    ),
    Entry(
        "focus",
        "FOCUS (keyframe selection)",
        ("2510.27280",),
        "keyframe_selection",
        "encode.density",
        "reference_impls.encode.focus:FOCUS",
        ("reference_impls.encode.focus:FOCUS",),
        identity={"k": 65536},
        compress={"k": 8},
        note="functions: selects frame indices from a query-relevance function before the vision encoder",
    ),
    Entry(
        "longvu",
        "LongVU (spatiotemporal adaptive compression)",
        ("2410.17434",),
        "adaptive_resolution",
        "encode.density",
        "reference_impls.encode.longvu:LongVU",
        (
            "reference_impls.encode.longvu:naive_query_guided_resolution",
            "reference_impls.encode.longvu:naive_temporal_reduction",
        ),
        identity={"budget": 65536},
        compress={"budget": 256},
        note="functions on frame features: picks each frame's resolution (and frames) under a token budget",
    ),
    Entry(
        "pixel_shuffle",
        "Pixel-shuffle projector (InternVL 1.5)",
        ("2404.16821",),
        "adapter_compression",
        "encode.density",
        "reference_impls.encode.pixel_shuffle:PixelShuffle",
        ("reference_impls.encode.pixel_shuffle:naive_pixel_shuffle",),
        identity={"downsample_ratio": 1.0},
        compress={"downsample_ratio": 0.5},
        note=(
            "a trained adapter in InternVL: here freshly initialised, for shapes and token counts; runs on the "
            "minimal LVLM"
        ),
    ),
    Entry(
        "feature_cache",
        "Visual feature caching (reuse of similar frames' features)",
        (),
        "feature_caching",
        "encode.memory",
        "reference_impls.encode.feature_cache:FrameFeatureCache",
        ("reference_impls.encode.feature_cache:naive_cached_frame_features",),
        identity={"threshold": 2.0},
        compress={"threshold": 0.99},
        note="functions on video frames and any frame encoder (e.g. MinimalLVLM.encode_images); generic, near STC",
    ),
    # --------------------------------------------------------------------------------------------- prefill (functions)
    Entry(
        "llmlingua",
        "LLMLingua (token-level)",
        ("2310.05736",),
        "prompt_compression",
        "prefill.density",
        "reference_impls.prefill.llmlingua:LLMLingua",
        ("reference_impls.prefill.llmlingua:naive_llmlingua_keep",),
        identity={"rate": 1.0},
        compress={"rate": 0.5, "segment_size": 8},
        note=(
            "functions: a small LM (any SpecLM, e.g. the minimal LVLM) scores the prompt; the target model is "
            "not touched"
        ),
    ),
    # --------------------------------------------------------------------------------- KV cache (caches used directly)
    Entry(
        "cam",
        "CaM (cache merging)",
        (),
        "kv_merging",
        "decode.memory",
        "reference_impls.decode.kv.cam:CaMCache",
        ("reference_impls.decode.kv.cam:naive_cam_merge",),
        identity={"window": 65536},
        compress={"n_sink": 2, "window": 8, "merge_size": 4},
        note=(
            "ICML 2024, no arXiv version; values merged into the following tokens before StreamingLLM eviction; "
            "runs on the minimal LVLM"
        ),
    ),
    Entry(
        "kivi",
        "KIVI",
        ("2402.02750",),
        "kv_quantization",
        "decode.memory",
        "reference_impls.decode.kv.kivi:KIVICache",
        ("reference_impls.decode.kv.kivi:naive_quantize_keys", "reference_impls.decode.kv.kivi:naive_quantize_values"),
        identity={"bits": 16},
        compress={"bits": 2, "group_size": 4, "residual_length": 4},
        note="dequantised copy for SDPA: kv_bytes() is the quantised layout's size; runs on the minimal LVLM",
    ),
    Entry(
        "minicache",
        "MiniCache",
        ("2405.14366",),
        "cross_layer_kv_sharing",
        "decode.memory",
        "reference_impls.decode.kv.minicache:MiniCacheKV",
        ("reference_impls.decode.kv.minicache:naive_minicache_merge",),
        identity={"retain_ratio": 1.0},
        compress={"start_layer": 1, "retain_ratio": 0.05},
        note="prompt KV of adjacent layer pairs merged once after prefill; runs on the minimal LVLM",
    ),
    Entry(
        "paged_kv",
        "PagedAttention (paged KV cache)",
        ("2309.06180",),
        "kv_cache_management",
        "decode.memory",
        "reference_impls.decode.kv.paged:PagedKVCache",
        ("reference_impls.ops.paged_attention:naive_paged_decode_attention",),
        identity={},
        compress={"block_size": 16},
        note=(
            "lossless: memory follows the tokens held; used by serving.continuous_batching; runs on the minimal LVLM"
        ),
    ),
    Entry(
        "palu",
        "Palu",
        ("2407.21118",),
        "low_rank_kv",
        "decode.memory",
        "reference_impls.decode.kv.palu:Palu",
        (
            "reference_impls.decode.kv.palu:naive_low_rank_factors",
            "reference_impls.decode.kv.palu:naive_palu_attention",
        ),
        identity={"rank_ratio": 1.0},
        compress={"rank_ratio": 0.5, "group_size": 1},
        note="factored K/V projections; palu_attention is the latent-cache attention; runs on the minimal LVLM",
    ),
    Entry(
        "offloaded_kv",
        "KV-cache offloading with next-layer prefetch",
        (),
        "offloading",
        "decode.memory",
        "reference_impls.decode.offload:OffloadedKVCache",
        ("reference_impls.decode.offload:OffloadedKVCache",),
        identity={"prefetch": False},
        compress={"prefetch": True},
        note="lossless; a cache passed as cache= to the minimal LVLM; generic, near FlexGen's KV offloading",
    ),
    # -------------------------------------------------------------------------------------------- decoding (functions)
    Entry(
        "car",
        "CAR (certainty-based adaptive reasoning)",
        ("2505.15154",),
        "efficient_reasoning",
        "decode.density",
        "reference_impls.decode.car:CAR",
        ("reference_impls.decode.car:naive_answer_perplexity",),
        identity={"mode": "long"},
        compress={"mode": "adaptive"},
        note=(
            "routes between a short answer and long reasoning by the short answer's perplexity; runs on the "
            "minimal LVLM"
        ),
    ),
    Entry(
        "lookahead",
        "Lookahead decoding",
        ("2402.02057",),
        "parallel_decoding",
        "decode.memory",
        "reference_impls.decode.lookahead:lookahead_generate",
        ("reference_impls.decode.lookahead:lookahead_generate",),
        identity={"ngram": 1},
        compress={"window": 3, "ngram": 3, "max_candidates": 3},
        note=(
            "batch size 1, greedy; lossless: every setting emits the autoregressive tokens; runs on the minimal LVLM"
        ),
    ),
    Entry(
        "shared_attention",
        "Shared Attention",
        ("2407.12866",),
        "attention_reuse",
        "decode.attention",
        "reference_impls.decode.shared_attention:SharedAttention",
        ("reference_impls.decode.shared_attention:naive_shared_attention_forward",),
        identity={"share_layers": ()},
        compress={"share_layers": (2, 3)},
        note=(
            "shared layers reuse the previous layer's softmax weights with their own values; no key cache there; "
            "runs on the minimal LVLM"
        ),
    ),
    Entry(
        "sparsegpt",
        "SparseGPT",
        ("2301.00774",),
        "weight_pruning",
        "decode.memory",
        "reference_impls.decode.sparsegpt:SparseGPT",
        ("reference_impls.decode.sparsegpt:naive_sparsegpt",),
        identity={"sparsity": 0.0},
        compress={"sparsity": 0.5},
        note=(
            "one-shot pruning of the decoder's linear layers from calibration ids; zeros stored densely; runs on "
            "the minimal LVLM"
        ),
    ),
    Entry(
        "early_exit",
        "Confidence-based early exit with state propagation",
        (),
        "early_exit",
        "decode.memory",
        "reference_impls.decode.early_exit:early_exit_generate",
        ("reference_impls.decode.early_exit:naive_early_exit_generate",),
        identity={"threshold": 2.0},
        compress={"threshold": 0.0},
        note="functions on the minimal LVLM; the softmax-response exit rule of CALM with a fixed threshold; generic",
    ),
    # --------------------------------------------------------------------------------------------------------- serving
    Entry(
        "continuous_batching",
        "Continuous batching with chunked prefill (SARATHI)",
        ("2308.16369",),
        "serving_systems",
        "prefill.memory",
        "reference_impls.serving.continuous_batching:ContinuousBatchingEngine",
        identity={},
        compress={"token_budget": 8},
        note=(
            "an engine over the minimal LVLM and the paged cache; greedy outputs equal per-request generation; "
            "runs on the minimal LVLM"
        ),
    ),
    # --------------------------------------------------------------------------------------------------------- kernels
    Entry(
        "flash_decoding",
        "Split-K decode attention (Flash-Decoding)",
        (),
        "io_aware_attention",
        "decode.attention",
        "reference_impls.ops.decode_attention:decode_attention",
        ("reference_impls.ops.decode_attention:naive_decode_attention",),
        note="Flash-Decoding has no arXiv paper; ragged GQA caches, int8/fp8, RoPE-on-read, block-sparse (Quest)",
    ),
    Entry(
        "rope",
        "RoPE (RoFormer)",
        ("2104.09864",),
        "position_encoding",
        "prefill.attention",
        "reference_impls.ops.rope:rope",
        ("reference_impls.ops.rope:naive_rope",),
        identity={"positions": 0},
        compress={},
        note="functions: the rotation every decoder here applies (minimal LVLM: half layout)",
    ),
    Entry(
        "flash_attention",
        "FlashAttention-2 forward (tiled, online softmax)",
        ("2307.08691", "2205.14135"),
        "io_aware_attention",
        "prefill.attention",
        "reference_impls.ops.scored_attention:scored_attention",
        ("reference_impls.ops.scored_attention:naive_scored_attention",),
        note="exact attention kernel (Triton) behind the score-based techniques; used by the minimal LVLM",
    ),
    # ---------------------------------------------------------------------------------------------------------- models
    Entry(
        "gated_deltanet",
        "Gated DeltaNet (hybrid decoder)",
        ("2412.06464", "2512.08829"),
        "linear_hybrid_attention",
        "decode.attention",
        "reference_impls.models.hybrid_gdn:HybridGDNModel",
        ("reference_impls.ops.gated_delta.naive:naive_recurrent_gated_delta_rule",),
        note="a decoder of its own (gated delta rule + sliding-window attention), not applied to a host",
    ),
    Entry(
        "litevlm",
        "LiteVLM (pipeline)",
        ("2506.07416",),
        "token_pruning",
        "encode.density",
        "reference_impls.pipelines.litevlm:LiteVLMPipeline",
        note="view selection + token selection + speculative decoding + FP8 on the minimal LVLM",
    ),
)

REGISTRY = {e.name: e for e in ENTRIES}


def get(name: str) -> Entry:
    """The entry called ``name``; ValueError naming the known ones otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"unknown technique {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def load(name_or_entry) -> object:
    """Import the entry point (the technique class or function) of an entry."""
    entry = name_or_entry if isinstance(name_or_entry, Entry) else get(name_or_entry)
    module, _, obj = entry.entry.partition(":")
    return getattr(importlib.import_module(module), obj)


def for_link(link: str) -> Entry | None:
    """The entry a catalogue link (``module``, ``module:object`` or a spec function) names, or None."""
    for entry in ENTRIES:
        if link in entry.links():
            return entry
    return None


def _hosts_label(hosts: tuple) -> str:
    if hosts == ALL_HOSTS:
        return "all (minimal, HF VLMs, llama, qwen2)"
    if hosts == VLM_HOSTS:
        return "minimal, HF VLMs"
    return ", ".join(hosts) or "- (functions)"


def table(markdown: bool = False) -> str:
    """The registry: one row per entry (Markdown: with entry points), then, as text, each entry's entry point and
    note. "HF VLMs" = llava, llava_next, qwen2_vl, qwen2_5_vl."""
    head = ("name", "paper (arXiv)", "taxonomy technique / cell", "hosts", "identity setting")
    rows = []
    for e in ENTRIES:
        identity = (
            "-"
            if not e.hosts
            else (
                "none (lossy)"
                if e.identity is None
                else (", ".join(f"{k}={v}" for k, v in e.identity.items()) or "any (lossless)")
            )
        )
        rows.append(
            (
                e.name,
                " ".join(e.arxiv) or "-",
                f"{e.technique} / {e.cell}",
                (", ".join(e.hosts) or f"- ({e.note})") if markdown else _hosts_label(e.hosts),
                identity,
            )
        )
    if markdown:
        out = ["| " + " | ".join(head + ("entry point",)) + " |", "|" + "---|" * (len(head) + 1)]
        out += [
            "| " + " | ".join(c.replace("|", "\\|") for c in (*row, f"`{e.entry}`")) + " |"
            for row, e in zip(rows, ENTRIES)
        ]
        return "\n".join(out)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *rows]]
    lines += ["", "HF VLMs = llava, llava_next, qwen2_vl, qwen2_5_vl. Entry points:"]
    lines += [f"  {e.name:24} {e.entry}" + (f"  ({e.note})" if e.note else "") for e in ENTRIES]
    return "\n".join(lines)
