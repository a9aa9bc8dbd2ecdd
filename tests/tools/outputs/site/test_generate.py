"""Page generation: the docs tree, the strict build, inert hostile text, the explorer data, plots, mkdocs.yml and the
README section."""

from __future__ import annotations

import html
import json
import os
import re

import pytest
import yaml

from tests.tools.outputs._fixture_catalogue import HOSTILE_SUMMARY, HOSTILE_TITLE, LONG_TITLE_BYTES, fixture_papers
from tools import cli
from tools.catalogue.paths import ROOT
from tools.catalogue.taxonomy import load_taxonomy
from tools.outputs.readme import BEGIN, END, MarkersMissing, render_matrix, update_readme
from tools.outputs.site.generate import NAV, render_mkdocs_config
from tools.outputs.site.markup import rel, tags_allowed

LIVE_MARKUP = re.compile(r"<(img|script|svg|iframe|b|i)[\s>](?![^<]*atlas-plot)", re.I)


def _text(page_html: str) -> str:
    """Visible text of an HTML page (tags dropped, entities decoded)."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", page_html, flags=re.S | re.I)
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


def test_mkdocs_yml_is_fresh_and_allows_exactly_the_taxonomy_ids():
    assert cli.main(["site", "--check"]) == 0, "mkdocs.yml is stale: run `python -m tools site`"
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
    tax = load_taxonomy()
    tags = next(p["tags"] for p in config["plugins"] if isinstance(p, dict) and "tags" in p)
    assert tags["tags_allowed"] == tags_allowed(tax)
    assert {t.id for t in tax.techniques} | set(tax.stage_ids) | set(tax.axis_ids) <= set(tags["tags_allowed"])
    assert [p if isinstance(p, str) else next(iter(p)) for p in config["plugins"]] == ["search", "tags"]
    assert config["theme"]["font"] == "false"
    assert len(config["nav"]) == len(NAV)
    assert render_mkdocs_config(tax) == (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


def test_tree_has_a_page_per_stage_axis_cell_technique_and_paper(built_site):
    tax = load_taxonomy()
    docs, html_dir = built_site.docs, built_site.site
    for s in tax.stage_ids:
        assert (html_dir / "stages" / f"{s}.html").is_file()
    for a in tax.axis_ids:
        assert (html_dir / "axes" / f"{a}.html").is_file()
    for cell in tax.cell_ids:
        assert (html_dir / "cells" / f"{cell.replace('.', '-')}.html").is_file()
    for t in tax.techniques:
        assert (html_dir / "techniques" / f"{t.id}.html").is_file()
    for pid in built_site.papers:
        assert (html_dir / "papers" / f"{pid}.html").is_file()
        assert (html_dir / "bib" / f"{pid}.bib").is_file()  # one .bib per paper
    for page in (
        "index",
        "explorer",
        "trends",
        "taxonomy",
        "reconciliation",
        "frontiers",
        "tags",
        "contributing",
        "reference-implementations",
    ):
        assert (html_dir / f"{page}.html").is_file(), page
    assert (html_dir / "data" / "papers.json").is_file() and (html_dir / "atlas.bib").is_file()
    assert (docs / "index.md").is_file()


def test_home_has_the_matrix_with_counts_and_links(built_site):
    index = (built_site.docs / "index.md").read_text(encoding="utf-8")
    # prefill.density: FastV, chen-collision, the hostile and the long-title papers; decode.memory: SnapKV.
    assert "[4](cells/prefill-density.md)" in index
    assert "[1](cells/decode-memory.md)" in index
    assert "[0](cells/encode-memory.md)" in index
    assert "[Prefilling](stages/prefill.md)" in index and "Newest papers" in index and "How to contribute" in index


def test_no_network_resources_in_built_pages(built_site):
    for page in built_site.site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        for url in re.findall(r'<(?:script|link|img)\b[^>]*?(?:src|href)="([^"]+)"', text):
            assert not re.match(r"^(https?:)?//", url), f"{page.name} loads {url}"
        assert "fonts.googleapis" not in text and "fonts.gstatic" not in text


def test_hostile_text_is_inert_everywhere_in_the_built_site(built_site):
    for page in built_site.site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "<img src=x" not in text and "<script>alert" not in text, page
        assert not re.search(r"<svg onload|<iframe|<b>Bold|<i>Tables", text), page
        assert not re.search(r'href="\s*javascript:', text, re.I), page
    hostile = (built_site.site / "papers" / "hostile-2025.html").read_text(encoding="utf-8")
    visible = " ".join(_text(hostile).split())
    assert HOSTILE_TITLE in visible  # shown literally, Jinja/Markdown/HTML syntax included
    assert " ".join(HOSTILE_SUMMARY.split()) in visible
    assert "{{ 7*7 }}" in visible and "<iframe src=javascript:alert(5)>" in visible
    title = re.search(r"<title>(.*?)</title>", hostile, re.S).group(1)
    assert "<" not in title and html.unescape(title).startswith("<b>Bold</b>{{x}}: " + HOSTILE_TITLE)
    index = json.loads((built_site.site / "search" / "search_index.json").read_text(encoding="utf-8"))
    for doc in index["docs"]:
        for field in ("title", "text"):
            assert "<img src=x" not in doc[field] and "<script>" not in doc[field] and "<svg onload" not in doc[field]


def test_a_10kb_title_builds_and_shows_in_full(built_site):
    page = (built_site.site / "papers" / "long-title-2025.html").read_text(encoding="utf-8")
    title = built_site.papers["long-title-2025"].title
    assert len(title) >= LONG_TITLE_BYTES - 200
    assert title in " ".join(_text(page).split())


def test_paper_page_shows_metadata_claims_code_bibtex_and_related(built_site):
    page = (built_site.site / "papers" / "fastv-2024.html").read_text(encoding="utf-8")
    text = " ".join(_text(page).split())
    assert "ECCV 2024" in text and "Liang Chen" in text
    assert "FLOPs reduction" in text and "45%" in text and "LLaVA-1.5-13B" in text
    assert 'href="https://arxiv.org/abs/2403.06764">abstract</a>' in page  # where the claim is stated
    assert 'href="https://github.com/pkunlp-icler/FastV"' in page and "official" in text
    assert 'id="bibtex-fastv-2024"' in page and "@inproceedings{chen2024imageb," in text
    assert 'data-copy-target="bibtex-fastv-2024"' in page and 'href="../bib/fastv-2024.bib" download=' in page
    assert 'href="../atlas.bib"' in page
    assert "Placement" in text and "Claims" in text and "Related papers" in text
    related = page.split('id="related-papers"', 1)[1]
    assert 'href="hostile-2025.html"' in related and 'href="snapkv-2024.html"' not in related
    assert 'href="../cells/prefill-density.html"' in page and 'href="../techniques/token_pruning.html"' in page


def test_technique_and_cell_pages_list_their_papers(built_site):
    technique = (built_site.site / "techniques" / "kv_eviction.html").read_text(encoding="utf-8")
    assert 'href="../papers/snapkv-2024.html"' in technique and "fastv-2024" not in technique
    cell = (built_site.site / "cells" / "encode-density.html").read_text(encoding="utf-8")
    assert 'href="../papers/keyframe-selector-2025.html"' in cell and "snapkv-2024" not in cell


def test_explorer_data_is_plain_text(built_site):
    raw = (built_site.site / "data" / "papers.json").read_text(encoding="utf-8")
    assert "<" not in raw  # escaped as \u003c: inert even if it were ever inlined into HTML
    data = json.loads(raw)
    records = {r["id"]: r for r in data["papers"]}
    assert set(records) == set(built_site.papers)
    assert records["hostile-2025"]["title"] == HOSTILE_TITLE
    assert records["snapkv-2024"]["stages"] == ["decode"] and records["snapkv-2024"]["code"] is True
    assert records["keyframe-selector-2025"]["training"] == "training-aware"
    assert set(data["vocab"]["techniques"]) == {t.id for t in load_taxonomy().techniques}


def test_plots_are_inline_svg_following_the_theme(built_site):
    trends = (built_site.site / "trends.html").read_text(encoding="utf-8")
    svgs = re.findall(r"<svg\b.*?</svg>", trends, re.S)
    plots = [s for s in svgs if "atlas-plot-svg" in s]
    assert len(plots) == 2
    for svg in plots:
        assert "currentColor" in svg and "#010203" not in svg and "<script" not in svg
        assert "fill: #ffffff" not in svg.lower()  # no opaque white background
    ids = re.findall(r'\bid="([^"]+)"', "".join(plots))
    assert len(ids) == len(set(ids))  # two figures on one page without id clashes
    # the keyframe paper claims 25% of tokens retained and a 2.5x prefill speedup
    assert "keyframe-selector-2025" in trends and "25%" in _text(trends)


def test_relative_links():
    assert rel("papers/a.md", "cells/x.md") == "../cells/x.md"
    assert rel("index.md", "papers/a.md") == "papers/a.md"
    assert rel("papers/a.md", "papers/b.md") == "b.md"


def test_readme_section_is_replaced_and_nothing_else():
    papers, tax = fixture_papers(), load_taxonomy()
    text = f"# Title\n\nIntro.\n\n{BEGIN}\nold\n{END}\n\nAfter.\n"
    out = update_readme(text, papers, tax)
    assert out.startswith("# Title\n\nIntro.\n\n" + BEGIN + "\n") and out.endswith(END + "\n\nAfter.\n")
    assert "old" not in out and render_matrix(papers, tax) in out
    assert "[4](http://127.0.0.1:8000/cells/prefill-density.html)" in out
    assert update_readme(out, papers, tax) == out  # idempotent
    with pytest.raises(MarkersMissing):
        update_readme("# no markers\n", papers, tax)


def test_repository_readme_section_is_fresh():
    readme = ROOT / "README.md"
    if not readme.exists() or BEGIN not in readme.read_text(encoding="utf-8"):
        pytest.skip("README.md has no generated matrix section yet (the lead adds the markers)")
    assert cli.main(["readme", "--check"]) == 0, "README.md is stale: run `python -m tools readme`"


@pytest.mark.slow
def test_real_catalogue_builds_strictly(tmp_path):
    from tools.catalogue.validate import load_catalogue
    from tools.outputs.reconcile import render_reconciliation
    from tools.outputs.site.build import build_site
    from tools.outputs.site.generate import generate
    from tools.outputs.site.refimpls import RESULTS_DIR

    papers = load_catalogue()
    generated = generate(
        papers, load_taxonomy(), tmp_path / "docs", reconciliation=render_reconciliation, results_dir=RESULTS_DIR
    )
    build_site(tmp_path / "docs", tmp_path / "html", generated.paper_bibs, strict=True)
    assert len(list((tmp_path / "html" / "papers").glob("*.html"))) == len(papers)
    assert len(list((tmp_path / "html" / "bib").glob("*.bib"))) == len(papers)


def test_every_relative_link_in_the_built_site_resolves(built_site):
    """Raw HTML blocks are not checked by mkdocs: check every relative href/src of every page here."""
    root = built_site.site.resolve()
    broken = []
    for page in root.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        for url in re.findall(r'(?:href|src)="([^"]*)"', text):
            url = html.unescape(url)
            if not url or url.startswith(("#", "http://", "https://", "mailto:", "data:", "javascript:")):
                continue
            path = url.split("#", 1)[0].split("?", 1)[0]
            if not path:
                continue
            target = (root / path.lstrip("/") if path.startswith("/") else page.parent / path).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{page.relative_to(root)} -> {url}")
    assert broken == [], broken[:20]


def test_reference_implementation_is_described_from_its_source():
    from tools.outputs.site.refimpls import describe

    ref = describe("reference_impls.prefill.fastv")
    assert ref.path == "reference_impls/prefill/fastv.py"
    assert ref.summary.startswith("FastV (arXiv 2403.06764)")
    assert "tests/reference_impls/test_prefill_fastv.py" in ref.tests
    assert ref.import_line == "from reference_impls.prefill import fastv"
    missing = describe("reference_impls.nowhere.nothing")
    assert missing.path is None and missing.summary == "" and missing.tests == []
    technique = describe("reference_impls.prefill.fastv:FastV")
    assert technique.path and technique.help_command == (
        'PYTHONPATH=. python -c "from reference_impls.prefill.fastv import FastV; help(FastV)"'
    )


def test_the_run_lines_on_paper_pages_name_what_they_import():
    """Each paper page's `python -c "from ... import X; help(X)"` line, for every reference in the catalogue, run in
    one interpreter (help() itself replaced by a no-op: its argument must still resolve)."""
    import subprocess
    import sys

    pytest.importorskip("torch")
    from tools.catalogue.validate import load_catalogue
    from tools.outputs.site.refimpls import describe

    refs = sorted({r for p in load_catalogue().values() for r in p.reference_impls})
    assert refs
    lines = ["import builtins", "builtins.help = lambda thing: None  # the argument must still resolve"]
    lines += [describe(ref).help_command.split('python -c "', 1)[1].removesuffix('"') for ref in refs]
    script = "\n".join(lines)
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr[-2000:]


def test_paper_and_technique_pages_show_the_reference_implementation(built_site):
    page = (built_site.site / "papers" / "fastv-2024.html").read_text(encoding="utf-8")
    text = " ".join(_text(page).split())
    assert "reference_impls.prefill.fastv" in text and "FastV (arXiv 2403.06764)" in text
    assert "python -m pytest -q tests/reference_impls/test_prefill_fastv.py" in text
    technique = _text((built_site.site / "techniques" / "token_pruning.html").read_text(encoding="utf-8"))
    assert "reference_impls.prefill.fastv" in technique
    listing = _text((built_site.site / "reference-implementations.html").read_text(encoding="utf-8"))
    assert "reference_impls.prefill.fastv" in listing and "bench_fixture.json" in listing
    assert "<b>not bold</b>" in listing  # a result file's note is text too


def test_related_papers_match_the_plain_definition():
    """The bounded search (papers sharing a distinctive word, then groups of papers with the same techniques and
    modalities) gives exactly the plain score-every-paper-then-sort list, on the fixture and the real catalogue,
    and never lists the paper itself."""
    from tools.catalogue.validate import load_catalogue
    from tools.outputs.bibtex import catalogue_keys
    from tools.outputs.site.model import SiteModel

    tax = load_taxonomy()
    for papers in (fixture_papers(), load_catalogue()):
        model = SiteModel(papers, tax, catalogue_keys(papers))
        for pid in papers:
            for limit in (1, 3, 10):
                got = model.related(pid, limit)
                assert got == model._related_by_scoring_all(pid, limit), (pid, limit)
                assert pid not in got


def test_related_papers_are_the_most_similar_not_the_newest():
    """An old paper with the same technique, modality and wording outranks newer papers that only share the
    technique; a paper sharing only wording (no technique) is found too; nothing unrelated is listed."""
    import datetime as dt

    from tests.tools._entries import entry
    from tools.catalogue.schema import Paper
    from tools.outputs.bibtex import catalogue_keys
    from tools.outputs.site.model import SiteModel

    tax = load_taxonomy()

    def paper(pid, year, title, summary, techniques, cells, modality):
        return Paper.model_validate(
            entry(
                id=pid,
                title=title,
                short_name=None,
                summary=summary,
                arxiv=None,
                first_version=dt.date(year, 1, 1),
                year=year,
                venue="arXiv",
                paper_url=f"https://example.org/{pid}",
                claims=[],
                code=[],
                modality=modality,
                placement={"cells": cells, "techniques": techniques, "method": "curated"},
            ),
            context={"taxonomy": tax},
        )

    papers = [
        paper(
            "target-2025",
            2025,
            "Saliency-guided visual token pruning for video LLMs",
            "Prunes video tokens by temporal saliency scores.",
            ["token_pruning"],
            ["prefill.density"],
            ["video"],
        ),
        paper(
            "twin-2022",
            2022,
            "Temporal saliency pruning of video tokens",
            "Saliency scores decide which video tokens to prune.",
            ["token_pruning"],
            ["prefill.density"],
            ["video"],
        ),
        paper(
            "wording-only-2023",
            2023,
            "Temporal saliency for video retrieval",
            "Temporal saliency scores rank video clips.",
            ["efficient_reasoning"],
            ["decode.density"],
            ["video"],
        ),
        paper(
            "unrelated-2026",
            2026,
            "Quantised weights for chat models",
            "Stores the weights in four bits per value.",
            ["weight_quantization"],
            ["decode.memory"],
            ["text"],
        ),
    ] + [
        paper(
            f"newer-{i}-2026",
            2026,
            f"Generic method number {i}",
            "Something else entirely, with other words.",
            ["token_pruning"],
            ["prefill.density"],
            ["image"],
        )
        for i in range(12)
    ]
    model = SiteModel({p.id: p for p in papers}, tax, catalogue_keys(papers))
    related = model.related("target-2025")
    assert related[0] == "twin-2022"  # the oldest paper, and the most similar
    assert "wording-only-2023" in related and "unrelated-2026" not in related
    assert len(related) == 10 and related == model._related_by_scoring_all("target-2025")
    scores = [model.similarity("target-2025", o, model.text_similarity("target-2025").get(o, 0.0)) for o in related]
    assert scores == sorted(scores, reverse=True)


def test_tags_index_the_taxonomy_pages_not_the_papers(built_site):
    tags = (built_site.site / "tags.html").read_text(encoding="utf-8")
    assert 'href="techniques/token_pruning.html"' in tags and 'href="stages/prefill.html"' in tags
    assert "papers/" not in tags
    index = json.loads((built_site.site / "search" / "search_index.json").read_text(encoding="utf-8"))
    assert not any(doc["location"].startswith("tags.html") for doc in index["docs"])  # excluded from search
    assert any(doc["location"].startswith("papers/fastv-2024.html") for doc in index["docs"])


def test_front_matter_round_trips_any_text_through_mkdocs():
    """Front matter values (titles, the pre-rendered HTML of a paper page) reach page.meta unchanged: characters
    beyond the BMP, which JSON would write as surrogate escapes that YAML rejects, included."""
    from mkdocs.utils.meta import get_data

    from tools.outputs.site.markup import front_matter

    nasty = (
        'Emoji 😀, 𝒪(n) math, "quotes" \\ back\\slash, tab\tand\nnewline, NEL\x85 LS\u2028 PS\u2029 \ufeff\ufffe end'
    )
    html_block = f"<p>{nasty}</p>\n---\n<p>after a line of dashes</p>"
    text = front_matter("Title: 😀 <b>x</b>", ["prefill"], {"template": "paper.html", "atlas_html": html_block})
    body, meta = get_data(text + "# Body\n")
    assert meta["atlas_html"] == html_block and meta["template"] == "paper.html" and meta["tags"] == ["prefill"]
    assert html.unescape(meta["title"]) == "Title: 😀 <b>x</b>" and "<b>" not in meta["title"]
    assert body.strip() == "# Body"


def test_plot_ticks_are_round_and_cover_the_data():
    from tools.outputs.site.plots import nice_ticks

    assert nice_ticks(7.47) == [0, 2, 4, 6, 8]
    assert nice_ticks(114, whole=True) == [0, 20, 40, 60, 80, 100, 120]
    assert nice_ticks(1, whole=True) == [0, 1]  # counts: no 0.2 steps
    assert nice_ticks(0.3) == [0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    for top in (0.7, 3, 13, 99, 101, 2500):
        ticks = nice_ticks(top)
        assert ticks[0] == 0 and ticks[-1] >= top and len(ticks) <= 7


def test_plots_draw_every_paper_and_point(built_site):
    """Each stacked bar segment and each scatter point is drawn with its values in a <title>."""
    from tools.outputs.bibtex import catalogue_keys
    from tools.outputs.site.model import SiteModel
    from tools.outputs.site.plots import papers_per_quarter, speedup_vs_retained

    papers = built_site.papers
    model = SiteModel(papers, load_taxonomy(), catalogue_keys(papers))
    svg, facts = papers_per_quarter(model)
    drawn = [int(n) for n in re.findall(r"<rect [^>]*><title>\d{4} Q\d, [^:<]+: (\d+)</title>", svg)]
    assert sum(drawn) == sum(sum(row) for _, row in facts["rows"]) > 0
    svg, points = speedup_vs_retained(model)
    assert points and svg.count("<title>") >= len(points)
    for p in points:
        assert f"{p['id']}: " in svg


def test_generating_again_rewrites_files_in_place_and_deletes_stale_ones(tmp_path):
    """A second run reuses the files it rewrites (same inode: no mass delete and re-create, which is slow on ext4)
    and removes what the catalogue no longer has."""
    from tools.outputs.site.generate import generate

    papers, tax = fixture_papers(), load_taxonomy()
    docs = tmp_path / "docs"
    first = generate(papers, tax, docs)
    page = docs / "papers" / "fastv-2024.md"
    inode, text = page.stat().st_ino, page.read_text(encoding="utf-8")
    (docs / "papers" / "gone-2020.md").write_text("stale", encoding="utf-8")
    (docs / "old" / "deep").mkdir(parents=True)
    (docs / "old" / "deep" / "x.md").write_text("stale", encoding="utf-8")
    second = generate(papers, tax, docs)
    assert second.files == first.files and second.paper_bibs == first.paper_bibs
    assert page.stat().st_ino == inode and page.read_text(encoding="utf-8") == text
    assert not (docs / "papers" / "gone-2020.md").exists() and not (docs / "old").exists()
    fewer = {pid: p for pid, p in papers.items() if pid != "fastv-2024"}
    generate(fewer, tax, docs)
    assert not page.exists() and (docs / "index.md").exists()


DOUBLE_ESCAPED = re.compile(r"&(?:amp;|#38;|#x26;)(?:#\d+|#x[0-9a-f]+|[a-z]+);|&#38;&#35;", re.I)


def test_no_entity_is_escaped_twice_in_markdown_html_or_the_search_index(built_site):
    """The reconciliation report escaped text that was already escaped (``AirCache&#38;&#35;58;``), and search
    snippets and titles carried entities. Every generated Markdown and HTML file is escaped once; the search index
    holds text (HTML specials escaped once, no numeric entity)."""
    files = list(built_site.docs.rglob("*.md")) + list(built_site.site.rglob("*.html"))
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert not DOUBLE_ESCAPED.search(text), (path.name, DOUBLE_ESCAPED.search(text).group())
    report = _text((built_site.site / "reconciliation.html").read_text(encoding="utf-8"))
    assert "[x](javascript:alert(6))" in report and HOSTILE_TITLE in " ".join(report.split())
    assert not re.search(r"&#?\w+;", report)  # shown as text, not as entity codes
    index = (built_site.site / "search" / "search_index.json").read_text(encoding="utf-8")
    assert not DOUBLE_ESCAPED.search(index) and not re.search(r"&#\d+;", index)
    docs = json.loads(index)["docs"]
    fastv = next(d for d in docs if d["location"] == "papers/fastv-2024.html")
    assert fastv["title"].startswith("FastV: An Image is Worth 1/2 Tokens After Layer 2: Plug-and-Play")


def test_the_real_reconciliation_report_is_escaped_once():
    from tools.catalogue.schema import Disagreement
    from tools.catalogue.validate import load_catalogue
    from tools.outputs.reconcile import render_reconciliation

    papers = load_catalogue()
    aircache = next(p for p in papers.values() if p.title.startswith("AirCache: Activating Inter-modal"))
    # the real catalogue plus one disputed title with the characters that were escaped twice (':', '-', '&')
    disputed = aircache.model_copy(
        update={
            "disagreements": [
                Disagreement(
                    field="title",
                    values={
                        "https://arxiv.org/abs/2503.23956": aircache.title,
                        "https://example.org/a": "AirCache & Friends: Inter-modal",
                    },
                    kept=aircache.title,
                    why="the paper's own page",
                )
            ]
        }
    )
    report = render_reconciliation({**papers, aircache.id: disputed})
    assert not DOUBLE_ESCAPED.search(report)
    rendered = _text(__import__("markdown").markdown(report, extensions=["tables"]))
    assert aircache.title in rendered and "AirCache & Friends: Inter-modal" in rendered


def test_search_leaves_out_the_reconciliation_report_and_splits_words_at_punctuation(built_site):
    index = json.loads((built_site.site / "search" / "search_index.json").read_text(encoding="utf-8"))
    assert not any(d["location"].startswith("reconciliation.html") for d in index["docs"])
    assert re.split(index["config"]["separator"], "fastv: plug-and-play (1.5x)") == [
        "fastv",
        "plug",
        "and",
        "play",
        "1.5x",
        "",
    ]


def test_bidi_controls_are_stripped_wherever_a_title_is_shown(built_site):
    from tools.outputs.text import BIDI_CONTROLS

    for path in (
        list(built_site.site.rglob("*.html"))
        + list(built_site.site.rglob("*.json"))
        + list(built_site.site.rglob("*.bib"))
        + list(built_site.site.rglob("*.csv"))
    ):
        text = path.read_text(encoding="utf-8")
        assert not any(ch in text for ch in BIDI_CONTROLS), path
        assert "\\u202e" not in text.lower() and "\\u2066" not in text.lower(), path  # nor escaped in JSON
    page = _text((built_site.site / "papers" / "bidi-2025.html").read_text(encoding="utf-8"))
    assert "Righttoleft overrides stay out of the page" in page


def test_docstrings_are_shown_as_text():
    from tools.outputs.site.refimpls import describe, docstring_text

    assert docstring_text("HybridKV (arXiv 2604.05887) [paper-abs]: pruning -- on a ``ragged`` cache.\n\nMore.") == (
        "HybridKV (arXiv 2604.05887): pruning – on a ragged cache."
    )
    assert docstring_text("Uses :func:`~reference_impls.ops.x`, :class:`a.B` and `y` [code] [design-note].") == (
        "Uses x, a.B and y."
    )
    assert docstring_text("Tokens ``[B, (H / stride) *\n    width]`` out.") == "Tokens [B, (H / stride) * width] out."
    for ref in (
        "reference_impls.decode.kv.hybridkv",
        "reference_impls.decode.kv.streaming",
        "reference_impls.ops.gated_delta",
    ):
        summary = describe(ref).summary
        assert summary and "``" not in summary and "[paper" not in summary and " -- " not in summary, summary
    fastv = describe("reference_impls.prefill.fastv:FastV").summary
    assert "FastV" in fastv and fastv != describe("reference_impls.encode.visionzip:VisionZip").summary


def test_paper_lists_label_their_cells_and_link_the_paper_and_its_code(built_site):
    page = (built_site.site / "techniques" / "token_pruning.html").read_text(encoding="utf-8")
    table = page.split('class="atlas-papers atlas-cards"', 1)[1].split("</table>", 1)[0]
    row = table.split('<td data-label="Paper"><a href="../papers/fastv-2024.html"', 1)[1].split("</tr>", 1)[0]
    assert '<td data-label="Year">2024</td>' in row and '<td data-label="Venue">ECCV 2024</td>' in row
    assert '<a href="https://arxiv.org/abs/2403.06764">paper</a>' in row
    assert '<a href="https://github.com/pkunlp-icler/FastV" title="official code">code</a>' in row
    css = (built_site.site / "assets" / "atlas.css").read_text(encoding="utf-8")
    assert "overflow-wrap: anywhere" not in css and "@media screen and (max-width: 700px)" in css


def test_the_contributor_path(built_site):
    """The contributing page gives `tools add <arXiv id>` first, `tools new` for papers without one, and ends the
    steps with `make generate`; home and contributing link the issue form; the header links the repository
    without asking GitHub's API for its stars."""
    text = _text((built_site.site / "contributing.html").read_text(encoding="utf-8"))
    add, new, generate = (
        text.index(s) for s in ("python -m tools add 2403.06764", "python -m tools new", "make generate")
    )
    assert add < new < generate and "new (it asks for the arXiv id" not in text  # what it never did
    form = "https://github.com/example-org/lvlm-atlas/issues/new?template=add-paper.yml"
    assert (ROOT / ".github" / "ISSUE_TEMPLATE" / "add-paper.yml").is_file()
    for page in ("contributing.html", "index.html"):
        html_text = (built_site.site / page).read_text(encoding="utf-8")
        assert f'href="{form}"' in html_text and "Submit a paper" in html_text, page
        assert (
            'href="https://github.com/example-org/lvlm-atlas" title="Go to repository" class="md-source"' in html_text
        )
        assert 'data-md-component="source"' not in html_text
    home = _text((built_site.site / "index.html").read_text(encoding="utf-8"))
    assert "python -m tools add <arXiv id>" in home and "python -m tools new" in home and "make generate" in home
    steps = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8").split("## Add a paper in three steps", 1)[1]
    steps = steps.split("\n## ", 1)[0]
    assert re.findall(r"^(\d)\. ", steps, re.M) == ["1", "2", "3"]
    assert "make generate" in steps.split("\n3. ", 1)[1].split("\n\n", 1)[0]
