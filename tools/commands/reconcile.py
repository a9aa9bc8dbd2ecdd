"""``python -m tools reconcile [--output FILE]``: the reconciliation report (Markdown) from the entries."""

from __future__ import annotations

import sys
from pathlib import Path

from tools.catalogue.paths import display_path
from tools.catalogue.validate import load_catalogue
from tools.catalogue.yamlio import atomic_write
from tools.outputs.reconcile import render_reconciliation

NAME = "reconcile"
HELP = "render the reconciliation report (where sources disagree, what the catalogue keeps and why) as Markdown"


def configure(parser) -> None:
    """The command's options."""
    parser.add_argument("--output", type=Path, help="write the report to this file (default: standard output)")


def run(args) -> int:
    """Write the reconciliation report of the catalogue."""
    text = render_reconciliation(load_catalogue())
    if args.output is None:
        sys.stdout.write(text)
        return 0
    current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
    if current != text:
        atomic_write(args.output, text)
    print(f"wrote {display_path(args.output)}")
    return 0
