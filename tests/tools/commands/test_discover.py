"""``discover`` and ``triage``: queries from the taxonomy's keywords, filtering, ranking, the queue, accept/reject."""

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
from tools.arxiv.triage_state import read_queue
from tools.catalogue.rejected import RejectedList, Rejection, read_rejected
from tools.catalogue.taxonomy import load_taxonomy
from tools.catalogue.validate import paper_files, validate_catalogue
from tools.catalogue.yamlio import load_yaml_with_lines
from tools.cli import main
from tools.commands.discover import build_query, keyword_clause

FAST = [*NO_WAIT, "--no-progress"]


@pytest.fixture
def state(tmp_path):
    papers = make_catalogue(tmp_path / "papers", seed_entry(), other_entry())
    queue, rejected = tmp_path / "queue.yaml", tmp_path / "rejected.yaml"
    RejectedList(
        [
            Rejection(
                "2511.09090",
                "Token Dropping for Multimodal Transformers at Scale",
                dt.date(2025, 12, 1),
                "trains the model; not inference",
            )
        ],
        rejected,
    ).write()
    return papers, queue, rejected


def discover(state, *args, api=API):
    papers, queue, rejected = state
    return main(
        [
            "discover",
            "--since",
            "2025-11-01",
            "--until",
            "2025-11-30",
            "--papers-dir",
            str(papers),
            "--queue",
            str(queue),
            "--rejected",
            str(rejected),
            "--log",
            str(queue.parent / "discovery_log.yaml"),
            "--api-url",
            api,
            *FAST,
            *args,
        ]
    )


def triage(state, *args):
    papers, queue, rejected = state
    return main(["triage", "--papers-dir", str(papers), "--queue", str(queue), "--rejected", str(rejected), *args])


def test_queries_are_built_from_the_taxonomy_keywords():
    assert (
        keyword_clause("token pruning vision language model")
        == "(abs:token AND abs:pruning AND abs:vision AND abs:language AND abs:model)"
    )
    assert (
        keyword_clause("high-resolution image cropping MLLM")
        == "(abs:high AND abs:resolution AND abs:image AND abs:cropping AND abs:MLLM)"
    )
    query = build_query(
        ["KV cache eviction", "heavy hitter KV cache"], ["cs.CV", "cs.CL"], dt.date(2025, 11, 1), dt.date(2025, 11, 30)
    )
    assert query == (
        "(cat:cs.CV OR cat:cs.CL) AND ((abs:KV AND abs:cache AND abs:eviction) OR "
        "(abs:heavy AND abs:hitter AND abs:KV AND abs:cache)) AND "
        "submittedDate:[202511010000 TO 202511302359]"
    )


def test_discover_against_a_local_server_queues_ranked_new_candidates(state, capsys):
    papers, queue, rejected = state
    with FeedServer(["discover_feed.xml"]) as server:
        assert discover(state, api=server.url) == 0
    taxonomy = load_taxonomy()
    assert len(server.requests) == len(taxonomy.techniques)  # one query per technique
    first = server.requests[0]["search_query"]
    assert first.startswith("(cat:cs.CV OR cat:cs.CL OR cat:cs.LG OR cat:cs.AI) AND (")
    assert "(abs:visual AND abs:token AND abs:pruning)" in first
    assert first.endswith("submittedDate:[202511010000 TO 202511302359]")
    candidates = read_queue(queue)
    ids = [c.arxiv for c in candidates]
    # Dropped: the near-duplicate of sink-aware-2025 (2511.05050), the rejected 2511.09090, 2510.01010 (before
    # --since), the astro-ph 2511.03030 (other categories) and the protein paper 2511.08080 (irrelevant).
    assert sorted(ids) == ["2511.04321", "2511.06060", "2511.07070"]
    assert [c.relevance for c in candidates] == sorted((c.relevance for c in candidates), reverse=True)
    holo = next(c for c in candidates if c.arxiv == "2511.06060")
    assert holo.techniques == ["token_merging"] and holo.modality == ["image"]
    assert holo.record.authors == ["Björn Lindqvist", "Aiko Tanaka", "Ольга Смирнова"]
    assert "visual token merging" in holo.matched
    out = capsys.readouterr().out
    assert "3 new candidate(s)" in out and "1 rejected" in out and "1 below the relevance threshold" in out
    text = queue.read_text(encoding="utf-8")
    assert "&id" not in text and "*id" not in text  # no YAML anchors
    assert load_yaml_with_lines(queue)[0]["candidates"][0]["record"]["first_version"]


