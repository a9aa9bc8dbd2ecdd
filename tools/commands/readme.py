"""``python -m tools readme [--check]``: rewrite (or check) the README's generated matrix section."""
from __future__ import annotations

import sys

from tools.paths import ROOT, display_path
from tools.taxonomy import load_taxonomy
from tools.validate import load_catalogue
from tools.yamlio import atomic_write

NAME = "readme"
HELP = "rewrite the README's generated section (the stage x axis matrix); --check: exit 1 if it is stale"
README = ROOT / "README.md"


def configure(parser) -> None:
    parser.add_argument("--check", action="store_true", help="exit 1 if the README's generated section is stale")


def run(args) -> int:
    from tools.cli import UserError
    from tools.readme import MarkersMissing, update_readme

    if not README.exists():
        raise UserError(f"{display_path(README)} does not exist")
    current = README.read_text(encoding="utf-8")
    try:
        text = update_readme(current, load_catalogue(), load_taxonomy())
    except MarkersMissing as exc:
        raise UserError(str(exc)) from None
    if args.check:
        if current != text:
            print(f"{display_path(README)} is stale: run `python -m tools readme`", file=sys.stderr)
            return 1
        print(f"ok: {display_path(README)} is fresh")
        return 0
    if current != text:
        atomic_write(README, text)
    print(f"wrote {display_path(README)}")
    return 0
