"""The reconciliation report: rendered from the entries' disagreements, deterministic, safe Markdown."""
from __future__ import annotations

import subprocess
import sys

from tests.catalogue.helpers import entry
from tests.catalogue.test_importer import run_import
from tools.entries import build_paper
from tools.paths import ROOT
from tools.reconcile import render_reconciliation
from tools.validate import paper_files, validate_catalogue


def test_report_lists_every_disagreement_of_an_imported_catalogue(tmp_path):
    papers = tmp_path / "papers"
    run_import(papers)
    catalogue = validate_catalogue(paper_files(papers)).papers
    text = render_reconciliation(catalogue, paper_link=lambda pid: f"papers/{pid}/")
    total = sum(len(p.disagreements) for p in catalogue.values())
    assert total >= 4
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
    paper = build_paper(entry(
        title="A | B <script> title",
        disagreements=[{"field": "title", "values": {"owner/repo:README.md@abcdef1": "A | B", "https://x.org/p": "C"},
                        "kept": "A | B <script> title", "why": "because | reasons"}],
    ))
    text = render_reconciliation([paper])
    row = next(line for line in text.splitlines() if line.startswith("| FastV"))
    assert "A &#124; B &#60;script&#62; title" in row and "because &#124; reasons" in row
    assert row.count(" | ") == 3  # exactly four cells


def test_report_without_disagreements_says_so():
    text = render_reconciliation([build_paper(entry())])
    assert "the sources agree on every recorded fact" in text and "## " not in text


def test_reconcile_command_writes_the_report_of_the_catalogue(tmp_path):
    out = tmp_path / "reconciliation.md"
    result = subprocess.run([sys.executable, "-m", "tools", "reconcile", "--output", str(out)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Reconciliation report")
    assert "## Venues" in text


def test_standalone_report_escapes_hostile_titles():
    import datetime as dt

    from tests.catalogue.helpers import entry
    from tools.reconcile import render_reconciliation
    from tools.schema import Paper
    from tools.taxonomy import load_taxonomy

    data = entry(title="[x](javascript:alert(1)) <img src=x onerror=alert(1)>", disagreements=[
        {"field": "title", "values": {"https://a.org/p": "[y](javascript:alert(2))", "o/list:README.md@abcdef1": "Plain"},
         "kept": "Plain",
         "why": "the arXiv page"}], last_verified=dt.date(2026, 11, 21))
    paper = Paper.model_validate(data, context={"taxonomy": load_taxonomy()})
    text = render_reconciliation([paper])
    assert "javascript:" not in text.replace("javascript&#58;", "")
    assert "](javascript" not in text and "<img" not in text