def test_discover_twice_changes_nothing(state, monkeypatch, capsys):
    patch_session(monkeypatch, ["discover_feed.xml"])
    assert discover(state) == 0
    before = snapshot(state[1].parent)
    capsys.readouterr()
    assert discover(state) == 0
    assert snapshot(state[1].parent) == before
    out = capsys.readouterr().out
    assert "0 new candidate(s)" in out and "3 queued" in out


def test_triage_accept_creates_a_valid_entry_and_reject_is_remembered(state, monkeypatch, capsys):
    papers, queue, rejected = state
    patch_session(monkeypatch, ["discover_feed.xml"])
    assert discover(state, "--technique", "token_merging", "--technique", "kv_eviction") == 0
    capsys.readouterr()
    assert triage(state) == 0
    listing = capsys.readouterr().out
    assert "2511.06060  HoloMerge" in listing and "3 candidate(s)" in listing

    assert (
        triage(
            state,
            "--accept",
            "2511.06060",
            "--reject",
            "https://arxiv.org/abs/2511.07070v1",
            "--reason",
            "video-only KV work: out of scope",
        )
        == 0
    )
    entry = load_yaml_with_lines(papers / "holomerge-2025.yaml")[0]
    assert entry["placement"]["needs_review"] is True and entry["venue"] == "arXiv" and entry["year"] == 2025
    assert entry["provenance"]["title"] == "https://arxiv.org/abs/2511.06060v1"
    assert validate_catalogue(paper_files(papers)).problems == []
    assert [c.arxiv for c in read_queue(queue)] == ["2511.04321"]
    remembered = {r.arxiv: r for r in read_rejected(rejected).rejections}
    assert remembered["2511.07070"].reason == "video-only KV work: out of scope"

    # The rejected paper and the accepted one are never proposed again.
    assert discover(state) == 0
    assert sorted(c.arxiv for c in read_queue(queue)) == ["2511.04321"]


def test_triage_refuses_what_is_not_queued_or_already_catalogued(state, monkeypatch, capsys):
    papers, queue, rejected = state
    patch_session(monkeypatch, ["discover_feed.xml"])
    assert discover(state) == 0
    before = snapshot(papers.parent)
    assert triage(state, "--accept", "2599.00001") == 2
    assert "not in the triage queue" in capsys.readouterr().err
    assert triage(state, "--accept", "2511.04321", "--reject", "2511.04321") == 2
    assert triage(state, "--reason", "why", "--accept", "2511.04321") == 2
    assert snapshot(papers.parent) == before
    # Someone adds the paper by hand meanwhile: accepting it is refused, nothing changes.
    entry = other_entry()
    entry.update(id="prunelens-by-hand-2026", arxiv="2511.04321", title="PruneLens (added by hand)")
    make_catalogue(papers, entry)
    before = snapshot(papers.parent)
    assert triage(state, "--accept", "2511.04321") == 2
    assert (
        "the same arXiv id 2511.04321: already catalogued as papers/prunelens-by-hand-2026.yaml"
        in capsys.readouterr().err
    )
    assert snapshot(papers.parent) == before
    # A queued paper rejected meanwhile (say by `add --from` with an exclude record) is refused too.
    listing = read_rejected(rejected)
    listing.add(Rejection("2511.06060", "HoloMerge", dt.date(2026, 12, 4), "out_of_scope: no language model"))
    listing.write()
    before = snapshot(papers.parent)
    assert triage(state, "--accept", "2511.06060") == 2
    assert "rejected on 2026-12-04 (out_of_scope: no language model)" in capsys.readouterr().err
    assert snapshot(papers.parent) == before
    # ... and the next discover run drops it from the queue.
    assert discover(state) == 0
    assert "2511.04321" not in [c.arxiv for c in read_queue(queue)]


@pytest.mark.parametrize("reply", [(429, b""), (503, b""), "truncated.xml", "not_a_feed.html"])
def test_discover_failures_leave_the_queue_unchanged(state, monkeypatch, capsys, reply):
    patch_session(monkeypatch, ["discover_feed.xml"])
    assert discover(state, "--technique", "token_pruning") == 0
    before = snapshot(state[0].parent)
    patch_session(monkeypatch, ["discover_feed.xml", reply])  # the second technique's query fails
    assert discover(state, "--technique", "token_pruning", "--technique", "token_merging") == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: arXiv query 'token_merging since 2025-11-01': ")
    assert snapshot(state[0].parent) == before


