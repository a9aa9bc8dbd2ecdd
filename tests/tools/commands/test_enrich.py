"""``python -m tools enrich``: fills missing and machine-written facts, keeps curated ones, idempotent, fails
cleanly."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.tools._arxiv_feed import (
    API,
    NO_WAIT,
    FeedServer,
    make_catalogue,
    other_entry,
    patch_session,
    seed_entry,
    snapshot,
)
from tools.arxiv.entries import field_state
from tools.catalogue.entries import build_paper
from tools.catalogue.validate import paper_files, validate_catalogue
from tools.catalogue.yamlio import load_yaml_with_lines
from tools.cli import main

FAST = [*NO_WAIT, "--no-progress"]
CURATED = "https://icml.cc/virtual/2026/poster/777"


def enrich(papers, *args, api=API):
    return main(["enrich", *args, "--papers-dir", str(papers), "--api-url", api, *FAST])


def load(path):
    return load_yaml_with_lines(path)[0]


@pytest.fixture
def papers(tmp_path):
    return make_catalogue(tmp_path / "papers", seed_entry())


def test_a_venue_found_by_enrich_drops_the_date_of_an_earlier_search_without_result(tmp_path):
    papers = make_catalogue(tmp_path / "papers", {**seed_entry(), "venue_searched": dt.date(2026, 12, 5)})
    assert load(papers / "streamkv-2025.yaml")["venue_searched"] == dt.date(2026, 12, 5)
    with FeedServer(["streamkv_v2_icml.xml"]) as server:
        assert enrich(papers, api=server.url) == 0
    data = load(papers / "streamkv-2025.yaml")
    assert data["venue"] == "ICML 2026" and data["venue_checked"] is True
    assert "venue_searched" not in (papers / "streamkv-2025.yaml").read_text(encoding="utf-8")


def test_enrich_against_a_local_server_fills_and_updates_and_shows_a_diff(papers, capsys):
    with FeedServer(["streamkv_v2_icml.xml"]) as server:
        assert enrich(papers, api=server.url) == 0
    assert server.requests[0]["id_list"] == "2512.00077"
    out = capsys.readouterr().out
    assert '-authors_status: "truncated"' in out and '+venue: "ICML 2026"' in out and '+doi: "10.5555' in out
    assert "checked 1 entry against arXiv: changed 1" in out
    data = load(papers / "streamkv-2025.yaml")
    assert data["authors"] == ["Hana Kobayashi", "Lukas Brandt", "Inès Béranger", "Đặng Văn Lâm"]
    assert data["authors_status"] == "complete"
    assert data["venue"] == "ICML 2026" and data["year"] == 2026
    assert data["doi"] == "10.5555/icml.2026.00777"
    assert data["first_version"] == dt.date(2025, 12, 1) and data["primary_class"] == "cs.CV"
    prov = data["provenance"]
    assert prov["authors"] == prov["arxiv"] == prov["doi"] == "https://arxiv.org/abs/2512.00077v2"
    assert prov["venue"] == "https://arxiv.org/abs/2512.00077v2" and data["venue_checked"] is True
    assert prov["first_version"] == "https://arxiv.org/abs/2512.00077v1"
    assert "title" not in prov  # enrich never touches the title
    assert data["listed_in"] == seed_entry()["listed_in"]
    assert data["placement"] == seed_entry()["placement"] and data["training"] == "training-free"
    assert data["last_verified"] == dt.date.today()
    assert validate_catalogue(paper_files(papers)).problems == []


def test_enriching_twice_changes_nothing(papers, monkeypatch, capsys):
    patch_session(monkeypatch, ["streamkv_v2_icml.xml"])
    assert enrich(papers) == 0
    after_first = snapshot(papers)
    capsys.readouterr()
    assert enrich(papers) == 0
    assert snapshot(papers) == after_first
    out = capsys.readouterr().out
    assert "changed 0" in out and "---" not in out


def test_a_new_version_is_recorded_in_the_provenance(papers, monkeypatch, capsys):
    patch_session(monkeypatch, ["two_preprints.xml", "streamkv_v2_icml.xml"])
    assert enrich(papers) == 0  # v1: a preprint ("Submitted to ICML 2026")
    v1 = load(papers / "streamkv-2025.yaml")
    assert v1["provenance"]["arxiv"] == "https://arxiv.org/abs/2512.00077v1"
    assert v1["venue"] == "arXiv" and v1["year"] == 2025  # the v1 year replaces the list's 2026
    capsys.readouterr()
    assert enrich(papers) == 0  # v2 appeared, with a journal reference
    assert "latest version: v1 -> v2" in capsys.readouterr().out
    v2 = load(papers / "streamkv-2025.yaml")
    assert v2["provenance"]["arxiv"] == "https://arxiv.org/abs/2512.00077v2"
    assert v2["venue"] == "ICML 2026" and v2["year"] == 2026


def test_curated_fields_are_kept_unless_forced(tmp_path, monkeypatch, capsys):
    entry = seed_entry(
        authors=["H. Kobayashi", "L. Brandt", "I. Béranger", "D. V. Lam"],
        authors_status="complete",
        venue="ICML 2026 Workshop",
        year=2026,
    )
    entry["provenance"] = {"authors": CURATED, "venue": CURATED, "year": CURATED}
    papers = make_catalogue(tmp_path / "papers", entry)
    patch_session(monkeypatch, ["streamkv_v2_icml.xml"])
    assert enrich(papers, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "streamkv-2025: authors: kept ['H. Kobayashi'" in out and "(--force replaces)" in out
    assert "venue: kept 'ICML 2026 Workshop' (curated); arXiv says 'ICML 2026'" in out
    assert enrich(papers) == 0
    data = load(papers / "streamkv-2025.yaml")
    assert data["authors"][0] == "H. Kobayashi" and data["venue"] == "ICML 2026 Workshop"
    assert data["doi"] == "10.5555/icml.2026.00777"  # missing facts are still filled
    assert enrich(papers, "--force") == 0
    data = load(papers / "streamkv-2025.yaml")
    assert data["authors"][0] == "Hana Kobayashi" and data["venue"] == "ICML 2026"
    assert data["provenance"]["authors"] == "https://arxiv.org/abs/2512.00077v2"


def test_dry_run_writes_nothing(papers, monkeypatch, capsys):
    patch_session(monkeypatch, ["streamkv_v2_icml.xml"])
    before = snapshot(papers)
    assert enrich(papers, "--dry-run") == 0
    assert "would change 1" in capsys.readouterr().out
    assert snapshot(papers) == before


def test_targets_select_entries_by_paper_id_or_arxiv_id(tmp_path, monkeypatch, capsys):
    papers = make_catalogue(tmp_path / "papers", seed_entry(), other_entry())
    adapter = patch_session(monkeypatch, ["streamkv_v2_icml.xml"])
    assert enrich(papers, "arXiv:2512.00077") == 0
    assert enrich(papers, "streamkv-2025") == 0
    assert [r["id_list"] for r in adapter.requests] == ["2512.00077", "2512.00077"]
    assert enrich(papers, "no-such-paper") == 2
    assert "not in the catalogue: no-such-paper" in capsys.readouterr().err


def test_batches_and_a_failure_in_a_later_batch_writes_nothing(tmp_path, monkeypatch, capsys):
    papers = make_catalogue(tmp_path / "papers", seed_entry(), other_entry())
    adapter = patch_session(monkeypatch, ["streamkv_v2_icml.xml", (503, b"down")])
    before = snapshot(papers)
    assert enrich(papers, "--batch-size", "1") == 1
    assert len(adapter.requests) == 2
    err = capsys.readouterr().err
    assert "error: arXiv 2512.00077: arXiv server error (HTTP 503)" in err  # batches are sorted by paper id
    assert snapshot(papers) == before


def test_unknown_ids_fail_the_run_unless_keep_going(tmp_path, monkeypatch, capsys):
    papers = make_catalogue(tmp_path / "papers", seed_entry(), other_entry())
    patch_session(monkeypatch, ["streamkv_v2_icml.xml"])
    before = snapshot(papers)
    assert enrich(papers) == 1
    err = capsys.readouterr().err
    assert "error: arXiv 2509.00001 (" in err and "sink-aware-2025.yaml): unknown id" in err
    assert snapshot(papers) == before
    assert enrich(papers, "--keep-going") == 1
    assert load(papers / "streamkv-2025.yaml")["venue"] == "ICML 2026"
    assert (papers / "sink-aware-2025.yaml").read_bytes() == before[str(papers / "sink-aware-2025.yaml")]


def test_a_doi_another_entry_has_is_not_copied(tmp_path, monkeypatch, capsys):
    holder = other_entry()
    holder["doi"] = "10.5555/ICML.2026.00777"
    papers = make_catalogue(tmp_path / "papers", seed_entry(), holder)
    patch_session(monkeypatch, ["streamkv_v2_icml.xml"])
    assert enrich(papers, "streamkv-2025") == 1
    assert "already has: left unchanged" in capsys.readouterr().err
    assert "doi" not in load(papers / "streamkv-2025.yaml")


def test_field_states():
    paper = build_paper(
        seed_entry(
            doi="10.1234/x",
            primary_class="cs.LG",
            provenance={"doi": CURATED, "primary_class": "https://arxiv.org/abs/2512.00077v1"},
        )
    )
    assert field_state(paper, "authors") == "missing"  # truncated
    assert field_state(paper, "venue") == "missing"  # "arXiv"
    assert field_state(paper, "first_version") == "missing"
    assert field_state(paper, "year") == "machine"  # unsourced (a list carries the paper, but is no source)
    assert field_state(paper, "primary_class") == "machine"  # this paper's abstract page
    assert field_state(paper, "doi") == "curated"  # a person read another page
