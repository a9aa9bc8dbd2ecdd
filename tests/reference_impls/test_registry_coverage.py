"""Every method technique of taxonomy.yaml has runnable code linked from its papers: a registry entry that a paper
placed under that technique lists in ``reference_impls`` (or, for a generic entry that follows no single paper, in
``closest_impl``); and every catalogue paper named by an entry's arXiv ids links the entry."""

from pathlib import Path

import pytest

from reference_impls import registry

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
TAXONOMY = yaml.safe_load((ROOT / "taxonomy.yaml").read_text(encoding="utf-8"))
NOT_METHODS = {"benchmark", "survey"}
PAPERS = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted((ROOT / "papers").glob("*.yaml"))]


def _linked_entries(paper):
    """Names of the registry entries the paper links."""
    found = (registry.for_link(link) for link in paper.get("reference_impls") or [])
    return {e.name for e in found if e is not None}


def _closest_entries(paper):
    found = (registry.for_link(link) for link in paper.get("closest_impl") or [])
    return {e.name for e in found if e is not None}


@pytest.mark.parametrize("technique", [t["id"] for t in TAXONOMY["techniques"] if t["id"] not in NOT_METHODS])
def test_every_method_technique_has_an_implementation_linked_from_its_papers(technique):
    placed = [p for p in PAPERS if technique in p["placement"]["techniques"]]
    linked = {name for p in placed for name in _linked_entries(p) if registry.get(name).technique == technique}
    linked |= {
        name
        for p in placed
        for name in _closest_entries(p)
        if registry.get(name).technique == technique and not registry.get(name).arxiv
    }
    assert linked, f"no paper placed under {technique} links an implementation of it"


def test_every_paper_an_entry_follows_links_it():
    by_arxiv = {p["arxiv"]: p for p in PAPERS if p.get("arxiv")}
    missing = [
        (e.name, a)
        for e in registry.ENTRIES
        for a in e.arxiv
        if a in by_arxiv and e.name not in _linked_entries(by_arxiv[a])
    ]
    assert missing == []


def test_at_least_sixty_papers_link_runnable_code():
    direct = [p["id"] for p in PAPERS if _linked_entries(p)]
    closest = [p["id"] for p in PAPERS if p.get("closest_impl")]
    assert len(direct) + len(closest) >= 60, (len(direct), len(closest))
