"""The local server (`make serve`): the site's own 404 page, and a rebuild when papers/, taxonomy.yaml or site/
change, swapped in between requests (a failed rebuild keeps the previous site)."""

from __future__ import annotations

import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tools.catalogue.paths import ROOT
from tools.outputs.site.build import (
    WATCHED,
    Watcher,
    https_address,
    make_server,
    rebuild_command,
    rebuild_into,
    repository_url,
)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")


@pytest.fixture
def serving():
    servers = []

    def start(site: Path):
        server = make_server(site, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server, f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_missing_page_gets_the_sites_own_404(built_site, serving):
    _, base = serving(built_site.site)
    status, body = _get(base + "papers/no-such-paper.html")
    assert status == 404
    assert "Efficient LVLM Inference Atlas" in body and "404 - Not found" in body
    assert "Error response" not in body  # not Python's page
    assert _get(base + "papers/fastv-2024.html")[0] == 200


def test_a_change_rebuilds_and_swaps_in_the_new_site(tmp_path, serving):
    site, watched = tmp_path / "_site", tmp_path / "papers"
    site.mkdir()
    watched.mkdir()
    (site / "index.html").write_text("first build", encoding="utf-8")
    (watched / "a.yaml").write_text("a: 1\n", encoding="utf-8")
    server, base = serving(site)
    staging = tmp_path / ".next"
    # a stand-in for `python -m tools site --build --output <staging>`: it builds from the watched file
    build = [
        sys.executable,
        "-c",
        "import pathlib, sys; out = pathlib.Path(sys.argv[1]); out.mkdir(); "
        "(out / 'index.html').write_text('built from ' + pathlib.Path(sys.argv[2]).read_text())",
        str(staging),
        str(watched / "a.yaml"),
    ]
    watcher = Watcher([watched], lambda: rebuild_into(server, build, staging), interval=0.05)
    assert watcher.poll() is False  # nothing changed yet
    assert _get(base)[1] == "first build"
    (watched / "a.yaml").write_text("a: 2\n", encoding="utf-8")
    assert watcher.poll() is True
    assert _get(base) == (200, "built from a: 2\n")
    assert not staging.exists() and not (tmp_path / "._site.old").exists()

    failing = [sys.executable, "-c", "raise SystemExit(1)"]
    watcher.on_change = lambda: rebuild_into(server, failing, staging)
    (watched / "b.yaml").write_text("new file\n", encoding="utf-8")
    assert watcher.poll() is True
    assert _get(base) == (200, "built from a: 2\n")  # the previous build is still served


def test_the_watcher_skips_the_generated_tree_and_the_rebuild_is_the_whole_build():
    assert WATCHED == [ROOT / "papers", ROOT / "taxonomy.yaml", ROOT / "site"]
    generated = ROOT / "site" / "_generated"
    watcher = Watcher(WATCHED, lambda: None)
    assert not any(path.startswith(str(generated)) for path in watcher.state)
    assert str(ROOT / "taxonomy.yaml") in watcher.state
    assert any(path.startswith(str(ROOT / "papers")) for path in watcher.state)
    command = rebuild_command(Path("/tmp/x"), "https://github.com/a/b")
    assert command[1:] == [
        "-m",
        "tools",
        "site",
        "--build",
        "--output",
        "/tmp/x",
        "--repo-url",
        "https://github.com/a/b",
    ]


def test_the_repository_address(monkeypatch):
    assert https_address("git@github.com:owner/atlas.git") == "https://github.com/owner/atlas"
    assert https_address("https://github.com/owner/atlas.git\n") == "https://github.com/owner/atlas"
    for bad in ("", "/local/path", "http://github.com/a/b", "https://github.com/only-owner", "ext::sh -c x"):
        assert https_address(bad) is None
    monkeypatch.setenv("ATLAS_REPO_URL", "https://github.com/from/env")
    assert repository_url() == "https://github.com/from/env"
    assert repository_url("https://github.com/explicit/one") == "https://github.com/explicit/one"
    monkeypatch.delenv("ATLAS_REPO_URL")
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "actions/repo")
    assert repository_url() == "https://github.com/actions/repo"


def test_serve_cli_options():
    from tools import cli

    parser, _ = cli.build_parser()
    args = parser.parse_args(["site", "--serve", "--no-watch", "--repo-url", "https://github.com/a/b"])
    assert args.serve and args.no_watch and args.repo_url == "https://github.com/a/b"
    assert parser.parse_args(["site", "--serve"]).no_watch is False  # `make serve` rebuilds on changes
