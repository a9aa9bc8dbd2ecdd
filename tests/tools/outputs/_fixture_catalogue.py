"""A small fixture catalogue for the site tests: a few ordinary papers across stages, hostile ones whose text tries
to become HTML, Markdown, Jinja or BibTeX syntax, a title with a bidirectional override, decoys for search ranking
(a short name that starts like FastV; summaries that mention FastV), and claims on a shared model for the results
page (two papers report different baseline scores for the same model and benchmark). Synthetic test data: the
decoy papers do not exist."""

from __future__ import annotations

import datetime as dt

from tests.tools._entries import entry
from tools.catalogue.schema import Paper
from tools.catalogue.taxonomy import load_taxonomy

XSS_IMG = "<img src=x onerror=alert(1)>"
HOSTILE_TITLE = f"{XSS_IMG} </script> {{{{ 7*7 }}}} {{% raw %}} [click](javascript:alert(2)) *em* _u_ | 100% $x$ #1 ~y^"
HOSTILE_SUMMARY = (
    "<script>alert(3)</script> and {{ 7*7 }} with {% endraw %} and <svg onload=alert(4)> stay text. "
    "A second sentence with `code` and \\emph{latex}."
)
LONG_TITLE_BYTES = 10_000
REPO_URL = "https://github.com/example-org/lvlm-atlas"  # the repository the fixture site links to
BIDI_TITLE = "Right\u202eto\u2066left\u2069 overrides stay out of the page"
UNDERSCORE_URL = "https://openaccess.example.org/content/Lee_Fast_Variant_paper.html"
UNDERSCORE_DOI = "10.1234/fast_variant.2025_7"
UNIQUE_AUTHOR = "Senqiao Yang"  # one paper (VisionZip); no other fixture author shares a part of the name


def _paper(tax, **overrides) -> Paper:
    return Paper.model_validate(entry(**overrides), context={"taxonomy": tax})


