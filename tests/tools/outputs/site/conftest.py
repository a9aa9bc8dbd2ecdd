"""Session fixtures: the fixture catalogue generated and built once (strict) for every site test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.tools.outputs._fixture_catalogue import REPO_URL, fixture_papers
from tools.catalogue.taxonomy import load_taxonomy

DATA = Path(__file__).parent / "data"


@dataclass
class BuiltSite:
    papers: dict
    docs: Path  # the generated Markdown tree
    site: Path  # the built HTML site


def _reconciliation(papers):
    from tools.outputs.reconcile import render_reconciliation

    return render_reconciliation(papers)


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> BuiltSite:
    from tools.outputs.site.build import build_site
    from tools.outputs.site.generate import generate
    from tools.outputs.site.measured import load_measurements

    root = tmp_path_factory.mktemp("site")
    papers = fixture_papers()
    measurements = load_measurements(papers, DATA / "reproductions.yaml", DATA)
    generated = generate(
        papers,
        load_taxonomy(),
        root / "docs",
        reconciliation=_reconciliation,
        results_dir=DATA,
        measurements=measurements,
        repo_url=REPO_URL,
    )
    build_site(root / "docs", root / "html", generated.paper_bibs, strict=True, repo_url=REPO_URL)
    return BuiltSite(papers, root / "docs", root / "html")
