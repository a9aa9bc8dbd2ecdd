"""The command line of the reference implementations.

    python -m reference_impls list [--markdown]
    python -m reference_impls readme            # rewrite the registry table of reference_impls/README.md
    python -m reference_impls run --model PATH --technique snapkv --budget 0.25 --image IMG --prompt "..."

``list`` prints the registry (needs neither torch nor transformers). ``run`` loads a Hugging Face checkpoint from a
local folder (no download), generates greedily with the unmodified model and then with the technique applied, and
prints both outputs with the per-stage latency (vision encoder, prefill, decode per token), the tokens each decoder
layer processed in the prefill and the KV-cache bytes at the end.

Technique parameters: every field of the technique's dataclass is a flag (``--budget 0.25``, ``--ratio 0.5``,
``--ratio-list "(0.5, 0.25, 0.125)"``); values are read as Python literals, else as text. Without a flag the
technique's default applies (``python -m reference_impls run --technique fastv --help-technique`` lists them).

Inputs: the folder's processor (``AutoProcessor``: tokenizer + image processor, which reads images with Pillow)
turns ``--prompt`` and ``--image`` into model inputs; an image placeholder is prepended to the prompt when it holds
none. For a folder without a processor (e.g. a model saved with ``save_pretrained`` alone), pass the prompt as token
ids with ``--input-ids "1 5 6 7"`` (text models; image inputs need the processor). Encoder-side techniques that
shorten every image (VisionZip, ToMe on LLaVA) get their prompts rewritten to the reduced placeholder count.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import sys
import time

from reference_impls import registry


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def technique_parameters(cls, extra: list[str]) -> dict:
    """``--name value`` pairs (dashes or underscores) for the dataclass fields of ``cls``; ValueError otherwise."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    out, i = {}, 0
    while i < len(extra):
        flag = extra[i]
        if not flag.startswith("--"):
            raise ValueError(f"unexpected argument {flag!r}")
        name, _, value = flag[2:].partition("=")
        name = name.replace("-", "_")
        if name not in fields:
            raise ValueError(f"{cls.name} has no parameter {name!r}; parameters: {', '.join(fields)}")
        if not value:
            if i + 1 >= len(extra):
                raise ValueError(f"--{name} needs a value")
            value, i = extra[i + 1], i + 1
        out[name] = _literal(value)
        i += 1
    return out


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m reference_impls",
        description="Reference implementations of efficient LVLM inference techniques.",
    )
    sub = top.add_subparsers(dest="command", required=True)
    lst = sub.add_parser("list", help="print the registry of techniques")
    lst.add_argument("--markdown", action="store_true", help="a Markdown table")
    sub.add_parser("readme", help="rewrite the generated registry table of reference_impls/README.md")
    run = sub.add_parser(
        "run",
        help="generate with and without a technique on a local checkpoint",
        description="Technique parameters are flags named after its fields, e.g. --budget 0.25.",
    )
    run.add_argument("--model", required=True, help="a local folder holding a Hugging Face checkpoint")
    run.add_argument("--technique", required=True, help="a registry name (python -m reference_impls list)")
    run.add_argument("--prompt", default="", help="the text prompt (needs the folder's processor or tokenizer)")
    run.add_argument("--image", action="append", default=[], help="an image file (repeatable; needs Pillow)")
    run.add_argument("--input-ids", default=None, help="the prompt as space-separated token ids (no processor)")
    run.add_argument("--max-new-tokens", type=int, default=32)
    run.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    run.add_argument("--warmup", type=int, default=1, help="unmeasured generations before timing (default 1)")
    run.add_argument("--dtype", default=None, choices=[None, "float32", "bfloat16", "float16"])
    run.add_argument("--help-technique", action="store_true", help="list the technique's parameters and exit")
    return top


def main(argv=None) -> int:
    args, extra = parser().parse_known_args(argv)
    if args.command == "list":
        if extra:
            print(f"error: unexpected arguments {' '.join(extra)}", file=sys.stderr)
            return 2
        print(registry.table(markdown=args.markdown))
        return 0
    if args.command == "readme":
        changed = write_readme()
        print(f"{README} {'rewritten' if changed else 'up to date'}")
        return 0
    try:
        return run(args, extra)
    except (ValueError, FileNotFoundError, OSError, ImportError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------------------------------------------ readme
def _readme_path():
    from pathlib import Path

    return Path(__file__).resolve().parent / "README.md"


README = "reference_impls/README.md"
BEGIN, END = "<!-- BEGIN GENERATED: registry -->", "<!-- END GENERATED: registry -->"


def readme_text(current: str) -> str:
    """``current`` with the generated registry section replaced by the registry's Markdown table."""
    head, sep, rest = current.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise ValueError(f"{README}: the markers {BEGIN} / {END} are missing")
    body = (
        registry.table(markdown=True) + "\n\n_Generated by `python -m reference_impls readme` from "
        "`reference_impls/registry.py`; do not edit by hand._"
    )
    return f"{head}{BEGIN}\n{body}\n{END}{tail}"


def write_readme() -> bool:
    """Rewrite the README's registry section (temporary file, then rename); True when it changed."""
    import os

    path = _readme_path()
    current = path.read_text(encoding="utf-8")
    new = readme_text(current)
    if new == current:
        return False
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, path)
    return True


