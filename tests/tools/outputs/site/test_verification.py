"""What the website says about verification: a placement that needs review, whether the venue was checked on the
proceedings, a paper's closest (variant) implementation, and how far discovery has covered arXiv."""

from __future__ import annotations

import datetime as dt
import html
import json

from tests.tools._entries import entry
from tools.catalogue.discovery_log import DiscoveryRun, record_run
from tools.catalogue.schema import Paper
from tools.catalogue.taxonomy import load_taxonomy
from tools.outputs.site.generate import generate


def page(path) -> str:
    """A generated page as text: the HTML sections carried in the front matter decoded, entities unescaped."""
    text = path.read_text(encoding="utf-8")
    front, _, body = text.partition("\n---\n")
    sections = "".join(
        json.loads(line.split(": ", 1)[1]) for line in front.splitlines() if line.startswith("atlas_html: ")
    )
    return html.unescape(sections + body)


def papers() -> dict[str, Paper]:
    tax = load_taxonomy()
    checked = entry(
        venue_checked=True,
        reference_impls=["reference_impls.prefill.fastv"],
        provenance={
            "title": "https://arxiv.org/abs/2403.06764",
            "venue": "https://www.ecva.net/papers/eccv_2024/fastv.php",
        },
    )
    variant = entry(
        id="variant-2025",
        arxiv="2501.00009",
        title="A variant of attention-ranked visual token pruning",
        short_name=None,
        venue="arXiv",
        closest_impl=["reference_impls.prefill.fastv"],
        closest_impl_note="ranks tokens by the last query's attention instead of the mean",
        placement={
            "cells": ["prefill.density"],
            "techniques": ["token_pruning"],
            "method": "survey",
            "needs_review": True,
            "note": "placed from the title only: read the abstract",
        },
    )
    searched = entry(
        id="searched-2025",
        arxiv="2501.00010",
        title="A preprint whose publication was searched for without result",
        short_name=None,
        venue="arXiv",
        venue_searched=dt.date(2026, 12, 5),
    )
    return {d["id"]: Paper.model_validate(d, context={"taxonomy": tax}) for d in (checked, variant, searched)}


def test_paper_pages_show_review_state_venue_check_and_closest_implementation(tmp_path):
    out = tmp_path / "docs"
    generate(papers(), load_taxonomy(), out)
    fastv = page(out / "papers" / "fastv-2024.md")
    variant = page(out / "papers" / "variant-2025.md")
    assert "checked on the proceedings" in fastv and "Needs review" not in fastv
    assert "not yet checked against the proceedings" in variant
    searched = page(out / "papers" / "searched-2025.md")
    assert "no venue confirmed in a search on 2026-12-05" in searched and "not yet checked" not in searched
    assert '<span class="atlas-needs-review">Needs review</span>' in variant
    assert "placed from the title only: read the abstract" in variant
    # the closest implementation is shown apart from the paper's own implementations
    assert "<strong>Closest implementation</strong> (a variant of this paper's method" in variant
    assert "reference_impls.prefill.fastv" in variant and "instead of the mean" in variant
    assert "No reference implementation of this paper's method yet" in variant
    assert "Closest implementation" not in fastv
    refimpls = page(out / "reference-implementations.md")
    row = next(
        line for line in refimpls.splitlines() if line.startswith("| <code>reference_impls.prefill.fastv</code>")
    )
    assert row.count("papers/") == 2  # FastV under "Papers", the variant under "Close variants"


def test_home_page_says_how_far_discovery_has_covered(tmp_path):
    log = tmp_path / "discovery_log.yaml"
    out = tmp_path / "docs"
    generate(papers(), load_taxonomy(), out, discovery_log=log)
    index = page(out / "index.md")
    assert "no complete search of arXiv is recorded yet" in index
    # the verification state, counted by the same function as `python -m tools validate`
    assert "the venue of 1 papers was checked" in index and "1 preprints were searched" in index
    assert "and 1 venues\nare not yet checked" in index and "1 placements\nawait a reviewer" in index
    for since, until in (("2026-10-01", "2026-10-31"), ("2026-11-01", "2026-11-30")):
        record_run(
            DiscoveryRun(
                dt.date.fromisoformat(since),
                dt.date.fromisoformat(until),
                dt.date(2026, 12, 4),
                ["cs.CV", "cs.CL", "cs.LG", "cs.AI"],
                "all",
                42,
            ),
            log,
        )
    generate(papers(), load_taxonomy(), out, discovery_log=log)
    index = page(out / "index.md")
    assert "covered through **2026-11-30**" in index and "since\n2026-10-01" in index
