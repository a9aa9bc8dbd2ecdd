"""``python -m tools validate [FILE ...]``: check the taxonomy, every paper file, and the cross-file rules."""

from __future__ import annotations

import sys
from pathlib import Path

from tools.catalogue.problems import print_problems
from tools.catalogue.taxonomy import read_taxonomy
from tools.catalogue.validate import coverage, is_yaml_name, paper_files, validate_catalogue

NAME = "validate"
HELP = "validate taxonomy.yaml and the paper files (all of papers/ by default)"


def configure(parser) -> None:
    """The command's options."""
    parser.add_argument("files", nargs="*", type=Path, help="paper files to check (default: every papers/*.yaml)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print problems only")


def run(args) -> int:
    """Validate the taxonomy and every paper; print the problems and the coverage."""
    taxonomy, problems = read_taxonomy()
    if problems:
        print_problems(problems)
        print(f"taxonomy.yaml: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    if args.files:
        files = [f for f in args.files if is_yaml_name(f)]
        for f in files:
            if not f.exists() and not f.is_symlink():
                print(f"error: {f}: no such file", file=sys.stderr)
                return 2
    else:
        files = paper_files()
    cat = validate_catalogue(files, taxonomy)
    if cat.problems:
        print_problems(cat.problems)
        bad_files = len({p.file for p in cat.problems})
        print(f"{len(cat.problems)} problem(s) in {bad_files} file(s); {len(files)} file(s) checked", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"ok: {len(cat.papers)} paper(s) and the taxonomy are valid")
        c = coverage(cat.papers)
        print(
            f"venue checked on the proceedings: {c['venue checked']}/{c['papers']} (preprints searched without a "
            f"venue confirmed: {c['preprint searched']}); summaries {c['summary']}, "
            f"claims in {c['claims']}; no authors {c['no authors']}; placements to review {c['placement to review']}; "
            f"{c['facts with a source']}/{c['facts']} title, author, venue, placement and summary facts name their "
            f"page ({c['sources read on a copy']} sources read on a copy)"
        )
    return 0
