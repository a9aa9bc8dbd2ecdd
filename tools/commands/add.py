"""``python -m tools add <arXiv id or URL>...``: create entries from arXiv, with a placement suggested for review.

Fetches title, all authors, the v1 date and year, categories, DOI, journal reference and comment (one request for
all ids); refuses a paper the catalogue already has (same arXiv id or DOI, or a near-duplicate title, shown beside the
entry it matches); validates every entry before anything is written, and writes each file atomically. With several
ids it is all or nothing. See tools/arxiv_entries.py for how the facts become an entry.
"""
from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from tools.arxiv_entries import entry_from_record
from tools.arxiv_source import add_source_options, parse_arxiv_ref, reports_remote_failures, source_from_args
from tools.cli import UserError
from tools.entries import build_paper, conflicts_with, to_yaml_data, write_paper
from tools.paths import PAPERS_DIR, display_path
from tools.taxonomy import load_taxonomy
from tools.validate import catalogue_for_update, paper_files
from tools.yamlio import dump_entry

NAME = "add"
HELP = "add papers from arXiv ids or URLs (all facts fetched from arXiv; placement suggested for review)"


def configure(parser) -> None:
    parser.add_argument("refs", nargs="+", metavar="ID_OR_URL",
                        help="arXiv ids or URLs: 2403.06764, arXiv:2403.06764v2, https://arxiv.org/abs/2403.06764")
    parser.add_argument("--papers-dir", type=Path, default=PAPERS_DIR, help="where the entries live (default papers/)")
    parser.add_argument("--dry-run", action="store_true", help="print the entries instead of writing them")
    add_source_options(parser)


def parse_refs(refs: list[str]) -> list[str]:
    ids, bad = [], []
    for ref in refs:
        try:
            ids.append(parse_arxiv_ref(ref)[0])
        except ValueError as exc:
            bad.append(str(exc))
    if bad:
        raise UserError("; ".join(bad))
    return list(dict.fromkeys(ids))


def existing_papers(papers_dir: Path, taxonomy):
    """The catalogue's valid entries and every id already used by a file (valid or not)."""
    catalogue = catalogue_for_update(papers_dir, taxonomy)
    return catalogue.papers, {f.stem for f in paper_files(papers_dir)} | set(catalogue.papers)


@reports_remote_failures
def run(args) -> int:
    ids = parse_refs(args.refs)
    taxonomy = load_taxonomy()
    existing, taken = existing_papers(args.papers_dir, taxonomy)
    by_arxiv = {p.arxiv: p for p in existing.values() if p.arxiv}
    known = [f"arXiv {i}: already catalogued as {display_path(args.papers_dir / (by_arxiv[i].id + '.yaml'))}"
             for i in ids if i in by_arxiv]
    if known:
        raise UserError("refusing to add:\n" + "\n".join(known))
    source = source_from_args(args)
    records = source.lookup(ids)
    today = dt.date.today()
    new, refusals = [], []
    for arxiv_id in ids:
        record = records[arxiv_id]
        data = entry_from_record(record, taxonomy, taken, today)
        paper = build_paper(data, taxonomy, label=f"arXiv {arxiv_id}")
        reasons = conflicts_with(paper, {**existing, **{p.id: p for p, _ in new}})
        if reasons:
            refusals.append(f"arXiv {arxiv_id} {record.title!r}: " + "; ".join(reasons))
            continue
        taken.add(paper.id)
        new.append((paper, record))
    if refusals:
        raise UserError("refusing to add:\n" + "\n".join(refusals))
    for paper, record in new:
        details = [f"categories {', '.join(record.categories) or '-'}"]
        if record.journal_ref:
            details.append(f"journal_ref {record.journal_ref!r}")
        if record.comment:
            details.append(f"comment {record.comment!r}")
        placement = f"{'+'.join(paper.placement.techniques)} in {'+'.join(paper.placement.cells)}"
        if args.dry_run:
            print(f"# arXiv {record.arxiv}v{record.version}: {'; '.join(details)}")
            print(f"# suggested placement {placement}: needs review")
            sys.stdout.write(dump_entry(to_yaml_data(paper)))
            continue
        path = write_paper(paper, args.papers_dir)
        print(f"wrote {display_path(path)}: {paper.title}")
        print(f"  {'; '.join(details)}")
        print(f"  suggested placement {placement} (needs_review: true): check it, then set needs_review: false")
    if args.dry_run:
        print("# dry run: nothing written", file=sys.stderr)
    return 0

