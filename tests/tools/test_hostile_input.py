"""Input that once crashed or hung the tools: each case gives one clear line within seconds and changes no file.

YAML alias bombs, entries of papers/ that are not regular files, .yml names, NUL bytes, impossible years, unquoted
arXiv ids, malformed arXiv dates, a server that trickles its answer, NaN options, and Ctrl-C while enrich writes.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml

from tests.tools._arxiv_feed import (
    API,
    NO_WAIT,
    LocalServer,
    body_of,
    make_catalogue,
    patch_session,
    seed_entry,
    snapshot,
)
from tests.tools._entries import entry, write_entry, write_text
from tools.arxiv.source import ArxivSource, ArxivSourceError
from tools.catalogue.paths import ROOT
from tools.catalogue.taxonomy import load_taxonomy
from tools.catalogue.validate import paper_files, validate_catalogue, validate_file
from tools.cli import main

TAX = load_taxonomy()
LIMIT_S = 10  # every case must answer well within this

# 31 lines of nine aliases each: fully expanded, 9**30 list items (this file is 320 bytes)
ALIAS_BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi")
)


def within(seconds: float, call):
    """``call()``, failing the test (instead of hanging it) when it takes longer than ``seconds``."""
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(value=call()), daemon=True)
    start = time.monotonic()
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    assert "value" in outcome, "the call raised (see the thread's traceback above)"
    return outcome["value"], time.monotonic() - start


def lines_of(problems) -> list[str]:
    return [p.as_text() for p in problems]


# ------------------------------------------------------------------------------------------------ YAML anchors
def test_an_alias_bomb_is_one_line_and_fast(tmp_path):
    folder = tmp_path / "papers"
    bomb = write_text(folder, "bomb.yaml", ALIAS_BOMB)
    good = write_entry(folder, entry())
    before = snapshot(folder)
    cat, seconds = within(LIMIT_S, lambda: validate_catalogue(paper_files(folder), TAX))
    assert lines_of(cat.problems) == [
        f"{bomb}:1: YAML anchors (&name) are not allowed in the catalogue's files; write the value out in full"
    ]
    assert list(cat.papers) == ["fastv-2024"] and cat.files["fastv-2024"] == good  # the run went on
    assert seconds < LIMIT_S and snapshot(folder) == before


@pytest.mark.parametrize(
    "text, line, what",
    [
        ('id: "x"\ntitle: "t"\nauthors: &people ["A B"]\n', 3, "anchors (&name)"),
        ('id: "x"\ntitle: "t"\nauthors: *people\n', 3, "aliases (*name)"),
    ],
)
def test_a_single_anchor_or_alias_is_rejected_on_its_line(tmp_path, text, line, what):
    path = write_text(tmp_path, "x.yaml", text)
    _, _, problems = validate_file(path, TAX)
    assert lines_of(problems) == [
        f"{path}:{line}: YAML {what} are not allowed in the catalogue's files; write the value out in full"
    ]


def test_stars_and_ampersands_inside_strings_are_fine(tmp_path):
    path = write_entry(tmp_path, entry(title="A* Search & Pruning: Q&A Tokens *Matter*"))
    paper, _, problems = validate_file(path, TAX)
    assert problems == [] and paper.title.startswith("A* Search & Pruning")


def test_the_writer_never_emits_aliases():
    from tools.catalogue.yamlio import dump_yaml

    shared = ["A B", "C D"]
    text = dump_yaml({"first": shared, "second": shared, "day": dt.date(2026, 1, 1), "again": dt.date(2026, 1, 1)})
    assert "&" not in text and "*" not in text


# ------------------------------------------------------------------------------------------------ special files
def _special(folder: Path, kind: str) -> tuple[Path, str]:
    """Make one entry of ``kind`` in ``folder``; return it and the message expected for it."""
    path = folder / f"{kind}.yaml"
    if kind == "zero":
        path.symlink_to("/dev/zero")
        return path, f"a symbolic link to /dev/zero, outside {folder}: only files inside it are read"
    if kind == "fifo":
        os.mkfifo(path)
        return path, "a named pipe, not a regular file: only regular files are read"
    if kind == "outside":
        path.symlink_to("/etc/passwd")
        target = os.path.realpath("/etc/passwd")
        return path, f"a symbolic link to {target}, outside {folder}: only files inside it are read"
    if kind == "dangling":
        path.symlink_to(folder / "nowhere.yaml")
        return path, f"a symbolic link to {folder / 'nowhere.yaml'}, which does not exist"
    if kind == "directory":
        path.mkdir()
        return path, "a directory, not a regular file: only regular files are read"
    if kind == "link-to-fifo":
        os.mkfifo(folder / "pipe")
        path.symlink_to(folder / "pipe")
        return path, "a symbolic link to a named pipe, not a regular file: only regular files are read"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["zero", "fifo", "outside", "dangling", "directory", "link-to-fifo"])
def test_an_entry_that_is_not_a_regular_file_is_one_line_and_the_run_goes_on(tmp_path, kind):
    folder = tmp_path / "papers"
    write_entry(folder, entry())
    special, message = _special(folder, kind)
    cat, seconds = within(LIMIT_S, lambda: validate_catalogue(paper_files(folder), TAX))
    assert lines_of(cat.problems) == [f"{special}:1: {message}"]
    assert list(cat.papers) == ["fastv-2024"]
    assert seconds < LIMIT_S


def test_a_symbolic_link_to_a_regular_file_inside_the_folder_is_read(tmp_path):
    folder = tmp_path / "papers"
    real = write_entry(folder / "drafts", entry())
    (folder / "fastv-2024.yaml").symlink_to(real)
    cat = validate_catalogue(paper_files(folder), TAX)
    assert cat.problems == [] and list(cat.papers) == ["fastv-2024"]


def test_inside_the_repository_a_link_out_of_it_is_named_so(tmp_path):
    folder = Path(ROOT) / "papers"
    link = folder / ".test-link-out.yaml"  # hidden: paper_files never lists it, even if a run dies here
    link.symlink_to("/etc/passwd")
    try:
        _, _, problems = validate_file(link, TAX)
    finally:
        link.unlink()
    assert lines_of(problems) == [
        f"papers/.test-link-out.yaml:1: a symbolic link to "
        f"{os.path.realpath('/etc/passwd')}, outside the repository: only files inside it "
        "are read"
    ]


def test_an_oversized_file_is_refused_by_its_size(tmp_path, monkeypatch):
    from tools.catalogue import yamlio

    path = write_text(tmp_path, "big.yaml", "title: " + "x" * 2000 + "\n")
    monkeypatch.setattr(yamlio, "MAX_FILE_BYTES", 1000)
    _, _, problems = validate_file(path, TAX)
    assert lines_of(problems) == [f"{path}:1: file is 2008 bytes; the limit is 1000"]


def test_a_file_that_understates_its_size_is_read_to_the_limit_plus_one_byte(tmp_path, monkeypatch):
    """Like /proc files (size 0) or a file that grows while it is read: at most limit + 1 bytes are read."""
    from tools.catalogue import yamlio

    path = write_text(tmp_path, "big.yaml", "title: " + "x" * 5000 + "\n")
    real_fstat, real_read, asked = os.fstat, os.read, []

    def fstat_size_zero(fd):
        info = real_fstat(fd)
        return os.stat_result(
            (
                info.st_mode,
                info.st_ino,
                info.st_dev,
                info.st_nlink,
                info.st_uid,
                info.st_gid,
                0,
                info.st_atime,
                info.st_mtime,
                info.st_ctime,
            )
        )

    def counting_read(fd, n):
        asked.append(n)
        return real_read(fd, n)

    monkeypatch.setattr(yamlio, "MAX_FILE_BYTES", 1000)
    monkeypatch.setattr(yamlio.os, "fstat", fstat_size_zero)
    monkeypatch.setattr(yamlio.os, "read", counting_read)
    _, _, problems = validate_file(path, TAX)
    assert lines_of(problems) == [f"{path}:1: file is more than 1000 bytes; the limit is 1000"]
    assert sum(asked) <= 1001


def test_the_validate_command_reports_each_special_file_and_goes_on(tmp_path, capsys):
    folder = tmp_path / "papers"
    good = write_entry(folder, entry())
    bomb = write_text(folder, "bomb.yaml", ALIAS_BOMB)
    specials = [_special(folder, kind) for kind in ("zero", "fifo", "outside", "dangling")]
    before = {p.name for p in folder.iterdir()}
    files = [str(p) for p in (good, bomb, *(path for path, _ in specials))]
    code, seconds = within(LIMIT_S, lambda: main(["validate", *files]))
    err = capsys.readouterr().err.splitlines()
    assert code == 1 and seconds < LIMIT_S
    assert sorted(err[:-1]) == sorted(
        [f"{bomb}:1: YAML anchors (&name) are not allowed in the catalogue's files; write the value out in full"]
        + [f"{path}:1: {message}" for path, message in specials]
    )
    assert err[-1] == "5 problem(s) in 5 file(s); 6 file(s) checked"
    assert {p.name for p in folder.iterdir()} == before


# ------------------------------------------------------------------------------------------------ .yml names
@pytest.mark.parametrize("name", ["fastv-2024.yml", "fastv-2024.YAML", "fastv-2024.Yml"])
def test_a_yml_name_is_listed_and_rejected_by_name(tmp_path, name):
    folder = tmp_path / "papers"
    path = write_entry(folder, entry(), name="fastv-2024")
    path = path.rename(folder / name)
    cat = validate_catalogue(paper_files(folder), TAX)
    assert lines_of(cat.problems) == [f"{path}:1: paper files end in .yaml: rename it to fastv-2024.yaml"]
    assert cat.papers == {}


def test_the_pre_commit_globs_match_every_yaml_spelling():
    config = yaml.safe_load((Path(ROOT) / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    globs = [hook["files"] for repo in config["repos"] for hook in repo["hooks"] if "papers/" in hook.get("files", "")]
    assert len(globs) == 3
    for glob in globs:
        for name in ("papers/a.yaml", "papers/a.yml", "papers/a.YAML", "papers/a.YML"):
            assert re.search(glob, name), (glob, name)
        assert not re.search(glob, "papers/a.json")


# ------------------------------------------------------------------------------------------------ field traps
def test_a_nul_byte_is_reported_on_its_line(tmp_path):
    path = write_text(tmp_path, "x.yaml", 'id: "x"\ntitle: "t"\nsummary: "a\x00b"\n')
    _, _, problems = validate_file(path, TAX)
    assert lines_of(problems) == [
        f"{path}:3: the character U+0000 is not allowed in YAML (a control character): remove it"
    ]


@pytest.mark.parametrize("year", [2100, dt.date.today().year + 2])
def test_a_year_after_next_year_is_rejected(tmp_path, year):
    latest = dt.date.today().year + 1
    path = write_entry(tmp_path, entry(year=year))
    _, _, problems = validate_file(path, TAX)
    assert [(p.field, p.message) for p in problems] == [
        ("year", f"year {year} is in the future: the latest year allowed now is {latest}")
    ]
    assert validate_file(write_entry(tmp_path, entry(year=latest)), TAX)[2] == []


@pytest.mark.parametrize(
    "written, read", [("2403.10", "2403.1"), ("2401.12340", "2401.1234"), ("2403.06764", "2403.06764")]
)
def test_an_unquoted_arxiv_id_gets_the_fix_as_written(tmp_path, written, read):
    path = write_entry(tmp_path, entry())
    path.write_text(
        path.read_text(encoding="utf-8").replace('arxiv: "2403.06764"', f"arxiv: {written}"), encoding="utf-8"
    )
    _, _, problems = validate_file(path, TAX)
    assert [(p.field, p.message) for p in problems] == [
        ("arxiv", f'the arXiv id was read as the number {read}; quote it as written: arxiv: "{written}"')
    ]


# ------------------------------------------------------------------------------------------------ arXiv answers
def _with_published(value: str) -> bytes:
    return body_of("prunelens_v3.xml").replace(
        b"<published>2025-11-06T18:59:02Z</published>", f"<published>{value}</published>".encode()
    )


@pytest.mark.parametrize("value", ["2025-13-45T00:00:00Z", "yesterday", ""])
def test_a_malformed_published_date_is_one_line_and_not_retried(monkeypatch, value):
    adapter = patch_session(monkeypatch, [(200, _with_published(value))])
    with pytest.raises(ArxivSourceError) as err:
        ArxivSource(api_url=API, delay=0, retries=2, sleep=lambda s: None).lookup(["2511.04321"])
    assert str(err.value) == (
        f"arXiv 2511.04321: the feed has a malformed date (entry 2511.04321v3: <published> is {value!r})"
    )
    assert len(adapter.requests) == 1


def test_add_and_enrich_report_a_malformed_date_in_one_line_and_write_nothing(tmp_path, monkeypatch, capsys):
    papers = make_catalogue(tmp_path / "papers", seed_entry())
    before = snapshot(papers)
    patch_session(monkeypatch, [(200, _with_published("2025-13-45T00:00:00Z"))])
    assert main(["add", "2511.04321", "--papers-dir", str(papers), "--api-url", API, *NO_WAIT]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: arXiv 2511.04321: the feed has a malformed date (entry 2511.04321v3: <published> is "
        "'2025-13-45T00:00:00Z')",
        "nothing was written",
    ]
    bad = (
        body_of("streamkv_v2_icml.xml")
        .replace(b"<published>", b"<published>20x")
        .replace(b"</published>", b"</published>", 1)
    )
    patch_session(monkeypatch, [(200, bad)])
    assert main(["enrich", "--papers-dir", str(papers), "--api-url", API, *NO_WAIT, "--no-progress"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("error: arXiv 2512.00077: the feed has a malformed date (entry ")
    assert snapshot(papers) == before


class TrickleServer(LocalServer):
    """127.0.0.1: answers 200 with headers at once, then one byte of the feed every ``every`` seconds, for at most
    ``for_at_most`` seconds (so the test always ends)."""

    def __init__(self, every: float = 0.1, for_at_most: float = 6.0):
        body = body_of("prunelens_v3.xml")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                self.send_response(200)
                self.send_header("Content-Type", "application/atom+xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                stop = time.monotonic() + for_at_most
                try:
                    for i in range(len(body)):
                        if time.monotonic() > stop:
                            return
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(every)
                except OSError:  # the client gave up
                    return

            def log_message(self, *args):
                pass

        super().__init__(Handler)


def test_a_trickling_server_cannot_stall_a_request():
    with TrickleServer() as server:
        source = ArxivSource(api_url=server.url, delay=0, retries=0, timeout=1.0)
        start = time.monotonic()
        with pytest.raises(ArxivSourceError) as err:
            source.lookup(["2511.04321"])
        seconds = time.monotonic() - start
    assert str(err.value) == "arXiv 2511.04321: timed out (no complete answer within 1 s)"
    assert seconds < 3  # the whole request, not each byte, is bounded by the timeout


def test_add_against_a_trickling_server_gives_up_in_one_line(tmp_path, capsys):
    papers = make_catalogue(tmp_path / "papers", seed_entry())
    before = snapshot(papers)
    with TrickleServer() as server:
        code, seconds = within(
            LIMIT_S,
            lambda: main(
                ["add", "2511.04321", "--papers-dir", str(papers), "--api-url", server.url]
                + ["--arxiv-delay", "0", "--retries", "1", "--timeout", "0.5"]
            ),
        )
    assert code == 1 and seconds < LIMIT_S
    assert capsys.readouterr().err.splitlines() == [
        "error: arXiv 2511.04321: timed out (no complete answer within 0.5 s) (gave up after 2 tries)",
        "nothing was written",
    ]
    assert snapshot(papers) == before


# ------------------------------------------------------------------------------------------------ NaN options
@pytest.mark.parametrize("command", [["add", "2511.04321"], ["enrich"], ["discover", "--since", "2026-01-01"]])
@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--timeout", "nan", "the timeout must be a finite number of seconds > 0, got nan"),
        ("--timeout", "inf", "the timeout must be a finite number of seconds > 0, got inf"),
        ("--arxiv-delay", "nan", "the delay between requests must be a finite number of seconds >= 0, got nan"),
        ("--arxiv-delay", "inf", "the delay between requests must be a finite number of seconds >= 0, got inf"),
    ],
)
def test_nan_and_infinite_seconds_are_usage_errors(tmp_path, capsys, command, option, value, message):
    papers = make_catalogue(tmp_path / "papers", seed_entry())
    before = snapshot(papers)
    extra = ["--queue", str(tmp_path / "queue.yaml"), "--no-progress"] if command[0] == "discover" else []
    code = main(
        [*command, "--papers-dir", str(papers), "--api-url", "http://127.0.0.1:9/api/query", option, value, *extra]
    )
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {message}"]
    assert snapshot(papers) == before


# ------------------------------------------------------------------------------------------------ Ctrl-C in enrich
def _two_entries_to_refresh(tmp_path) -> Path:
    second = seed_entry(
        id="relaxed-verification-2026",
        arxiv="2601.01234",
        title="Relaxed Verification for Speculative Decoding in Vision-Language Models",
        paper_url="https://arxiv.org/abs/2601.01234",
        placement={"cells": ["decode.memory"], "techniques": ["speculative_decoding"], "method": "curated"},
    )
    return make_catalogue(tmp_path / "papers", seed_entry(), second)


def _enrich(papers):
    return main(["enrich", "-q", "--papers-dir", str(papers), "--api-url", API, *NO_WAIT, "--no-progress"])


def test_ctrl_c_while_staging_changes_no_file(tmp_path, monkeypatch, capsys):
    from tools.catalogue import yamlio

    papers = _two_entries_to_refresh(tmp_path)
    before = snapshot(papers)
    patch_session(monkeypatch, ["two_preprints.xml"])
    real_chmod, calls = os.chmod, []

    def ctrl_c_on_the_second_file(path, mode):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_chmod(path, mode)

    monkeypatch.setattr(yamlio.os, "chmod", ctrl_c_on_the_second_file)
    assert _enrich(papers) == 130
    assert capsys.readouterr().err.splitlines() == ["interrupted while writing: no file was changed"]
    assert snapshot(papers) == before  # neither entry changed, and no staged file is left behind


def test_ctrl_c_during_the_renames_lets_every_file_land(tmp_path, monkeypatch, capsys):
    from tools.catalogue import yamlio

    papers = _two_entries_to_refresh(tmp_path)
    before = snapshot(papers)
    patch_session(monkeypatch, ["two_preprints.xml"])
    real_replace, calls = os.replace, []

    def ctrl_c_after_the_first_rename(src, dst):
        real_replace(src, dst)
        calls.append(dst)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)  # a real Ctrl-C, in the middle of the renames

    monkeypatch.setattr(yamlio.os, "replace", ctrl_c_after_the_first_rename)
    assert _enrich(papers) == 130
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["interrupted while writing: all 2 changed file(s) were written first"]
    after = snapshot(papers)
    assert sorted(after) == sorted(before)  # the same two files, no staged leftovers
    assert all(after[name] != before[name] for name in before)  # and both were rewritten
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_malformed_address_is_one_problem_not_a_traceback(tmp_path):
    """An unclosed IPv6 bracket makes urllib raise; the entry gets a problem on its line instead."""
    data = entry()
    data["provenance"] = dict(data.get("provenance") or {}, title="https://[arxiv.org/abs/2403.06764")
    path = write_entry(tmp_path, data)
    _, _, problems = validate_file(path, TAX)
    assert problems and all(p.file == str(path) and p.line >= 1 for p in problems)
    assert any("provenance" in p.field for p in problems)
