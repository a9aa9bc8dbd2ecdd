"""The registry of every reference implementation: what exists, which paper it follows, where it sits in the
taxonomy, which models it applies to, and which setting leaves the model unchanged.

Plain data: importing this module needs neither torch nor the catalogue tooling (``tools.validate`` checks the papers'
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
    name: str                  # registry name, also the command line's --technique
    title: str                 # the method's name in its paper
    arxiv: tuple               # arXiv ids of the paper(s) followed; empty for a generic technique
    technique: str             # taxonomy.yaml technique id
    cell: str                  # taxonomy.yaml cell id ("<stage>.<axis>") the implementation acts in
    entry: str                 # "module:object": the one public entry point
    spec: tuple = ()           # "module:function" of the naive specification(s)
    hosts: tuple = ()          # host names (see the module docstring); empty: functions / a model of its own
    identity: dict = field(default_factory=dict)   # parameters that leave the model unchanged (None: none exists)
    compress: dict = field(default_factory=dict)   # parameters that really compress on the test models
    note: str = ""             # one line: what the entry is when it has no host, or a key limitation

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
    # ----------------------------------------------------------------------------------------------- encoding
    Entry("visionzip", "VisionZip", ("2412.04467",), "token_pruning", "encode.density",
          "reference_impls.encode.visionzip:VisionZip", ("reference_impls.encode.visionzip:naive_visionzip",),
          ("minimal", "llava", "qwen2_vl", "qwen2_5_vl"),
          identity={"dominant": LARGE, "contextual": 0}, compress={"dominant": 2, "contextual": 1},
          note="LLaVA-NeXT packs crops into a grid the merged tokens no longer fill: not a host"),
    Entry("tome", "ToMe", ("2210.09461",), "token_merging", "encode.density",
          "reference_impls.encode.tome:ToMe", ("reference_impls.encode.tome:naive_tome_merge",),
          ("minimal", "llava"), identity={"r": 0}, compress={"r": 2},
          note="merges inside a CLS ViT; Qwen2-VL's windowed ViT and 2x2 merger are not hosts"),
    Entry("litevlm_view_selection", "LiteVLM (view selection)", ("2506.07416",), "keyframe_selection",
          "encode.density", "reference_impls.encode.litevlm_view_selection:ViewSelector",
          ("reference_impls.encode.litevlm_view_selection:naive_encode_selected_views",),
          note="camera-view selection before the ViT: functions on images and text"),
    # ----------------------------------------------------------------------------------------------- prefill
    Entry("fastv", "FastV", ("2403.06764",), "token_pruning", "prefill.density",
          "reference_impls.prefill.fastv:FastV", ("reference_impls.prefill.fastv:fastv_keep_naive",),
          VLM_HOSTS, identity={"ratio": 0.0}, compress={"k": 1, "ratio": 0.5}),
    Entry("pyramiddrop", "PyramidDrop", ("2410.17247",), "token_pruning", "prefill.density",
          "reference_impls.prefill.pyramiddrop:PyramidDrop",
          ("reference_impls.prefill.pyramiddrop:pyramiddrop_keep_naive",),
          VLM_HOSTS, identity={"ratio_list": (1.0, 1.0, 1.0)}, compress={"ratio_list": (0.5, 0.25, 0.125)}),
    Entry("sparsevlm", "SparseVLM", ("2410.04417",), "token_pruning", "prefill.density",
          "reference_impls.prefill.sparsevlm:SparseVLM",
          ("reference_impls.prefill.sparsevlm:select_raters_naive",
           "reference_impls.prefill.sparsevlm:dpc_knn_merge_naive"),
          VLM_HOSTS, identity={"keep": (1.0, 1.0, 1.0)}, compress={"keep": (0.5, 0.25, 0.125)}),
    Entry("lightvlm", "LightVLM (pyramid token merging)", ("2509.00419",), "token_merging", "prefill.density",
          "reference_impls.prefill.lightvlm:LightVLM", ("reference_impls.prefill.lightvlm:lightvlm_merge_naive",),
          VLM_HOSTS, identity={"ratio_list": (1.0, 1.0, 1.0)}, compress={"ratio_list": (0.5, 0.25, 0.1)}),
    Entry("litevlm_token_selection", "LiteVLM (token selection)", ("2506.07416",), "token_pruning",
          "prefill.density", "reference_impls.prefill.litevlm_token_selection:TokenSelection",
          note="a pipeline stage composing FastV / PyramidDrop / VisionZip on the minimal LVLM"),
    Entry("pevlm", "PEVLM", ("2506.19651",), "parallel_encoding", "prefill.attention",
          "reference_impls.prefill.pevlm:pevlm_prefill", ("reference_impls.prefill.pevlm:naive_pevlm_attention",),
          note="block-parallel video prefill: attention functions and a minimal-LVLM prefill"),
    # ----------------------------------------------------------------------------------------------- KV cache
    Entry("streamingllm", "StreamingLLM", ("2309.17453",), "kv_eviction", "decode.memory",
          "reference_impls.decode.kv.streaming:StreamingLLM",
          ("reference_impls.decode.kv.streaming:naive_sink_window_attention",),
          ALL_HOSTS, identity={"window": 4096}, compress={"n_sink": 2, "window": 8}),
    Entry("h2o", "H2O", ("2306.14048",), "kv_eviction", "decode.memory",
          "reference_impls.decode.kv.h2o:H2O", ("reference_impls.decode.kv.h2o:naive_h2o_attention",),
          ALL_HOSTS, identity={"heavy": LARGE, "recent": LARGE}, compress={"heavy": 6, "recent": 4}),
    Entry("snapkv", "SnapKV", ("2404.14469",), "kv_eviction", "prefill.memory",
          "reference_impls.decode.kv.snapkv:SnapKV", ("reference_impls.decode.kv.snapkv:naive_snapkv_keep",),
          ALL_HOSTS, identity={"budget": 1.0}, compress={"budget": 0.5, "window": 4}),
    Entry("pyramidkv", "PyramidKV", ("2406.02069",), "kv_budget_allocation", "prefill.memory",
          "reference_impls.decode.kv.pyramidkv:PyramidKV", ("reference_impls.decode.kv.pyramidkv:pyramid_budgets",),
          ALL_HOSTS, identity={"budget": 1.0}, compress={"budget": 0.5, "window": 4}),
    Entry("hybridkv", "HybridKV", ("2604.05887",), "kv_budget_allocation", "decode.memory",
          "reference_impls.decode.kv.hybridkv:HybridKV", ("reference_impls.decode.kv.hybridkv:classify_heads",),
          VLM_HOSTS, identity={"budget": LARGE}, compress={"budget": 4, "tau": 0.0, "n_sink": 1, "n_recent": 2},
          note="prunes visual keys only, so text models are not hosts"),
    Entry("lightvlm_kv", "LightVLM (decoding KV compression)", ("2509.00419",), "kv_eviction", "decode.memory",
          "reference_impls.decode.kv.lightvlm_kv:LightVLMKV", (),
          ALL_HOSTS, identity={"gen_heavy": LARGE, "gen_recent": 0}, compress={"gen_heavy": 1, "gen_recent": 2}),
    Entry("kv_quant", "INT8 / FP8 KV cache", (), "kv_quantization", "decode.memory",
          "reference_impls.decode.kv.quantized:KVQuant", ("reference_impls.ops.quant.kv_quant:quantize_kv_naive",),
          ALL_HOSTS, identity=None, compress={"fmt": "int8"},
          note="generic per-(token, head) quantisation on append; lossy, so no identity setting"),
    # ----------------------------------------------------------------------------------------------- decoding
    Entry("weight_quant", "INT8 / FP8 weight quantisation", (), "weight_quantization", "decode.memory",
          "reference_impls.decode.quantization:WeightQuant", (),
          ALL_HOSTS, identity=None, compress={"mode": "int8"},
          note="generic post-training quantisation of nn.Linear layers; lossy, so no identity setting"),
    Entry("speculative", "Speculative decoding (chain)", ("2211.17192", "2302.01318"), "speculative_decoding",
          "decode.memory", "reference_impls.decode.speculative.chain:SpeculativeDecoding", (),
          ("minimal",), identity={}, compress={"k": 3},
          note="batch size 1; greedy decoding is lossless, so every setting reproduces generate"),
    Entry("eagle_tree", "Tree speculative decoding (EAGLE-style static tree)", ("2401.15077", "2406.16858"),
          "speculative_decoding", "decode.memory", "reference_impls.decode.speculative.tree:TreeSpeculativeDecoding",
          ("reference_impls.decode.speculative.tree:build_tree",), ("minimal",), identity={}, compress={},
          note="batch size 1; a separate small draft LM, not EAGLE's feature-level head"),
    Entry("lvspec", "LVSpec", ("2604.05650",), "speculative_decoding", "decode.memory",
          "reference_impls.decode.speculative.lvspec:LVSpec", (), ("minimal",),
          identity={"strict": True}, compress={"tau_v": 0.5},
          note="batch size 1; loose verification is lossy by design (strict=True is lossless)"),
    Entry("specvlm", "SpecVLM", ("2508.16201",), "speculative_decoding", "decode.memory",
          "reference_impls.decode.speculative.specvlm:SpecVLM", (), ("minimal",), identity={},
          compress={"drop_rate": 0.25},
          note="batch size 1; verifier-guided pruning of the draft's visual tokens"),
    # ----------------------------------------------------------------------------------------------- models
    Entry("gated_deltanet", "Gated DeltaNet (hybrid decoder)", ("2412.06464", "2512.08829"),
          "linear_hybrid_attention", "decode.attention", "reference_impls.models.hybrid_gdn:HybridGDNModel",
          ("reference_impls.ops.gated_delta.naive:naive_recurrent_gated_delta_rule",),
          note="a decoder of its own (gated delta rule + sliding-window attention), not applied to a host"),
    Entry("litevlm", "LiteVLM (pipeline)", ("2506.07416",), "token_pruning", "encode.density",
          "reference_impls.pipelines.litevlm:LiteVLMPipeline",
          note="view selection + token selection + speculative decoding + FP8 on the minimal LVLM"),
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
        identity = "-" if not e.hosts else ("none (lossy)" if e.identity is None else (
            ", ".join(f"{k}={v}" for k, v in e.identity.items()) or "any (lossless)"))
        rows.append((e.name, " ".join(e.arxiv) or "-", f"{e.technique} / {e.cell}",
                     (", ".join(e.hosts) or f"- ({e.note})") if markdown else _hosts_label(e.hosts), identity))
    if markdown:
        out = ["| " + " | ".join(head + ("entry point",)) + " |", "|" + "---|" * (len(head) + 1)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in (*row, f"`{e.entry}`")) + " |"
                for row, e in zip(rows, ENTRIES)]
        return "\n".join(out)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *rows]]
    lines += ["", "HF VLMs = llava, llava_next, qwen2_vl, qwen2_5_vl. Entry points:"]
    lines += [f"  {e.name:24} {e.entry}" + (f"  ({e.note})" if e.note else "") for e in ENTRIES]
    return "\n".join(lines)
