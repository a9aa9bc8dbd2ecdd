"""``python -m tools schema [--check]``: write (or check) schema/paper.schema.json from the models + taxonomy."""

from __future__ import annotations

from tools.catalogue.paths import SCHEMA_PATH
from tools.catalogue.taxonomy import load_taxonomy
from tools.outputs.generated import write_or_check
from tools.outputs.json_schema import render_schema

NAME = "schema"
HELP = "generate the JSON Schema of paper files (--check: fail if the committed one is stale)"


def configure(parser) -> None:
    """The command's options."""
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed schema is not up to date")


def run(args) -> int:
    """Write schema/paper.schema.json, or check it is fresh."""
    return write_or_check(
        SCHEMA_PATH, render_schema(load_taxonomy()), check=args.check, command="python -m tools schema"
    )
