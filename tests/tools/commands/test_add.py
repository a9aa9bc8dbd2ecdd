"""``python -m tools add``: entries from arXiv, refusals, every failure mode, against a local server or a patched
session.

Papers are written into a temporary folder (``--papers-dir``); the real papers/ is never touched.
"""

from __future__ import annotations

import datetime as dt

import pytest

from tests.tools._arxiv_feed import (
    API,
    REFUSED,
    TIMEOUT,
    FeedServer,
    make_catalogue,
    other_entry,
    patch_session,
    seed_entry,
    snapshot,
)
from tools.arxiv.entries import venue_from_record
from tools.arxiv.source import ArxivRecord
from tools.catalogue.taxonomy import load_taxonomy
from tools.catalogue.validate import paper_files, validate_catalogue
from tools.catalogue.yamlio import load_yaml_with_lines
from tools.cli import main

FAST = ["--arxiv-delay", "0", "--retries", "1"]


@pytest.fixture
def papers(tmp_path):
    return make_catalogue(tmp_path / "papers", seed_entry(), other_entry())


def add(papers, *refs, api=API, extra=()):
    return main(["add", *refs, "--papers-dir", str(papers), "--api-url", api, *FAST, *extra])


def load(path):
    return load_yaml_with_lines(path)[0]


def assert_valid(papers):
    catalogue = validate_catalogue(paper_files(papers))
    assert catalogue.problems == []
    return catalogue


# ------------------------------------------------------------------------------------------------------ success
def test_add_against_a_local_server_writes_a_valid_entry_with_provenance(papers, capsys):
    with FeedServer(["prunelens_v3.xml"]) as server:
        assert add(papers, "https://arxiv.org/abs/2511.04321v1", api=server.url) == 0
    assert server.requests[0]["id_list"] == "2511.04321"
    path = papers / "prunelens-2026.yaml"
    data = load(path)
    assert data["title"] == "PruneLens: Attention-Guided Visual Token Pruning for Fast Large Vision-Language Models"
    assert data["short_name"] == "PruneLens"
    assert data["authors"] == ["Zoë Müller", "Jiří Novák", "Ana María Pérez-Ruiz", "王小明", "Søren Ødegård"]
    assert data["authors_status"] == "complete"
    assert data["first_version"] == dt.date(2025, 11, 6)
    # The journal reference names CVPR 2026: the venue's year, not the v1 year (2025).
    assert data["venue"] == "CVPR 2026" and data["year"] == 2026
    assert data["arxiv"] == "2511.04321" and data["doi"] == "10.1109/CVPR52734.2026.01234"
    assert data["primary_class"] == "cs.CV" and data["paper_url"] == "https://arxiv.org/abs/2511.04321"
    assert data["placement"]["needs_review"] is True and data["placement"]["method"] == "curated"
    assert data["placement"]["techniques"] == ["token_pruning"]
    assert data["training"] == "training-free" and data["modality"] == ["image"]
    prov = data["provenance"]
    assert prov["title"] == prov["authors"] == prov["doi"] == "https://arxiv.org/abs/2511.04321v3"
    assert prov["first_version"] == "https://arxiv.org/abs/2511.04321v1"
    assert prov["venue"] == "https://arxiv.org/abs/2511.04321v3" and data["venue_checked"] is True
    # the placement is a keyword suggestion nobody has read on a page: flagged, and no source is claimed for it
    assert "placement" not in prov and "modality" not in prov and "training" not in prov
    assert data["last_verified"] == dt.date.today()
    assert "prunelens-2026" in assert_valid(papers).papers
    out = capsys.readouterr().out
    assert "categories cs.CV, cs.CL, cs.LG" in out and "needs_review: true" in out