# --------------------------------------------------------------------------------------------------------- run
def load(path: str, device: str, dtype):
    """(model, processor or tokenizer or None) from a local folder; ValueError for unsupported architectures."""
    from pathlib import Path

    import transformers

    if not Path(path).is_dir():
        raise FileNotFoundError(f"--model {path}: no such folder")
    transformers.utils.logging.disable_progress_bar()
    config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    arch = (getattr(config, "architectures", None) or [""])[0]
    if arch not in registry.HF_CLASSES:
        raise ValueError(
            f"--model {path}: architecture {arch or type(config).__name__} is not supported; "
            f"supported: {', '.join(registry.HF_CLASSES)}"
        )
    cls = getattr(transformers, arch)
    kw = {"local_files_only": True}
    if dtype is not None:
        kw["dtype"] = dtype
    model = cls.from_pretrained(path, **kw).to(device).eval()
    processor = None
    files = (
        "tokenizer.json",
        "tokenizer_config.json",
        "tokenizer.model",
        "vocab.json",
        "processor_config.json",
        "preprocessor_config.json",
    )
    if not any((Path(path) / name).is_file() for name in files):
        return model, None
    for loader in (transformers.AutoProcessor, transformers.AutoTokenizer):
        try:
            processor = loader.from_pretrained(path, local_files_only=True)
            break
        except (OSError, ValueError, TypeError, KeyError, ImportError):
            continue
    return model, processor


def _processor_inputs(model, processor, args, device):
    import torch

    tokenizer = getattr(processor, "tokenizer", processor)
    if not args.image:
        if processor is None:
            raise ValueError("this folder has no processor or tokenizer: pass --input-ids")
        return dict(tokenizer(args.prompt, return_tensors="pt")), 0
    if not hasattr(processor, "image_processor"):
        raise ValueError("--image needs the folder's processor (tokenizer + image processor)")
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("--image needs Pillow (pip install pillow)") from None
    images = [Image.open(p).convert("RGB") for p in args.image]
    token = getattr(processor, "image_token", "<image>")
    text = args.prompt
    if text.count(token) < len(images):
        text = token * (len(images) - text.count(token)) + text
    inputs = processor(text=[text], images=images, return_tensors="pt")
    return {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}, len(images)


def build_inputs(model, processor, args, technique, host) -> dict:
    import torch

    device = args.device
    if args.input_ids is not None:
        if args.image:
            raise ValueError("--input-ids takes no --image (image inputs need the folder's processor)")
        ids = torch.tensor([[int(t) for t in args.input_ids.split()]])
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    else:
        inputs, n_images = _processor_inputs(model, processor, args, device)
        if technique.stage == "encoder" and host.name == "llava" and n_images:
            from reference_impls.encode.visionzip import VisionZip

            image_id = model.config.image_token_id
            full = int((inputs["input_ids"] == image_id).sum()) // n_images
            short = (
                technique.image_tokens(model)
                if hasattr(technique, "image_tokens")
                else technique.tokens_per_image(full)
            )
            inputs["input_ids"], inputs["attention_mask"] = VisionZip.shrink_image_placeholders(
                inputs["input_ids"], full, short, image_id, inputs.get("attention_mask")
            )
    dtype = next(model.parameters()).dtype
    return {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items()}


class Profile:
    """Forward hooks timing the vision encoder and each language-model call, recording the prefill's width and the
    cache of the last call."""

    def __init__(self, model, host):
        import torch

        self.model, self.host, self.torch = model, host, torch
        self.vision_ms, self.lm_ms, self.prefill_tokens, self.cache = 0.0, [], None, None
        self._handles = []
        self._t0 = {}
        vision = None
        for holder in (getattr(model, "model", None), model):
            for attr in ("vision_tower", "visual"):
                vision = vision or getattr(holder, attr, None)
        self.has_vision = vision is not None
        if vision is not None:
            self._timed(vision, "vision")
        self._timed(host.lm, "lm")

    def _sync(self):
        if self.torch.cuda.is_available():
            self.torch.cuda.synchronize()

    def _timed(self, module, name):
        def pre(mod, args, kwargs):
            self._sync()
            self._t0[name] = time.perf_counter()
            if name == "lm":
                self.cache = kwargs.get("cache", kwargs.get("past_key_values"))
                x = kwargs.get("inputs_embeds")
                x = x if x is not None else kwargs.get("input_ids", args[0] if args else None)
                if not self.lm_ms:
                    mask = kwargs.get("attention_mask")
                    valid = (
                        mask.sum(1).tolist()
                        if isinstance(mask, self.torch.Tensor) and mask.dim() == 2
                        else [x.shape[1]] * x.shape[0]
                    )
                    self.prefill_tokens = valid

        def post(mod, args, kwargs, out):
            self._sync()
            ms = (time.perf_counter() - self._t0.pop(name)) * 1e3
            if name == "vision":
                self.vision_ms += ms
            else:
                self.lm_ms.append(ms)

        self._handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        self._handles.append(module.register_forward_hook(post, with_kwargs=True))

    def remove(self):
        for h in self._handles:
            h.remove()

    def kv_bytes(self, stats=None) -> int | None:
        if stats is not None and stats.kv_bytes is not None:
            return int(stats.kv_bytes)
        layers = getattr(self.cache, "layers", None)
        if not layers:
            return None
        total = 0
        for layer in layers:
            for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                if isinstance(t, self.torch.Tensor):
                    total += t.numel() * t.element_size()
        return total


