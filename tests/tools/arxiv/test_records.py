"""``python -m tools add --from FILE`` (tools/arxiv/records.py): verification records create, update and reject entries;
bad records are one line each and nothing is written; the rejected list is honoured by every way in."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import yaml

from tests.tools._arxiv_feed import make_catalogue, other_entry, patch_session, seed_entry, snapshot
from tests.tools._entries import entry
from tools.catalogue.rejected import read_rejected
from tools.catalogue.validate import paper_files, validate_catalogue
from tools.catalogue.yamlio import load_yaml_with_lines
from tools.cli import main

CHECKED = "2026-12-04"
ABS = "https://arxiv.org/abs/2509.00001"


def record(**overrides) -> dict:
    """An include record for other_entry() (Sink-aware visual token pruning), read on its arXiv page."""
    data = {
        "arxiv": "2509.00001",
        "decision": "include",
        "exclude_reason": None,
        "title": "SinkPrune: Sink-Aware Visual Token Pruning for Efficient Vision-Language Models",
        "authors": ["Twin Original", "Second Author"],
        "authors_status": "complete",
        "first_version": "2025-09-01",
        "year": 2025,
        "venue": "ICLR 2026",
        "venue_evidence": "https://openreview.net/forum?id=sinkprune",
        "venue_checked": True,
        "doi": None,
        "primary_class": "cs.CV",
        "short_name": "SinkPrune",
        "code": [{"url": "https://github.com/example/sinkprune", "official": True}],
        "placement": {
            "cells": ["prefill.density"],
            "techniques": ["token_pruning"],
            "needs_review": False,
            "note": None,
        },
        "modality": ["image"],
        "training": "training-free",
        "summary": "SinkPrune drops visual tokens that only feed attention sinks. It keeps 97% of the accuracy.",
        "claims": [
            {
                "metric": "performance_retained",
                "value": 97,
                "unit": "%",
                "qualifier": "up to; LLaVA-1.5",
                "setting": {"model": "LLaVA-1.5-7B", "budget": "11% of visual tokens"},
                "where": "abstract",
                "source": ABS,
            }
        ],
        "provenance": {
            "title": ABS,
            "authors": ABS,
            "first_version": ABS,
            "summary": ABS,
            "claims": ABS,
            "placement": ABS,
            "modality": ABS,
            "training": ABS,
            "code": "https://www.alphaxiv.org/abs/2509.00001",
        },
        "read_via": {},
        "listed_in": ["ZLKong/Awesome-Collection-Token-Reduction@fefe9bf"],
        "checked": CHECKED,
        "notes": "for the integrator",
    }
    data.update(overrides)
    return data


NEW = {
    "arxiv": "2512.04321",
    "decision": "include",
    "title": "KVSieve: Sieving the KV Cache of Video LLMs",
    "authors": ["Ada Lovelace"],
    "authors_status": "complete",
    "first_version": "2025-12-03",
    "year": 2025,
    "venue": "arXiv",
    "venue_checked": False,
    "short_name": "KVSieve",
    "code": [],
    "placement": {
        "cells": ["decode.memory"],
        "techniques": ["kv_eviction"],
        "needs_review": True,
        "note": "eviction or merging: the abstract is unclear",
    },
    "modality": ["video"],
    "training": None,
    "summary": None,
    "claims": [],
    "provenance": {
        "title": "https://arxiv.org/abs/2512.04321",
        "authors": "https://arxiv.org/abs/2512.04321",
        "first_version": "https://arxiv.org/abs/2512.04321",
        "placement": "https://arxiv.org/abs/2512.04321",
        "modality": "https://arxiv.org/abs/2512.04321",
    },
    "read_via": {"https://arxiv.org/abs/2512.04321": "https://arxiv.org/html/2512.04321v1"},
    "listed_in": "momentslab/awesome-efficient-videollm@7ce5102; daixiangzi/Awesome-Token-Compress@0123abc",
    "checked": CHECKED,
}

EXCLUDE = {
    "arxiv": "2512.00077",
    "decision": "exclude",
    "exclude_reason": "out_of_scope: trains a detector; no language model is involved",
    "checked": CHECKED,
}


@pytest.fixture
def state(tmp_path):
    kept = other_entry()
    kept.update(
        reference_impls=["reference_impls.decode.kv.quantized:KVQuant"],
        bibtex_key="original2025sink",
        listed_in=["cokeshao/Awesome-Multimodal-Token-Compression:image-llm.md@c500934"],
    )
    papers = make_catalogue(tmp_path / "papers", seed_entry(), kept)
    return papers, tmp_path / "rejected.yaml"


def write_records(tmp_path, *records, name="records.jsonl"):
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(list(records), sort_keys=False), encoding="utf-8")
    return path


def add_from(state, *files, extra=()):
    papers, rejected = state
    args = ["add", "--papers-dir", str(papers), "--rejected", str(rejected)]
    for f in files:
        args += ["--from", str(f)]
    return main([*args, *extra])


def load(path):
    return load_yaml_with_lines(path)[0]


# ------------------------------------------------------------------------------------------------ success
def test_records_create_update_and_reject_in_one_run(state, tmp_path, capsys):
    papers, rejected = state
    path = write_records(tmp_path, record(), NEW, EXCLUDE)
    assert add_from(state, path) == 0
    out = capsys.readouterr().out
    assert "3 record(s): 1 created, 1 updated" in out and "1 rejected (1 removed from the catalogue)" in out

    # created: the id is chosen as `add <arXiv id>` chooses it; facts and sources as the record gives them
    new = load(papers / "kvsieve-2025.yaml")
    assert new["title"] == NEW["title"] and new["paper_url"] == "https://arxiv.org/abs/2512.04321"
    assert new["placement"] == {
        "cells": ["decode.memory"],
        "techniques": ["kv_eviction"],
        "method": "curated",
        "needs_review": True,
        "note": "eviction or merging: the abstract is unclear",
    }
    assert new["listed_in"] == [
        "momentslab/awesome-efficient-videollm@7ce5102",
        "daixiangzi/Awesome-Token-Compress@0123abc",
    ]
    assert new["read_via"] == NEW["read_via"] and new["last_verified"] == dt.date(2026, 12, 4)
    assert new["provenance"]["arxiv"] == "https://arxiv.org/abs/2512.04321"  # the page shows the id
    assert new["provenance"]["year"] == "https://arxiv.org/abs/2512.04321"  # a preprint: the year of version 1

    # updated: the record's facts, the entry's own fields kept, every retired value kept as a disagreement
    upd = load(papers / "sink-aware-2025.yaml")
    assert upd["title"] == record()["title"] and upd["venue"] == "ICLR 2026" and upd["venue_checked"] is True
    assert upd["provenance"]["venue"] == "https://openreview.net/forum?id=sinkprune"
    assert (
        upd["reference_impls"] == ["reference_impls.decode.kv.quantized:KVQuant"]
        and upd["bibtex_key"] == "original2025sink"
    )
    assert upd["listed_in"] == [
        "cokeshao/Awesome-Multimodal-Token-Compression:image-llm.md@c500934",
        "ZLKong/Awesome-Collection-Token-Reduction@fefe9bf",
    ]
    retired = {d["field"]: d for d in upd["disagreements"]}
    # the same page gave another title before (an earlier version): that reading is kept
    assert retired["title"]["values"] == {
        f"{ABS} (read before 2026-12-04)": other_entry()["title"],
        ABS: record()["title"],
    }
    assert retired["title"]["kept"] == record()["title"]
    # the old venue had no source: the list the entry was imported from said it
    assert retired["venue"]["values"] == {
        "cokeshao/Awesome-Multimodal-Token-Compression:image-llm.md@c500934": "arXiv",
        "https://openreview.net/forum?id=sinkprune": "ICLR 2026",
    }
    # a copy of the arXiv page is cited through the canonical address, the copy kept in read_via
    assert upd["provenance"]["code"] == ABS and upd["read_via"] == {ABS: "https://www.alphaxiv.org/abs/2509.00001"}
    # the qualifier's extra words become the claim's note; nothing is dropped
    assert upd["claims"][0]["qualifier"] == "up to" and upd["claims"][0]["note"] == "LLaVA-1.5"
    assert upd["last_verified"] == dt.date(2026, 12, 4) and "notes" not in upd

    # rejected: recorded with its reason and date, and the entry is gone
    assert not (papers / "streamkv-2025.yaml").exists()
    rejection = read_rejected(rejected).find("2512.00077")
    assert rejection.id == "streamkv-2025" and rejection.reason.startswith("out_of_scope:")
    assert rejection.title.startswith("StreamKV") and rejection.date == dt.date(2026, 12, 4)
    assert validate_catalogue(paper_files(papers)).problems == []


def test_applying_the_same_records_again_changes_nothing(state, tmp_path, capsys):
    papers, rejected = state
    path = write_records(tmp_path, record(), NEW)
    assert add_from(state, path) == 0
    before = snapshot(papers)
    capsys.readouterr()
    assert add_from(state, path) == 0
    assert "0 created, 0 updated" in capsys.readouterr().out and snapshot(papers) == before


def test_a_claim_with_null_settings_is_not_a_changed_claim(state, tmp_path, capsys):
    """An entry does not write null settings, a record may: the same claim is not counted as changed."""
    first = record()
    assert add_from(state, write_records(tmp_path, first)) == 0
    again = record(summary="SinkPrune drops visual tokens that only feed attention sinks, keeping 97% of the accuracy.")
    again["claims"][0]["setting"] = {**again["claims"][0]["setting"], "benchmark": None, "baseline": None}
    capsys.readouterr()
    assert add_from(state, write_records(tmp_path, again)) == 0
    out = capsys.readouterr().out
    assert "1 updated (changed: 1 summary)" in out and "claims" not in out


def venue_record(checked=CHECKED) -> dict:
    """A record that gives sink-aware-2025 (other_entry()) the venue ICLR 2026, read on its OpenReview page."""
    venue = "https://openreview.net/forum?id=sinkprune"
    return {
        "id": "sink-aware-2025",
        "arxiv": "2509.00001",
        "decision": "include",
        "venue": "ICLR 2026",
        "venue_evidence": venue,
        "venue_checked": True,
        "year": 2026,
        "checked": checked,
        "provenance": {"venue": venue, "year": venue},
    }


def test_a_venue_retired_from_a_list_without_a_path_is_reported_not_refused(tmp_path, capsys):
    """The old venue's only source is a list named without its file (owner/repo@commit, not an address): the update
    goes through and says that the retired value had no source to name."""
    listed = {**other_entry(), "listed_in": ["hemingkx/SpeculativeDecodingPapers@9e6b293"]}
    state = (make_catalogue(tmp_path / "papers", listed), tmp_path / "rejected.yaml")
    assert add_from(state, write_records(tmp_path, venue_record())) == 0
    assert "retired without a source to name (not kept): venue: 'arXiv'" in capsys.readouterr().out
    assert load(state[0] / "sink-aware-2025.yaml")["venue"] == "ICLR 2026"


def test_a_search_without_a_venue_is_dated_and_a_venue_found_later_clears_it(tmp_path, capsys):
    """A preprint searched without result carries the search's date; a later record that finds the venue drops it,
    and a published entry can never carry one."""
    state = (make_catalogue(tmp_path / "papers", other_entry()), tmp_path / "rejected.yaml")
    path = state[0] / "sink-aware-2025.yaml"
    searched = {
        "id": "sink-aware-2025",
        "arxiv": "2509.00001",
        "decision": "include",
        "venue_searched": CHECKED,
        "checked": CHECKED,
    }
    assert add_from(state, write_records(tmp_path, searched)) == 0
    assert "filled: 1 venue_searched" in capsys.readouterr().out
    assert load(path)["venue"] == "arXiv" and load(path)["venue_searched"] == dt.date(2026, 12, 4)

    found = venue_record(checked="2026-12-05")
    assert add_from(state, write_records(tmp_path, found)) == 0
    data = load(path)
    assert data["venue"] == "ICLR 2026" and data["venue_checked"] is True and "venue_searched" not in data

    both = {**found, "venue_searched": "2026-12-05"}
    capsys.readouterr()
    assert add_from(state, write_records(tmp_path, both)) == 1
    assert "only a preprint carries the date of a search" in capsys.readouterr().err
    assert "venue_searched" not in load(path)


def test_a_yaml_list_of_records_is_read_too(state, tmp_path):
    papers, _ = state
    assert add_from(state, write_records(tmp_path, NEW, name="records.yaml")) == 0
    assert (papers / "kvsieve-2025.yaml").exists()


def test_dry_run_checks_everything_and_writes_nothing(state, tmp_path, capsys):
    papers, rejected = state
    before = snapshot(papers)
    assert add_from(state, write_records(tmp_path, record(), NEW, EXCLUDE), extra=["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would create papers/kvsieve-2025.yaml" in out and "would reject arXiv 2512.00077" in out
    assert snapshot(papers) == before and not rejected.exists()


# ------------------------------------------------------------------------------------------------ bad records
def test_each_bad_record_is_one_line_and_nothing_is_written(state, tmp_path, capsys):
    papers, rejected = state
    path = tmp_path / "bad.jsonl"
    lines = [
        json.dumps(NEW),
        "{not json",
        json.dumps({**NEW, "arxiv": "2512.09999", "title": "Another paper on video KV caches", "colour": "red"}),
        json.dumps(
            {
                **NEW,
                "arxiv": "2512.09998",
                "title": "A third paper",
                "provenance": {"title": "/work/scratch/verified_B.jsonl:34"},
            }
        ),
        json.dumps(
            {
                **NEW,
                "arxiv": "2512.09997",
                "title": "A fourth paper",
                "placement": {"cells": ["decode.memory"], "techniques": ["token_pruning"]},
            }
        ),
        json.dumps({**EXCLUDE, "exclude_reason": "because"}),
        json.dumps(NEW),
        json.dumps({**NEW, "arxiv": None, "id": "no-such-paper-2025"}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = snapshot(papers)
    assert add_from(state, path) == 1
    err = capsys.readouterr().err
    shown = str(path)
    assert f"{shown}:2: not valid JSON" in err
    assert f"{shown}:3: colour: unknown field" in err
    assert f"{shown}:4: provenance.title: '/work/scratch/verified_B.jsonl:34' is a local path" in err
    assert f"{shown}:5: placement:" in err and "token_pruning" in err
    assert f"{shown}:6: exclude_reason: write '<kind>: <why>'" in err
    assert f"{shown}:7: arxiv: the same paper as the record at {shown}:1" in err
    assert f"{shown}:8: id: no entry papers/no-such-paper-2025.yaml" in err
    assert (
        "Traceback" not in err and err.strip().splitlines()[-1] == "7 problem(s)" and len(err.strip().splitlines()) == 8
    )
    assert snapshot(papers) == before and not rejected.exists()


def test_a_record_that_duplicates_another_entry_is_refused(state, tmp_path, capsys):
    papers, _ = state
    copy = {**NEW, "arxiv": "2512.05555", "title": "StreamKV: Bounded KV-Cache Eviction for Streaming Video LLMs"}
    before = snapshot(papers)
    assert add_from(state, write_records(tmp_path, copy)) == 1
    assert "the same paper as papers/streamkv-2025.yaml" in capsys.readouterr().err
    assert snapshot(papers) == before


def test_a_record_names_a_similar_title_as_a_different_paper(state, tmp_path, capsys):
    """Two papers with near-identical titles: the record's ``distinct_from`` (an arXiv id or an entry id) lets the new
    one in, and its entry keeps the other's id, so validation stays quiet later."""
    papers, _ = state
    streamkv = yaml.safe_load((papers / "streamkv-2025.yaml").read_text(encoding="utf-8"))
    similar = {**NEW, "arxiv": "2512.05555", "title": "StreamKV: Bounded KV-Cache Eviction for Streaming Video LLMs"}
    for named in ([streamkv["arxiv"]], ["streamkv-2025"]):
        before = snapshot(papers)
        assert add_from(state, write_records(tmp_path, {**similar, "distinct_from": named}), extra=["--dry-run"]) == 0
        assert snapshot(papers) == before
    assert add_from(state, write_records(tmp_path, {**similar, "distinct_from": [streamkv["arxiv"]]})) == 0
    created = [p for p in paper_files(papers) if "2512.05555" in p.read_text(encoding="utf-8")]
    assert len(created) == 1
    assert yaml.safe_load(created[0].read_text(encoding="utf-8"))["distinct_from"] == ["streamkv-2025"]
    assert validate_catalogue(paper_files(papers)).problems == []


