"""The reconciliation report: rendered from the entries' disagreements, deterministic, safe Markdown."""

from __future__ import annotations

import subprocess
import sys

from tests.tools._entries import entry
from tools.catalogue.entries import build_paper
from tools.catalogue.paths import ROOT
from tools.outputs.reconcile import render_reconciliation


def _catalogue_with_disagreements():
    fastv = build_paper(
        entry(
            disagreements=[
                {
                    "field": "title",
                    "values": {
                        "owner/list-a:README.md@abcdef1": "FastV: an image is worth 1/2 tokens",
                        "https://arxiv.org/abs/2403.06764": "An Image is Worth 1/2 Tokens After Layer 2",
                    },
                    "kept": "An Image is Worth 1/2 Tokens After Layer 2",
                    "why": "the arXiv page is the authority",
                },
                {
                    "field": "venue",
                    "values": {
                        "owner/list-a:README.md@abcdef1": "arXiv",
                        "https://arxiv.org/abs/2403.06764": "ECCV 2024",
                    },
                    "kept": "ECCV 2024",
                    "why": "the authors state the acceptance",
                },
            ]
        )
    )
    other = build_paper(
        entry(
            id="duplicated-method-2024",
            arxiv="2401.00001",
            title="A Duplicated Method",
            paper_url="https://arxiv.org/abs/2401.00001",
            disagreements=[
                {
                    "field": "title",
                    "values": {
                        "owner/list-a:README.md@abcdef1": "Duplicated method",
                        "owner/list-b:README.md@abcdef2": "A Duplicated Method",
                    },
                    "kept": "A Duplicated Method",
                    "why": "listed twice under two titles: one paper",
                },
            ],
        )
    )
    return {p.id: p for p in (fastv, other)}


def test_report_lists_every_disagreement(tmp_path):
    catalogue = _catalogue_with_disagreements()
    text = render_reconciliation(catalogue, paper_link=lambda pid: f"papers/{pid}/")
    total = sum(len(p.disagreements) for p in catalogue.values())
    # one table row per disagreement (plus one per merged pair in its own section)
    merged = sum(1 for p in catalogue.values() for d in p.disagreements if "listed twice" in d.why)
    assert merged == 1
    assert text.count("\n| [") == total + merged
    assert "](papers/fastv-2024/) `fastv-2024`" in text
    assert "## Rows merged as one paper" in text and "## Titles" in text and "## Venues" in text
    assert "`fastv-2024`" in text and "`duplicated-method-2024`" in text
    # list sources are shown as lists, pages as links
    assert "list `owner/list-a`" in text and "[arxiv.org](https://arxiv.org/abs/2403.06764)" in text
    # order of input does not matter
    assert render_reconciliation(list(catalogue.values())[::-1], paper_link=lambda pid: f"papers/{pid}/") == text
    assert "](papers/" not in render_reconciliation(catalogue)  # no links unless the caller says where pages are


def test_report_escapes_table_syntax():
    paper = build_paper(
        entry(
            title="A | B <script> title",
            disagreements=[
                {
                    "field": "title",
                    "values": {"owner/repo:README.md@abcdef1": "A | B", "https://x.org/p": "C"},
                    "kept": "A | B <script> title",
                    "why": "because | reasons",
                }
            ],
        )
    )
    text = render_reconciliation([paper])
    row = next(line for line in text.splitlines() if line.startswith("| FastV"))
    assert "A &#124; B &#60;script&#62; title" in row and "because &#124; reasons" in row
    assert row.count(" | ") == 3  # exactly four cells


def test_report_without_disagreements_says_so():
    text = render_reconciliation([build_paper(entry())])
    assert "the sources agree on every recorded fact" in text and "## " not in text


def test_reconcile_command_writes_the_report_of_the_catalogue(tmp_path):
    out = tmp_path / "reconciliation.md"
    result = subprocess.run(
        [sys.executable, "-m", "tools", "reconcile", "--output", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Reconciliation report")
    assert "## Venues" in text


def test_standalone_report_escapes_hostile_titles():
    import datetime as dt

    from tests.tools._entries import entry
    from tools.catalogue.schema import Paper
    from tools.catalogue.taxonomy import load_taxonomy
    from tools.outputs.reconcile import render_reconciliation

    data = entry(
        title="[x](javascript:alert(1)) <img src=x onerror=alert(1)>",
        disagreements=[
            {
                "field": "title",
                "values": {"https://a.org/p": "[y](javascript:alert(2))", "o/list:README.md@abcdef1": "Plain"},
                "kept": "Plain",
                "why": "the arXiv page",
            }
        ],
        last_verified=dt.date(2026, 11, 21),
    )
    paper = Paper.model_validate(data, context={"taxonomy": load_taxonomy()})
    text = render_reconciliation([paper])
    assert "javascript:" not in text.replace("javascript&#58;", "")
    assert "](javascript" not in text and "<img" not in text
