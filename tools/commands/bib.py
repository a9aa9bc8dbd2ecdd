"""``python -m tools bib``: write the whole catalogue to ``atlas.bib``; ``--compare FILE``: which entries of a user's
.bib the catalogue has and which it lacks; ``--check``: exit 1 if the committed ``atlas.bib`` is stale."""

from __future__ import annotations

import sys
from pathlib import Path

from tools.catalogue.paths import ROOT
from tools.catalogue.taxonomy import load_taxonomy
from tools.catalogue.validate import load_catalogue
from tools.outputs.generated import write_or_check

NAME = "bib"
HELP = "write atlas.bib from the catalogue (--compare FILE: which entries of your .bib it has; --check: is it fresh)"
BIB_PATH = ROOT / "atlas.bib"


def configure(parser) -> None:
    """The command's options."""
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="FILE",
        help="report which entries of FILE (a .bib) the catalogue has and which it lacks",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if atlas.bib is not up to date")
    parser.add_argument("--output", type=Path, default=BIB_PATH, help="where to write (default: atlas.bib)")


def run(args) -> int:
    """Write the catalogue's .bib, or check it is fresh."""
    from tools.catalogue.problems import UserError
    from tools.outputs.bibtex import check_bib, render_bib

    papers = load_catalogue()
    if args.compare is not None:
        try:
            text = args.compare.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise UserError(f"cannot read {args.compare}: {exc.strerror or exc}") from None
        result = check_bib(text, papers)
        total = len(result.found) + len(result.missing)
        print(f"{args.compare}: {total} entries; the catalogue has {len(result.found)}, lacks {len(result.missing)}")
        if result.failed_blocks:
            print(f"warning: {result.failed_blocks} block(s) of the file could not be parsed", file=sys.stderr)
        for key, pid in sorted(result.found.items()):
            print(f"  have   {key} -> papers/{pid}.yaml (matched by {result.how[key]})")
        for key, title in result.missing:
            print(f"  lacks  {key}: {title}")
        return 0
    return write_or_check(
        args.output,
        render_bib(papers, load_taxonomy()),
        check=args.check,
        command="python -m tools bib",
        detail=f"({len(papers)} entries)",
    )
