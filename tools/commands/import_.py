"""``python -m tools import``: bulk-import JSON Lines rows (paper lists, author lists, verified metadata).

The catalogue was populated with::

    python -m tools import ../shared/literature/papers_seed.jsonl \\
        --authors ../shared/literature/papers_authors.jsonl \\
        --verified verified_A.jsonl --verified verified_B.jsonl --verified verified_C.jsonl \\
        --verified tools/data/verified_extra.jsonl

Running the same command again changes nothing. See tools/importer.py for the rules.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from tools.cli import UserError
from tools.importer import CURATED_PLACEMENTS, apply_import, plan_import
from tools.paths import PAPERS_DIR, display_path

NAME = "import"
HELP = "import papers from JSON Lines rows (+ --authors, --verified files); idempotent, keeps hand-curated fields"


def configure(parser) -> None:
    parser.add_argument("rows", nargs="*", type=Path, help="JSON Lines files of list rows (the seed's format)")
    parser.add_argument("--authors", action="append", type=Path, default=[], metavar="FILE",
                        help="JSON Lines author lists (papers_authors.jsonl format); repeat for several")
    parser.add_argument("--verified", action="append", type=Path, default=[], metavar="FILE",
                        help="JSON Lines of verified metadata (authoritative over the lists); repeat for several")
    parser.add_argument("--placements", type=Path, default=CURATED_PLACEMENTS,
                        help=f"curated placement decisions (default {display_path(CURATED_PLACEMENTS)})")
    parser.add_argument("--papers-dir", type=Path, default=PAPERS_DIR, help="where the entries live (default papers/)")
    parser.add_argument("--today", help="the date written as last_verified for unverified changes (YYYY-MM-DD)")
    parser.add_argument("--dry-run", action="store_true", help="report what would change, write nothing")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also list every note (merged rows, dropped claims)")


def run(args) -> int:
    if not args.rows and not args.verified:
        raise UserError("give at least one rows file or --verified FILE")
    for path in [*args.rows, *args.authors, *args.verified]:
        if not path.is_file():
            raise UserError(f"{path}: no such file")
    try:
        today = dt.date.fromisoformat(args.today) if args.today else None
    except ValueError:
        raise UserError(f"--today {args.today!r} is not a date (YYYY-MM-DD)") from None
    report = plan_import(args.rows, authors=args.authors, verified=args.verified, curated_path=args.placements,
                         papers_dir=args.papers_dir, today=today)
    written = [] if args.dry_run else apply_import(report)  # write before printing: output may go to a closed pipe
    for line in report.summary_lines():
        print(line)
    notes = report.notes
    if notes:
        print(f"{len(notes)} note(s)" + ("" if args.verbose else " (-v lists them)"))
        if args.verbose:
            for note in notes:
                print(f"  {note}")
    if args.dry_run:
        print("dry run: nothing written")
    else:
        print(f"wrote {len(written)} file(s) in {display_path(args.papers_dir)}")
    return 0
