"""The issue's "done when": against one local server, add, enrich, discover and triage work end to end and every
entry they produce validates; a failing server leaves the catalogue as it was."""

from __future__ import annotations

from tests.tools._arxiv_feed import FeedServer, feed_for, make_catalogue, other_entry, snapshot
from tools.arxiv.triage_state import read_queue
from tools.catalogue.validate import paper_files, validate_catalogue
from tools.cli import main


def route(params: dict):
    """A tiny arXiv: searches answered from the discover feed, id lookups from every fixture."""
    if params.get("search_query"):
        return "discover_feed.xml"
    ids = params.get("id_list", "").split(",")
    return 200, feed_for(ids, "prunelens_v3.xml", "streamkv_v2_icml.xml", "discover_feed.xml")


def test_add_enrich_discover_triage_end_to_end(tmp_path, monkeypatch, capsys):
    papers = make_catalogue(tmp_path / "papers", other_entry())
    queue, rejected = tmp_path / "queue.yaml", tmp_path / "rejected.yaml"
    with FeedServer([route]) as server:
        monkeypatch.setenv("ATLAS_ARXIV_API", server.url)
        monkeypatch.setenv("ATLAS_ARXIV_DELAY", "0")
        common = ["--papers-dir", str(papers)]
        assert main(["add", "2511.04321", *common]) == 0
        assert main(["add", "2511.04321", *common]) == 2  # twice: refused
        assert main(["enrich", "prunelens-2026", "--no-progress", *common]) == 0
        assert "changed 0" in capsys.readouterr().out  # add already wrote what arXiv says
        state = ["--queue", str(queue), "--rejected", str(rejected)]
        log = ["--log", str(tmp_path / "discovery_log.yaml")]
        assert (
            main(["discover", "--since", "2025-11-01", "--until", "2025-11-30", "--no-progress", *common, *state, *log])
            == 0
        )
        queued = [c.arxiv for c in read_queue(queue)]
        assert "2511.04321" not in queued and {"2511.06060", "2511.07070"} <= set(queued)
        assert main(["triage", "--accept", "2511.06060", "--reject", "2511.07070", *common, *state]) == 0
        assert main(["enrich", "--no-progress", "--keep-going", *common]) == 1  # 2509.00001 is unknown there
        catalogue = validate_catalogue(paper_files(papers))
        assert catalogue.problems == []
        assert set(catalogue.papers) == {"sink-aware-2025", "prunelens-2026", "holomerge-2025"}
        assert main(["enrich", "prunelens-2026", "holomerge-2025", "--no-progress", *common]) == 0
        before = snapshot(tmp_path)
        assert main(["enrich", "prunelens-2026", "holomerge-2025", "--no-progress", *common]) == 0
        assert snapshot(tmp_path) == before  # enriching twice changes nothing
    # The server is gone: every command fails with one line, exit 1, and changes nothing.
    for argv in (
        ["add", "2511.05050"],
        ["enrich", "--no-progress"],
        ["discover", "--since", "2025-11-01", "--no-progress", *state, *log],
    ):
        assert main([*argv, *common, "--retries", "0"]) == 1
        assert "cannot connect to 127.0.0.1" in capsys.readouterr().err
        assert snapshot(tmp_path) == before