def _generate(model, inputs, max_new_tokens, host, applied=None) -> dict:
    import torch

    profile = Profile(model, host)
    try:
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                **inputs, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0
            )
        total = (time.perf_counter() - start) * 1e3
    finally:
        profile.remove()
    stats = applied.stats if applied is not None else None
    layers = host.n_layers
    if stats is not None and stats.layer_tokens is not None and stats.prefills:
        per_layer = stats.layer_tokens[:, 0].tolist()
    else:
        per_layer = [int(profile.prefill_tokens[0])] * layers
    lm = profile.lm_ms
    vision_ms = profile.vision_ms if profile.has_vision else None
    return dict(
        ids=out[0, inputs["input_ids"].shape[1] :].tolist(),
        total_ms=total,
        vision_ms=vision_ms,
        prefill_ms=lm[0] if lm else 0.0,
        decode_ms=(sum(lm[1:]) / max(len(lm) - 1, 1)) if len(lm) > 1 else 0.0,
        tokens=per_layer,
        kv_bytes=profile.kv_bytes(stats),
    )


def run(args, extra) -> int:
    entry = registry.get(args.technique)
    cls = registry.load(entry)
    if not isinstance(cls, type) or not dataclasses.is_dataclass(cls) or not entry.hosts:
        raise ValueError(f"{entry.name} is not applied to a model ({entry.note or 'functions only'})")
    if args.help_technique:
        for f in dataclasses.fields(cls):
            if f.init:
                default = f.default if f.default is not dataclasses.MISSING else "(required)"
                print(f"--{f.name.replace('_', '-')}  default {default!r}")
        return 0
    technique = cls(**technique_parameters(cls, extra))
    import torch

    from reference_impls.hosts import host_for

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype) if args.dtype else None
    model, processor = load(args.model, args.device, dtype)
    host = host_for(model)
    applied = technique(model)  # checks the host before anything runs
    plain_inputs = build_inputs(model, processor, args, _NoTechnique(), host)
    inputs = build_inputs(model, processor, args, technique, host)
    for _ in range(args.warmup):
        _generate(model, plain_inputs, args.max_new_tokens, host)
    base = _generate(model, plain_inputs, args.max_new_tokens, host)
    with applied:
        res = _generate(model, inputs, args.max_new_tokens, host, applied)
    tokenizer = getattr(processor, "tokenizer", processor)

    def text(ids):
        return (
            repr(tokenizer.decode(ids, skip_special_tokens=True)) if tokenizer is not None else " ".join(map(str, ids))
        )

    print(
        f"model: {type(model).__name__} ({host.name}, {host.attn_impl}, {next(model.parameters()).dtype}, "
        f"{args.device})   technique: {technique}"
    )
    print(f"  unmodified output: {text(base['ids'])}")
    print(f"  {entry.name} output: {text(res['ids'])}")
    rows = [
        ("vision encoder (ms)", "vision_ms", "{:.2f}"),
        ("prefill (ms)", "prefill_ms", "{:.2f}"),
        ("decode (ms / token)", "decode_ms", "{:.3f}"),
        ("total generate (ms)", "total_ms", "{:.2f}"),
        ("tokens per layer (row 0)", "tokens", "{}"),
        ("KV bytes", "kv_bytes", "{}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"  {'':{width}}  {'unmodified':>16}  {entry.name:>16}")
    for label, key, fmt in rows:
        a, b = base[key], res[key]
        a = "-" if a is None else fmt.format(_short(a))
        b = "-" if b is None else fmt.format(_short(b))
        print(f"  {label:{width}}  {a:>16}  {b:>16}")
    return 0


class _NoTechnique:
    stage = ""


def _short(value):
    if isinstance(value, list) and len(value) > 1 and len(set(value)) == 1:
        return f"{value[0]} x{len(value)}"
    return value