def test_add_several_ids_in_one_request_through_the_patched_session(papers, monkeypatch):
    adapter = patch_session(monkeypatch, ["two_preprints.xml"])
    (papers / "streamkv-2025.yaml").unlink()
    assert add(papers, "2601.01234", "arXiv:2512.00077v1") == 0
    assert [r["id_list"] for r in adapter.requests] == ["2601.01234,2512.00077"]
    spec = load(papers / "relaxed-verification-speculative-2026.yaml")
    # "Accepted at the ICLR 2026 Workshop ..." in the comment: a workshop venue.
    assert spec["venue"] == "ICLR 2026 Workshop" and spec["year"] == 2026
    assert spec["provenance"]["venue"] == "https://arxiv.org/abs/2601.01234v2" and spec["venue_checked"] is True
    assert spec["placement"]["techniques"] == ["speculative_decoding"]
    stream = load(papers / "streamkv-2025.yaml")
    # "Submitted to ICML 2026" is not a venue: a preprint, dated by version 1.
    assert stream["venue"] == "arXiv" and stream["year"] == 2025 and "doi" not in stream
    assert stream["modality"] == ["video"] and stream["placement"]["techniques"] == ["kv_eviction"]
    assert_valid(papers)


def test_dry_run_prints_the_entry_and_writes_nothing(papers, monkeypatch, capsys):
    patch_session(monkeypatch, ["prunelens_v3.xml"])
    before = snapshot(papers)
    assert add(papers, "2511.04321", extra=["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert 'id: "prunelens-2026"' in out and 'venue: "CVPR 2026"' in out and "needs review" in out
    assert snapshot(papers) == before


# ------------------------------------------------------------------------------------------------------ refusals
def test_adding_twice_is_refused_and_changes_nothing(papers, monkeypatch, capsys):
    adapter = patch_session(monkeypatch, ["prunelens_v3.xml"])
    assert add(papers, "2511.04321") == 0
    before = snapshot(papers)
    assert add(papers, "2511.04321v3") == 2
    err = capsys.readouterr().err
    assert "arXiv 2511.04321: already catalogued as" in err and "prunelens-2026.yaml" in err
    assert snapshot(papers) == before
    assert len(adapter.requests) == 1  # the second add is refused before any request


def test_same_doi_is_refused(tmp_path, monkeypatch, capsys):
    entry = other_entry()
    entry.update(id="cvpr-copy-2026", doi="10.1109/cvpr52734.2026.01234", title="A different title altogether")
    papers = make_catalogue(tmp_path / "papers", entry)
    patch_session(monkeypatch, ["prunelens_v3.xml"])
    before = snapshot(papers)
    assert add(papers, "2511.04321") == 2
    assert (
        "the same DOI 10.1109/CVPR52734.2026.01234: already catalogued as papers/cvpr-copy-2026.yaml"
        in capsys.readouterr().err
    )
    assert snapshot(papers) == before


def test_near_duplicate_title_is_shown_beside_the_entry_it_matches(tmp_path, monkeypatch, capsys):
    entry = other_entry()
    entry.update(
        id="prunelens-old-2025",
        arxiv="2509.11111",
        title="PruneLens: attention-guided visual token pruning for fast large vision language models",
    )
    papers = make_catalogue(tmp_path / "papers", entry)
    patch_session(monkeypatch, ["prunelens_v3.xml"])
    before = snapshot(papers)
    assert add(papers, "2511.04321") == 2
    err = capsys.readouterr().err
    assert (
        "arXiv 2511.04321 'PruneLens: Attention-Guided Visual Token Pruning for Fast Large Vision-Language "
        "Models': the same title: already catalogued as papers/prunelens-old-2025.yaml ('PruneLens: "
        "attention-guided visual token pruning"
    ) in err
    assert snapshot(papers) == before


def test_bad_ids_are_usage_errors(papers, capsys):
    before = snapshot(papers)
    assert add(papers, "2511.04321", "abs/203.05527") == 2
    assert "'abs/203.05527' is not an arXiv id or URL" in capsys.readouterr().err
    assert snapshot(papers) == before


# ------------------------------------------------------------------------------------------------------ failures
FAILURES = [
    ((429, b"Rate exceeded."), "rate limited (HTTP 429 Too Many Requests) (gave up after 2 tries)"),
    ((503, b"unavailable"), "arXiv server error (HTTP 503) (gave up after 2 tries)"),
    (TIMEOUT, "timed out (no complete answer within 30 s) (gave up after 2 tries)"),
    (REFUSED, "cannot connect to arxiv.test (Connection refused) (gave up after 2 tries)"),
    ("truncated.xml", "malformed feed (XML error: "),
    ((200, b""), "empty response (no feed) (gave up after 2 tries)"),
    ("empty.xml", "unknown id: the API returned no entry for it"),
    ("withdrawn.xml", "withdrawn (v2: 'This paper has been withdrawn by the authors"),
]


@pytest.mark.parametrize("reply, cause", FAILURES, ids=[str(i) for i in range(len(FAILURES))])
def test_each_failure_is_one_clear_line_exit_1_and_no_file(papers, monkeypatch, capsys, reply, cause):
    patch_session(monkeypatch, [reply])
    wanted = "2512.05555" if reply == "withdrawn.xml" else "2511.04321"
    before = snapshot(papers)
    assert add(papers, wanted, "2601.01234") == 1
    err_lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith(f"error: arXiv {wanted}") and cause in line for line in err_lines), err_lines
    assert err_lines[-1] == "nothing was written"
    assert "Traceback" not in "\n".join(err_lines)
    assert snapshot(papers) == before


def test_no_network_with_the_endpoint_from_the_environment(papers, monkeypatch, capsys):
    monkeypatch.setenv("ATLAS_ARXIV_API", "http://127.0.0.1:9/api/query")  # the discard port: nothing listens
    before = snapshot(papers)
    assert main(["add", "2511.04321", "--papers-dir", str(papers), *FAST]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: arXiv 2511.04321: cannot connect to 127.0.0.1:9 (")
    assert snapshot(papers) == before


def test_a_slow_local_server_times_out_cleanly(papers, capsys):
    with FeedServer([(200, "prunelens_v3.xml", {"_sleep": 1.0})]) as server:
        before = snapshot(papers)
        rc = main(
            [
                "add",
                "2511.04321",
                "--papers-dir",
                str(papers),
                "--api-url",
                server.url,
                "--arxiv-delay",
                "0",
                "--retries",
                "0",
                "--timeout",
                "0.2",
            ]
        )
    assert rc == 1
    assert "error: arXiv 2511.04321: timed out (no complete answer within 0.2 s)" in capsys.readouterr().err
    assert snapshot(papers) == before


# ------------------------------------------------------------------------------------------------------ venue rules
def _record(**kw) -> ArxivRecord:
    base = dict(
        arxiv="2511.00001",
        version=1,
        title="T",
        authors=["A"],
        abstract="x",
        first_version=dt.date(2025, 11, 1),
        updated=dt.date(2025, 11, 1),
    )
    base.update(kw)
    return ArxivRecord(**base)


@pytest.mark.parametrize(
    "kw, expected",
    [
        (
            {"journal_ref": "Proceedings of the 43rd International Conference on Machine Learning, PMLR 267, 2026"},
            ("ICML 2026", "journal_ref"),
        ),
        ({"journal_ref": "Conference on Computer Vision and Pattern Recognition, 2024"}, ("CVPR 2024", "journal_ref")),
        ({"journal_ref": "Pattern Recognition 150 (2024) 110321"}, ("Pattern Recognition 2024", "journal_ref")),
        (
            {"journal_ref": "Findings of the Association for Computational Linguistics: EMNLP 2024"},
            ("EMNLP 2024 Findings", "journal_ref"),
        ),
        (
            {"comment": "Accepted to ECCV 2024 (Oral), code is released at https://github.com/x/y"},
            ("ECCV 2024", "comment"),
        ),
        ({"comment": "12 pages. Accepted by ACM MM 2025"}, ("ACM MM 2025", "comment")),
        ({"comment": "Submitted to ICML 2026. 9 pages"}, None),
        ({"comment": "Under review at NeurIPS 2025"}, None),
        ({"comment": "14 pages, 6 figures"}, None),
        ({"journal_ref": "Some Unknown Workshop Proceedings, 2025"}, None),
    ],
)
def test_venue_from_journal_ref_or_an_accepted_comment(kw, expected):
    assert venue_from_record(_record(**kw), load_taxonomy()) == expected