def test_discover_usage_errors(state, capsys):
    assert discover(state, "--technique", "teleportation") == 2
    assert "unknown technique(s) teleportation" in capsys.readouterr().err
    assert discover(state, "--until", "2025-10-01") == 2
    assert discover(state, "--category", "CS CV") == 2


def test_interactive_triage_asks_about_each_candidate(state, monkeypatch, capsys):
    papers, queue, rejected = state
    patch_session(monkeypatch, ["discover_feed.xml"])
    assert discover(state) == 0
    order = [c.arxiv for c in read_queue(queue)]  # most relevant first
    answers = iter(["maybe", "a", "r", "s"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    assert triage(state, "--interactive") == 0
    assert [c.arxiv for c in read_queue(queue)] == [order[2]]  # skipped: still queued
    assert order[1] in read_rejected(rejected).arxiv_ids
    created = [p.stem for p in paper_files(papers)]
    assert len(created) == 3 and validate_catalogue(paper_files(papers)).problems == []
    shown = capsys.readouterr().out
    assert all(arxiv_id in shown for arxiv_id in order)  # each candidate was shown before its question


def test_interactive_triage_without_a_terminal_is_a_usage_error(state, monkeypatch, capsys):
    patch_session(monkeypatch, ["discover_feed.xml"])
    assert discover(state) == 0
    before = snapshot(state[0].parent)

    def no_terminal(prompt):
        raise EOFError

    monkeypatch.setattr("builtins.input", no_terminal)
    assert triage(state, "--interactive") == 2
    assert "--interactive needs a terminal" in capsys.readouterr().err
    assert snapshot(state[0].parent) == before


# ------------------------------------------------------------------------------------------------ discovery log
def test_each_run_records_the_dates_it_covered(state, monkeypatch, capsys):
    from tools.catalogue.discovery_log import covered, read_log

    log = state[1].parent / "discovery_log.yaml"
    patch_session(monkeypatch, ["discover_feed.xml"])
    assert discover(state, "--dry-run") == 0 and not log.exists()  # a dry run queues nothing: not recorded
    assert discover(state) == 0
    [run] = read_log(log)
    assert (run.since, run.until) == (dt.date(2025, 11, 1), dt.date(2025, 11, 30))
    assert run.techniques == "all" and run.truncated == [] and run.results > 0
    assert covered(read_log(log)) == (dt.date(2025, 11, 1), dt.date(2025, 11, 30))
    # a query cut at its result limit may have missed papers: recorded, but not as complete
    patch_session(monkeypatch, ["discover_feed.xml"])
    main(
        [
            "discover",
            "--since",
            "2025-12-01",
            "--until",
            "2025-12-31",
            "--papers-dir",
            str(state[0]),
            "--queue",
            str(state[1]),
            "--rejected",
            str(state[2]),
            "--log",
            str(log),
            "--api-url",
            API,
            *FAST,
            "--max-per-technique",
            "1",
        ]
    )
    assert "not recorded as complete" in capsys.readouterr().out
    runs = read_log(log)
    assert len(runs) == 2 and runs[1].truncated
    assert covered(runs) == (dt.date(2025, 11, 1), dt.date(2025, 11, 30))


def test_covered_through_follows_contiguous_complete_windows():
    from tools.catalogue.discovery_log import DiscoveryRun, covered

    def run(since, until, techniques="all", categories=("cs.CV", "cs.CL", "cs.LG", "cs.AI"), truncated=()):
        return DiscoveryRun(
            dt.date.fromisoformat(since),
            dt.date.fromisoformat(until),
            dt.date(2026, 12, 4),
            list(categories),
            techniques,
            10,
            list(truncated),
        )

    assert covered([]) is None
    assert covered([run("2026-01-01", "2026-01-31"), run("2026-02-01", "2026-02-28")]) == (
        dt.date(2026, 1, 1),
        dt.date(2026, 2, 28),
    )
    # a gap ends a stretch; the stretch that reaches furthest is the one shown
    assert covered([run("2026-01-01", "2026-01-31"), run("2026-03-01", "2026-03-31")]) == (
        dt.date(2026, 3, 1),
        dt.date(2026, 3, 31),
    )
    # a run of some techniques, some categories, or a cut query covers nothing for the record
    partial = [
        run("2026-04-01", "2026-04-30", techniques=["token_pruning"]),
        run("2026-04-01", "2026-04-30", categories=("cs.CV",)),
        run("2026-04-01", "2026-04-30", truncated=["kv_eviction"]),
    ]
    assert covered([run("2026-03-01", "2026-03-31"), *partial]) == (dt.date(2026, 3, 1), dt.date(2026, 3, 31))
