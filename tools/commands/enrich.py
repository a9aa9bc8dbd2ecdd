"""``python -m tools enrich [ID...]``: refresh entries from arXiv (authors, venue, year, DOI, v1 date, latest version).

Fetches the entries' arXiv records in batches (one request per batch, a progress bar on a terminal), plans every
change first and shows it as a diff, then writes the changed files all or nothing (a Ctrl-C while writing either
changes no file or, once the files are being renamed into place, lets all of them land first). Missing and
machine-written facts are filled or updated; curated ones are only reported unless ``--force`` (rules:
tools/arxiv/entries.py). A remote
failure, or an id arXiv does not know or has withdrawn, writes nothing (``--keep-going`` writes the others and still
exits 1). Running it twice changes nothing the second time.
"""

from __future__ import annotations

import datetime as dt
import difflib
import sys
from pathlib import Path

from tools.arxiv.entries import plan_enrichment
from tools.arxiv.options import add_source_options, source_from_args
from tools.arxiv.source import (
    ID_BATCH,
    ArxivSourceError,
    lookup_failures,
    parse_arxiv_ref,
    reports_remote_failures,
)
from tools.catalogue.entries import build_paper, paper_path, to_yaml_data
from tools.catalogue.paths import PAPERS_DIR, display_path
from tools.catalogue.problems import ProblemError, UserError
from tools.catalogue.taxonomy import load_taxonomy
from tools.catalogue.validate import catalogue_for_update
from tools.catalogue.yamlio import dump_entry, write_all_or_nothing

NAME = "enrich"
HELP = "refresh entries from arXiv: missing or stale authors, venue (journal_ref), DOI, v1 date, latest version"


def configure(parser) -> None:
    """The command's options."""
    parser.add_argument(
        "targets",
        nargs="*",
        metavar="ID",
        help="paper ids or arXiv ids to refresh (default: every entry with an arXiv id)",
    )
    parser.add_argument("--papers-dir", type=Path, default=PAPERS_DIR, help="where the entries live (default papers/)")
    parser.add_argument("--force", action="store_true", help="also replace curated values that arXiv contradicts")
    parser.add_argument("--dry-run", action="store_true", help="show the diff, write nothing")
    parser.add_argument("--batch-size", type=int, default=ID_BATCH, help=f"ids per request (default {ID_BATCH})")
    parser.add_argument(
        "--keep-going", action="store_true", help="write the other entries when some ids fail (still exits 1)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-q", "--quiet", action="store_true", help="no diffs, only the summary")
    add_source_options(parser)


def _select(targets: list[str], papers: dict) -> list:
    if not targets:
        return sorted((p for p in papers.values() if p.arxiv), key=lambda p: p.id)
    by_arxiv = {p.arxiv: p for p in papers.values() if p.arxiv}
    chosen, unknown = [], []
    for target in targets:
        paper = papers.get(target)
        if paper is None:
            try:
                paper = by_arxiv.get(parse_arxiv_ref(target)[0])
            except ValueError:
                paper = None
        if paper is None:
            unknown.append(target)
        elif not paper.arxiv:
            raise UserError(f"{paper.id} has no arXiv id: nothing to refresh it from")
        elif paper not in chosen:
            chosen.append(paper)
    if unknown:
        raise UserError(f"not in the catalogue: {', '.join(unknown)}")
    return chosen


def _label(side: str, shown: str) -> str:
    return shown if shown.startswith("/") else f"{side}/{shown}"


def _progress(total: int, disabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(
        total=total, unit="paper", desc="arXiv", file=sys.stderr, disable=True if disabled else None, leave=False
    )


def _show_changes(changes, files, quiet: bool) -> None:
    """One line per changed entry, and its diff unless ``quiet``."""
    for paper, new_paper, plan in changes:
        path = files[paper.id]
        print(f"{paper.id}: " + "; ".join(plan.changed))
        if not quiet:
            old_text = path.read_text(encoding="utf-8")
            new_text = dump_entry(to_yaml_data(new_paper))
            shown = display_path(path)
            sys.stdout.writelines(
                difflib.unified_diff(
                    old_text.splitlines(True), new_text.splitlines(True), _label("a", shown), _label("b", shown)
                )
            )


@reports_remote_failures
def run(args) -> int:
    """Refresh entries from their arXiv records (all or nothing)."""
    if args.batch_size < 1 or args.batch_size > ID_BATCH:
        raise UserError(f"--batch-size must be between 1 and {ID_BATCH}")
    taxonomy = load_taxonomy()
    catalogue = catalogue_for_update(args.papers_dir, taxonomy)
    selected = _select(args.targets, catalogue.papers)
    if not selected:
        print("no entry with an arXiv id: nothing to refresh")
        return 0
    source = source_from_args(args)
    bar = _progress(len(selected), args.no_progress)
    try:
        records = source.fetch(
            [p.arxiv for p in selected], progress=bar.update if bar else None, batch_size=args.batch_size
        )
    finally:
        if bar is not None:
            bar.close()
    failures = [
        (f"arXiv {p.arxiv} ({display_path(catalogue.files[p.id])})", cause)
        for p in selected
        for _, cause in lookup_failures([p.arxiv], records)
    ]
    if failures and not args.keep_going:
        raise ArxivSourceError(failures)
    today = dt.date.today()
    dois = {p.doi.lower(): pid for pid, p in catalogue.papers.items() if p.doi}
    changes, kept_total, problems = [], 0, []
    for paper in selected:
        record = records.get(paper.arxiv)
        if record is None or record.withdrawn:
            continue
        plan = plan_enrichment(paper, record, taxonomy, today, force=args.force)
        kept_total += len(plan.kept)
        if not args.quiet:
            for line in plan.kept:
                print(f"{paper.id}: {line}")
        if not plan.changed:
            continue
        new_doi = (plan.data.get("doi") or "").lower()
        if new_doi and dois.get(new_doi, paper.id) != paper.id:
            problems.append(
                f"{paper.id}: arXiv gives DOI {plan.data['doi']}, which papers/{dois[new_doi]}.yaml "
                "already has: left unchanged (merge the two entries?)"
            )
            continue
        try:
            new_paper = build_paper(plan.data, taxonomy, label=display_path(catalogue.files[paper.id]))
        except ProblemError as exc:
            problems.extend(p.as_text() for p in exc.problems)
            continue
        if new_doi:
            dois[new_doi] = paper.id
        changes.append((paper, new_paper, plan))
    _show_changes(changes, catalogue.files, args.quiet)
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    interrupted = False
    if not args.dry_run:
        try:
            interrupted = write_all_or_nothing(
                [(paper_path(new.id, args.papers_dir), dump_entry(to_yaml_data(new))) for _, new, _ in changes]
            )
        except KeyboardInterrupt:
            print("interrupted while writing: no file was changed", file=sys.stderr)
            return 130
    verb = "would change" if args.dry_run else "changed"
    print(
        f"checked {len(selected)} entr{'y' if len(selected) == 1 else 'ies'} against arXiv: {verb} {len(changes)}"
        + (f"; {kept_total} curated value(s) kept (--force replaces them)" if kept_total else "")
        + (f"; {len(failures)} failed" if failures else "")
    )
    for subject, cause in failures:
        print(f"error: {subject}: {cause}", file=sys.stderr)
    if interrupted:
        print(f"interrupted while writing: all {len(changes)} changed file(s) were written first", file=sys.stderr)
        return 130
    return 1 if failures or problems else 0