def fixture_papers() -> dict[str, Paper]:
    tax = load_taxonomy()
    papers = [
        _paper(tax, reference_impls=["reference_impls.prefill.fastv"]),  # FastV (prefill.density, ECCV 2024)
        _paper(
            tax,
            id="snapkv-2024",
            title="SnapKV: LLM Knows What You are Looking for Before Generation",
            short_name="SnapKV",
            authors=["Yuhong Li", "Yingbing Huang"],
            venue="NeurIPS 2024",
            arxiv="2404.14469",
            first_version=dt.date(2024, 4, 22),
            paper_url="https://arxiv.org/abs/2404.14469",
            code=[{"url": "https://github.com/FasterDecoding/SnapKV", "official": True}],
            placement={"cells": ["decode.memory"], "techniques": ["kv_eviction"], "method": "curated"},
            modality=["text"],
            summary="Selects the KV positions each head attends to from an observation window.",
            claims=[
                {
                    "metric": "decode_speedup",
                    "value": 3.6,
                    "unit": "x",
                    "where": "abstract",
                    "source": "https://arxiv.org/abs/2404.14469",
                }
            ],
        ),
        _paper(
            tax,
            id="keyframe-selector-2025",
            title="Müller and Łukasiewicz: Selecting Keyframes for Video-LLMs",
            short_name=None,
            authors=["Jürgen Müller", "Łukasz Łukasiewicz", "Nguyễn Văn An"],
            authors_status="complete",
            venue="arXiv",
            arxiv="2502.01234",
            first_version=dt.date(2025, 2, 3),
            paper_url=None,
            code=[],
            modality=["video"],
            training="training-aware",
            placement={"cells": ["encode.density"], "techniques": ["keyframe_selection"], "method": "curated"},
            claims=[
                {
                    "metric": "visual_tokens_retained",
                    "value": 25,
                    "unit": "%",
                    "where": "Table 2",
                    "source": "https://arxiv.org/abs/2502.01234",
                },
                {
                    "metric": "prefill_speedup",
                    "value": 2.5,
                    "unit": "x",
                    "where": "Table 2",
                    "source": "https://arxiv.org/abs/2502.01234",
                },
            ],
        ),
        _paper(
            tax,
            id="chen-collision-2024",
            title="Image Tokens Matter Less Than You Think",
            short_name=None,
            authors=["Liang Chen"],
            arxiv="2401.00002",
            venue="arXiv",
            first_version=dt.date(2024, 1, 2),
            paper_url=None,
            code=[],
            claims=[],
        ),
        _paper(
            tax,
            id="hostile-2025",
            title=HOSTILE_TITLE,
            short_name="<b>Bold</b>{{x}}",
            authors=["Robert'); DROP <i>Tables</i>", "A & B {C}"],
            venue="CVPR 2025",
            arxiv="2503.00001",
            first_version=dt.date(2025, 3, 1),
            paper_url="https://example.org/a?b=1&c=(2)",
            code=[{"url": "https://github.com/x/y?<script>", "official": False}],
            summary=HOSTILE_SUMMARY,
            placement={
                "cells": ["prefill.density"],
                "techniques": ["token_pruning"],
                "method": "curated",
                "note": "<iframe src=javascript:alert(5)> {{ 7*7 }}",
            },
            disagreements=[
                {
                    "field": "title",
                    "values": {
                        "https://example.org/list": HOSTILE_TITLE,
                        "a/b:README.md@abcdef1": "[x](javascript:alert(6))",
                    },
                    "kept": HOSTILE_TITLE,
                    "why": "<b>why</b> {{ 7*7 }} [y](javascript:alert(7))",
                }
            ],
        ),
        _paper(
            tax,
            id="visionzip-2025",
            title="VisionZip: Longer is Better but Not Necessary in Vision Language Models",
            short_name="VisionZip",
            authors=[UNIQUE_AUTHOR, "Yukang Chen", "Zhuotao Tian", "Chengyao Wang"],
            venue="CVPR 2025",
            arxiv="2412.04467",
            first_version=dt.date(2024, 12, 5),
            paper_url=None,
            modality=["image"],
            code=[{"url": "https://github.com/dvlab-research/VisionZip", "official": True}],
            placement={"cells": ["encode.density"], "techniques": ["token_pruning"], "method": "curated"},
            summary="Keeps a few dominant and contextual visual tokens before the language model; compared with "
            "FastV it selects in the vision encoder.",
            claims=[
                {
                    "metric": "performance_retained",
                    "value": 94,
                    "unit": "%",
                    "where": "Table 1",
                    "source": "https://arxiv.org/abs/2412.04467",
                    "setting": {
                        "model": "LLaVA-1.5-7B",
                        "budget": "64 of 576 visual tokens",
                        "benchmark": "GQA",
                        "baseline_score": 61.9,
                    },
                },
                {
                    "metric": "prefill_speedup",
                    "value": 8,
                    "unit": "x",
                    "where": "abstract",
                    "source": "https://arxiv.org/abs/2412.04467",
                    "setting": {"model": "LLaVA-NeXT"},
                },
            ],
        ),
        _paper(
            tax,
            id="fast-variant-2025",
            title="Fast Variant Pruning for Multimodal Models",
            short_name="FastVariant",
            authors=["Min Lee", "Ana Ruiz"],
            venue="arXiv",
            arxiv=None,
            doi=UNDERSCORE_DOI,
            first_version=dt.date(2025, 6, 1),
            year=2025,
            paper_url=UNDERSCORE_URL,
            code=[],
            modality=["image"],
            placement={"cells": ["encode.density"], "techniques": ["token_merging"], "method": "curated"},
            summary="Improves on FastV: merges instead of dropping; FastV and FastV-style pruning are the baselines.",
            claims=[
                {
                    "metric": "performance_retained",
                    "value": 96.5,
                    "unit": "%",
                    "where": "Table 3",
                    "source": UNDERSCORE_URL,
                    "setting": {
                        "model": "LLaVA-v1.5-7B",
                        "budget": "88.9% of visual tokens pruned",
                        "benchmark": "GQA",
                        "baseline_score": 62.0,
                    },
                }
            ],
        ),
        _paper(
            tax,
            id="bidi-2025",
            title=BIDI_TITLE,
            short_name=None,
            authors=["Dana Ortiz"],
            venue="arXiv",
            arxiv="2505.00003",
            first_version=dt.date(2025, 5, 2),
            paper_url=None,
            code=[],
            modality=["text"],
            placement={"cells": ["decode.attention"], "techniques": ["sparse_attention"], "method": "curated"},
            claims=[],
        ),
    ]
    long_title = _paper(
        tax,
        id="long-title-2025",
        arxiv="2503.00002",
        short_name=None,
        first_version=None,
        summary=HOSTILE_SUMMARY,
        code=[],
        claims=[],
    )
    # The validator caps titles at 400 characters; the site must still cope with a 10 kB one (model_copy skips it).
    filler = (HOSTILE_TITLE + " ") * (LONG_TITLE_BYTES // len(HOSTILE_TITLE) + 1)
    papers.append(long_title.model_copy(update={"title": filler[:LONG_TITLE_BYTES].strip()}))
    return {p.id: p for p in papers}