def test_a_failure_while_staging_writes_nothing(state, tmp_path, monkeypatch):
    import os

    from tools.arxiv import records

    papers, rejected = state
    before = snapshot(papers)
    real_fdopen = os.fdopen
    calls = []

    def fail_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_fdopen(*args, **kwargs)

    monkeypatch.setattr(records.os, "fdopen", fail_on_second)
    with pytest.raises(OSError):
        add_from(state, write_records(tmp_path, record(), NEW, EXCLUDE))
    assert snapshot(papers) == before and not rejected.exists()
    assert sorted(p.name for p in papers.iterdir()) == sorted(p.rsplit("/", 1)[1] for p in before)


# ------------------------------------------------------------------------------------------------ the rejected list
def test_a_rejected_paper_is_never_added_again(state, tmp_path, monkeypatch, capsys):
    papers, rejected = state
    excluded = {**EXCLUDE, "arxiv": "2601.01234", "title": "Relaxed verification for speculative decoding"}
    assert add_from(state, write_records(tmp_path, excluded)) == 0
    capsys.readouterr()
    # not from records ...
    back = {**NEW, "arxiv": "2601.01234", "title": "Relaxed verification for speculative decoding"}
    assert add_from(state, write_records(tmp_path, back, name="again.jsonl")) == 1
    assert "rejected on 2026-12-04 (out_of_scope: trains a detector" in capsys.readouterr().err
    # ... nor from arXiv (refused before any request) ...
    adapter = patch_session(monkeypatch, ["two_preprints.xml"])
    assert main(["add", "2601.01234", "--papers-dir", str(papers), "--rejected", str(rejected)]) == 2
    assert "arXiv 2601.01234: rejected on 2026-12-04" in capsys.readouterr().err and adapter.requests == []
    # ... nor by hand
    from tools.commands import new

    monkeypatch.setattr(new, "read_rejected", lambda: read_rejected(rejected))
    assert (
        main(
            [
                "new",
                "--id",
                "relaxed-2026",
                "--title",
                "Relaxed verification for speculative decoding",
                "--year",
                "2026",
                "--arxiv",
                "2601.01234",
                "--technique",
                "speculative_decoding",
                "--cell",
                "decode.memory",
                "--source",
                "https://arxiv.org/abs/2601.01234",
                "--dry-run",
            ]
        )
        == 2
    )
    assert "dry run: would refuse" in capsys.readouterr().err


def test_the_rejected_list_names_file_line_and_field_for_bad_items(tmp_path):
    from tools.catalogue.problems import ProblemError

    bad = tmp_path / "rejected.yaml"
    bad.write_text(
        'rejected:\n- {arxiv: "2401.00001", title: x, date: 2026-01-01}\n- {title: y, date: 2026-01-01}\n',
        encoding="utf-8",
    )
    with pytest.raises(ProblemError) as exc:
        read_rejected(bad)
    assert [(p.line, p.field) for p in exc.value.problems] == [(3, "rejected.1")]


def test_existing_entries_with_the_test_helper_shape_still_validate(tmp_path):
    papers = make_catalogue(tmp_path / "papers", entry(), other_entry())
    assert validate_catalogue(paper_files(papers)).problems == []
