"""``python -m tools schema [--check]``: write (or check) schema/paper.schema.json from the models + taxonomy."""
from __future__ import annotations

import sys

from tools.json_schema import render_schema
from tools.paths import SCHEMA_PATH, display_path
from tools.taxonomy import load_taxonomy
from tools.yamlio import atomic_write

NAME = "schema"
HELP = "generate the JSON Schema of paper files (--check: fail if the committed one is stale)"


def configure(parser) -> None:
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed schema is not up to date")


def run(args) -> int:
    text = render_schema(load_taxonomy())
    current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else None
    if args.check:
        if current != text:
            print(f"{display_path(SCHEMA_PATH)} is stale: run `python -m tools schema`", file=sys.stderr)
            return 1
        print(f"ok: {display_path(SCHEMA_PATH)} is fresh")
        return 0
    if current != text:
        atomic_write(SCHEMA_PATH, text)
    print(f"wrote {display_path(SCHEMA_PATH)}")
    return 0
