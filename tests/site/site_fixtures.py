"""A small fixture catalogue for the site tests: a few ordinary papers across stages, and hostile ones whose text
tries to become HTML, Markdown, Jinja or BibTeX syntax."""
from __future__ import annotations

import datetime as dt

from tests.catalogue.helpers import entry
from tools.schema import Paper
from tools.taxonomy import load_taxonomy

XSS_IMG = "<img src=x onerror=alert(1)>"
HOSTILE_TITLE = f"{XSS_IMG} </script> {{{{ 7*7 }}}} {{% raw %}} [click](javascript:alert(2)) *em* _u_ | 100% $x$ #1 ~y^"
HOSTILE_SUMMARY = ("<script>alert(3)</script> and {{ 7*7 }} with {% endraw %} and <svg onload=alert(4)> stay text. "
                   "A second sentence with `code` and \\emph{latex}.")
LONG_TITLE_BYTES = 10_000


def _paper(tax, **overrides) -> Paper:
    return Paper.model_validate(entry(**overrides), context={"taxonomy": tax})


def fixture_papers() -> dict[str, Paper]:
    tax = load_taxonomy()
    papers = [
        _paper(tax, reference_impls=["reference_impls.prefill.fastv"]),  # FastV (prefill.density, ECCV 2024)
        _paper(tax, id="snapkv-2024", title="SnapKV: LLM Knows What You are Looking for Before Generation",
               short_name="SnapKV", authors=["Yuhong Li", "Yingbing Huang"], venue="NeurIPS 2024", arxiv="2404.14469",
               first_version=dt.date(2024, 4, 22), paper_url="https://arxiv.org/abs/2404.14469",
               code=[{"url": "https://github.com/FasterDecoding/SnapKV", "official": True}],
               placement={"cells": ["decode.memory"], "techniques": ["kv_eviction"], "method": "curated"},
               modality=["text"], summary="Selects the KV positions each head attends to from an observation window.",
               claims=[{"metric": "decode_speedup", "value": 3.6, "unit": "x", "where": "abstract",
                        "source": "https://arxiv.org/abs/2404.14469"}]),
        _paper(tax, id="keyframe-selector-2025", title="Müller and Łukasiewicz: Selecting Keyframes for Video-LLMs",
               short_name=None, authors=["Jürgen Müller", "Łukasz Łukasiewicz", "Nguyễn Văn An"],
               authors_status="complete", venue="arXiv", arxiv="2502.01234", first_version=dt.date(2025, 2, 3),
               paper_url=None, code=[], modality=["video"], training="training-aware",
               placement={"cells": ["encode.density"], "techniques": ["keyframe_selection"], "method": "curated"},
               claims=[{"metric": "visual_tokens_retained", "value": 25, "unit": "%", "where": "Table 2",
                        "source": "https://arxiv.org/abs/2502.01234"},
                       {"metric": "prefill_speedup", "value": 2.5, "unit": "x", "where": "Table 2",
                        "source": "https://arxiv.org/abs/2502.01234"}]),
        _paper(tax, id="chen-collision-2024", title="Image Tokens Matter Less Than You Think",
               short_name=None, authors=["Liang Chen"], arxiv="2401.00002", venue="arXiv",
               first_version=dt.date(2024, 1, 2), paper_url=None, code=[], claims=[]),
        _paper(tax, id="hostile-2025", title=HOSTILE_TITLE, short_name="<b>Bold</b>{{x}}",
               authors=["Robert'); DROP <i>Tables</i>", "A & B {C}"], venue="CVPR 2025", arxiv="2503.00001",
               first_version=dt.date(2025, 3, 1), paper_url="https://example.org/a?b=1&c=(2)",
               code=[{"url": "https://github.com/x/y?<script>", "official": False}], summary=HOSTILE_SUMMARY,
               placement={"cells": ["prefill.density"], "techniques": ["token_pruning"], "method": "curated",
                          "note": "<iframe src=javascript:alert(5)> {{ 7*7 }}"},
               disagreements=[{"field": "title", "values": {"https://example.org/list": HOSTILE_TITLE,
                                                             "a/b:README.md@abcdef1": "[x](javascript:alert(6))"},
                               "kept": HOSTILE_TITLE, "why": "<b>why</b> {{ 7*7 }} [y](javascript:alert(7))"}]),
    ]
    long_title = _paper(tax, id="long-title-2025", arxiv="2503.00002", short_name=None, first_version=None,
                        summary=HOSTILE_SUMMARY, code=[], claims=[])
    # The validator caps titles at 400 characters; the site must still cope with a 10 kB one (model_copy skips it).
    filler = (HOSTILE_TITLE + " ") * (LONG_TITLE_BYTES // len(HOSTILE_TITLE) + 1)
    papers.append(long_title.model_copy(update={"title": filler[:LONG_TITLE_BYTES].strip()}))
    return {p.id: p for p in papers}
