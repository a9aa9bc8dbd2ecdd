"""Committed generated files (JSON Schema, atlas.bib, the README section, mkdocs.yml): write them, or check that
the committed copy is fresh. One place for the rule "never edited by hand; CI fails when stale"."""

from __future__ import annotations

import sys
from pathlib import Path

from tools.catalogue.paths import display_path
from tools.catalogue.yamlio import atomic_write


def write_or_check(path: Path, text: str, *, check: bool, command: str, detail: str = "") -> int:
    """With ``check``: exit code 1 (and a hint to run ``command``) when ``path`` differs from ``text``, else 0.
    Without: write ``text`` atomically when it changed. ``detail`` is appended to the message, e.g. "(637 entries)"."""
    current = path.read_text(encoding="utf-8") if path.exists() else None
    suffix = f" {detail}" if detail else ""
    if check:
        if current != text:
            print(f"{display_path(path)} is stale: run `{command}`", file=sys.stderr)
            return 1
        print(f"ok: {display_path(path)} is fresh{suffix}")
        return 0
    if current != text:
        atomic_write(path, text)
    print(f"wrote {display_path(path)}{suffix}")
    return 0
