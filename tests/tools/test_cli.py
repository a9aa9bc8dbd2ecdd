"""The command line: exit codes, output formats (plain and GitHub annotations), `new` and `schema`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.tools._entries import entry, write_entry
from tools import cli
from tools.catalogue.paths import ROOT, SCHEMA_PATH


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "tools", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )


def test_validate_bad_file_exit_1_without_traceback(tmp_path):
    path = write_entry(tmp_path, entry(arxiv=2403.06764))
    result = run_cli("validate", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{path}:" in result.stderr and ": arxiv: the arXiv id was read as the number" in result.stderr


def test_validate_emits_github_annotations_in_actions(tmp_path):
    import os

    path = write_entry(tmp_path, entry(venue="Proceedings of CVPR"))
    result = run_cli("validate", str(path), env={**os.environ, "GITHUB_ACTIONS": "true"})
    assert result.returncode == 1
    line = next(l for l in result.stderr.splitlines() if l.startswith("::error"))
    assert line.startswith(f"::error file={path},line=")
    assert "is not normalised" in line


def test_validate_good_file_exit_0(tmp_path):
    path = write_entry(tmp_path, entry())
    assert cli.main(["validate", "-q", str(path)]) == 0


def test_validate_missing_file_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_schema_is_fresh():
    assert cli.main(["schema", "--check"]) == 0
    schema = json.loads(SCHEMA_PATH.read_text())
    assert "token_pruning" in schema["$defs"]["Placement"]["properties"]["techniques"]["items"]["enum"]
    assert schema["additionalProperties"] is False


def test_repository_paper_files_start_with_the_schema_comment():
    from tools.catalogue.paths import SCHEMA_COMMENT
    from tools.catalogue.validate import paper_files

    for path in paper_files():
        assert path.read_text(encoding="utf-8").split("\n", 1)[0] == SCHEMA_COMMENT, path


def test_new_dry_run_prints_a_valid_entry(capsys):
    code = cli.main(
        [
            "new",
            "--id",
            "demo-2025",
            "--title",
            "A demo method for pruning visual tokens",
            "--author",
            "Ada Lovelace",
            "--year",
            "2025",
            "--arxiv",
            "2501.00001",
            "--technique",
            "token_pruning",
            "--cell",
            "prefill.density",
            "--training",
            "training-free",
            "--source",
            "https://arxiv.org/abs/2501.00001",
            "--dry-run",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and 'id: "demo-2025"' in out and 'arxiv: "2501.00001"' in out


def test_new_writes_atomically_and_refuses_duplicates(tmp_path, monkeypatch, capsys):
    from tools.catalogue import entries, validate

    papers = tmp_path / "papers"
    write_entry(papers, entry())
    monkeypatch.setattr(entries, "PAPERS_DIR", papers)
    monkeypatch.setattr(validate, "PAPERS_DIR", papers)
    monkeypatch.setattr(entries.paper_path, "__defaults__", (papers,))
    monkeypatch.setattr(entries.write_paper, "__defaults__", (papers,))
    monkeypatch.setattr(validate.paper_files, "__defaults__", (papers,))
    args = _new_demo("A demo method for pruning visual tokens", "https://arxiv.org/abs/2501.00001")
    assert cli.main(args) == 0
    written = papers / "demo-2025.yaml"
    assert written.exists() and cli.main(["validate", "-q", str(written)]) == 0
    assert 'authors_status: "unknown"' in written.read_text()
    assert cli.main(args) == 2
    assert "refusing to write" in capsys.readouterr().err
    dup = args.copy()
    dup[dup.index("demo-2025")] = "other-2025"
    dup[dup.index("2501.00001")] = "2403.06764"
    assert cli.main(dup) == 2
    assert "the same arXiv id 2403.06764: already catalogued as papers/fastv-2024.yaml" in capsys.readouterr().err
    # --dry-run runs every check: a variant of a catalogued title is refused too, and nothing is written
    variant = args.copy()
    variant[variant.index("demo-2025")] = "fastv-copy-2024"
    variant[variant.index("2501.00001")] = "2501.00002"
    variant[variant.index("A demo method for pruning visual tokens")] = (
        "An image is worth 1/2 tokens after layer 2: plug-and-play inference acceleration for LVLMs"
    )
    assert cli.main([*variant, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "dry run: would refuse" in err and "already catalogued as papers/fastv-2024.yaml" in err
    assert sorted(p.name for p in papers.iterdir()) == ["demo-2025.yaml", "fastv-2024.yaml"]


def _new_demo(title: str, source: str) -> list[str]:
    """``new`` for the demo paper 2501.00001 (token pruning in prefill)."""
    paper = ["--id", "demo-2025", "--title", title, "--year", "2025", "--arxiv", "2501.00001", "--source", source]
    return ["new", *paper, "--technique", "token_pruning", "--cell", "prefill.density"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--first-version", "2025-13-45"], "is not a date"),
        (["--cell", "decode.memory"], "is not allowed for any"),
    ],
)
def test_new_rejects_bad_options_clearly(extra, message, capsys, tmp_path):
    code = cli.main([*_new_demo("A demo method", "s"), "--dry-run", *extra])
    err = capsys.readouterr().err
    assert code in (1, 2) and message in err and "Traceback" not in err


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    from tools.catalogue import yamlio

    target = tmp_path / "x.yaml"
    target.write_text("old", encoding="utf-8")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(yamlio.os, "replace", boom)
    with pytest.raises(OSError):
        yamlio.atomic_write(target, "new content")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def _paper_sample(n=40):
    from tools.catalogue.validate import paper_files

    files = paper_files()
    return [str(p) for p in files[:: max(1, len(files) // n)]]


def test_paper_files_pass_check_jsonschema_like_pre_commit():
    files = _paper_sample()
    if not files:
        pytest.skip("no papers yet")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--schemafile", str(SCHEMA_PATH), *files],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_paper_files_pass_yamllint_like_pre_commit():
    files = _paper_sample()
    if not files:
        pytest.skip("no papers yet")
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "-c", ".yamllint.yaml", *files],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_catches_the_yaml_traps(tmp_path):
    bad = write_entry(tmp_path, entry())
    bad.write_text(
        bad.read_text().replace('arxiv: "2403.06764"', "arxiv: 2403.06764").replace('venue: "ECCV 2024"', "venue: yes"),
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "-c", str(ROOT / ".yamllint.yaml"), str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "truthy" in result.stdout
