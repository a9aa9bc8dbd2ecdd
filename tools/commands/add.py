"""``python -m tools add``: the one way papers enter the catalogue.

``add <arXiv id or URL>...`` creates entries from arXiv, with a placement suggested for review: it fetches title, all
authors, the v1 date and year, categories, DOI, journal reference and comment (one request for all ids); refuses a
paper the catalogue already has (tools/catalogue/same_paper.py: the same arXiv id or DOI, or a variant of its title,
shown
beside the entry it matches) or that the rejected list holds; validates every entry before anything is written, and
writes each file atomically. See tools/arxiv/entries.py for how the facts become an entry.

``add --from FILE`` reads verification records (the format is in CONTRIBUTING.md; JSON Lines, or a YAML list) and
creates, updates or rejects entries (tools/arxiv/records.py): every record is checked (schema, taxonomy, sources, the
rejected list, duplicates) before anything is written; a bad record is one line ``file:line: field: message``.

With several ids or records it is all or nothing; ``--dry-run`` runs every check and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections import Counter
from pathlib import Path

from tools.arxiv.entries import entry_from_record
from tools.arxiv.options import add_source_options, source_from_args
from tools.arxiv.record_format import read_records
from tools.arxiv.records import apply_plan, plan_records
from tools.arxiv.source import parse_arxiv_ref, reports_remote_failures
from tools.catalogue.entries import build_paper, conflicts_with, to_yaml_data, write_paper
from tools.catalogue.paths import PAPERS_DIR, display_path
from tools.catalogue.problems import ProblemError, UserError
from tools.catalogue.rejected import REJECTED_PATH, read_rejected
from tools.catalogue.taxonomy import load_taxonomy
from tools.catalogue.validate import catalogue_for_update, existing_papers, paper_files
from tools.catalogue.yamlio import dump_entry

NAME = "add"
HELP = (
    "add papers: from arXiv ids or URLs (facts fetched from arXiv; placement suggested for review), or from "
    "verification records (--from FILE)"
)


def configure(parser) -> None:
    """The command's options."""
    parser.add_argument(
        "refs",
        nargs="*",
        metavar="ID_OR_URL",
        help="arXiv ids or URLs: 2403.06764, arXiv:2403.06764v2, https://arxiv.org/abs/2403.06764",
    )
    parser.add_argument(
        "--from",
        dest="record_files",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="verification records to apply (JSON Lines, or a YAML list; repeat for several files)",
    )
    parser.add_argument("--papers-dir", type=Path, default=PAPERS_DIR, help="where the entries live (default papers/)")
    parser.add_argument(
        "--rejected",
        type=Path,
        default=REJECTED_PATH,
        help=f"the rejected list (default {display_path(REJECTED_PATH)})",
    )
    parser.add_argument("--dry-run", action="store_true", help="run every check; print instead of writing")
    add_source_options(parser)


def parse_refs(refs: list[str]) -> list[str]:
    """arXiv ids from ids or abstract / PDF addresses; UserError for anything else."""
    ids, bad = [], []
    for ref in refs:
        try:
            ids.append(parse_arxiv_ref(ref)[0])
        except ValueError as exc:
            bad.append(str(exc))
    if bad:
        raise UserError("; ".join(bad))
    return list(dict.fromkeys(ids))


@reports_remote_failures
def run(args) -> int:
    """Add papers from arXiv, or from verification records with ``--from``."""
    if args.record_files and args.refs:
        raise UserError("give arXiv ids or --from FILE, not both")
    if args.record_files:
        return add_from_records(args)
    if not args.refs:
        raise UserError("give arXiv ids or URLs, or --from FILE")
    ids = parse_refs(args.refs)
    taxonomy = load_taxonomy()
    existing, taken = existing_papers(args.papers_dir, taxonomy)
    rejected = read_rejected(args.rejected)
    by_arxiv = {p.arxiv: p for p in existing.values() if p.arxiv}
    known = [
        f"arXiv {i}: already catalogued as {display_path(args.papers_dir / (by_arxiv[i].id + '.yaml'))}"
        for i in ids
        if i in by_arxiv
    ]
    known += [f"arXiv {i}: {rejected.refusal(i)}" for i in ids if rejected.refusal(i)]
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


# ------------------------------------------------------------------------------------------------ --from FILE
def add_from_records(args) -> int:
    """Apply verification record files (``--from``): check everything, then write all or nothing."""
    records, problems = [], []
    for path in args.record_files:
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        good, bad = read_records(path)
        records += good
        problems += bad
    taxonomy = load_taxonomy()
    files = paper_files(args.papers_dir)
    catalogue = catalogue_for_update(args.papers_dir, taxonomy)
    taken = {f.stem for f in files} | set(catalogue.papers)
    rejected = read_rejected(args.rejected)
    plan = plan_records(records, catalogue.papers, taken, rejected, taxonomy)
    problems += plan.problems
    if problems:
        raise ProblemError(sorted(problems, key=lambda p: (p.file, p.line)))
    verb = "would " if args.dry_run else ""
    fields, filled = Counter(), Counter()
    for step in plan.steps:
        rec = step.located.record
        label = f"arXiv {rec.arxiv}" if rec.arxiv else (rec.id or "")
        target = f"papers/{step.paper_id}.yaml"
        if step.action == "create":
            print(f"{verb}create {target} ({label})")
        elif step.action == "update":
            fields.update(step.changed)
            filled.update(step.filled)
            what = [*step.changed, *(f"{f} (was empty)" for f in step.filled)]
            retired = f"; {step.retired} retired value(s) kept as disagreements" if step.retired else ""
            print(f"{verb}update {target}: {', '.join(what) or 'sources, review state'}{retired}")
            for value in step.unattributed:
                print(f"  retired without a source to name (not kept): {value}")
        elif step.action == "reject":
            removed = f" and remove {target}" if step.removes else ""
            print(f"{verb}reject {label} ({rec.exclude_reason}){removed}")
    changed = ", ".join(f"{n} {f}" for f, n in fields.most_common())
    changed = f"changed: {changed}" if changed else ""
    if filled:
        changed += ("; " if changed else "") + "filled: " + ", ".join(f"{n} {f}" for f, n in filled.most_common())
    print(
        f"{len(plan.steps)} record(s): {plan.count('create')} created, {plan.count('update')} updated"
        f"{f' ({changed})' if changed else ''}, {plan.count('unchanged')} unchanged, {plan.count('reject')} "
        f"rejected ({sum(1 for s in plan.steps if s.removes)} removed from the catalogue)"
    )
    if args.dry_run:
        print("dry run: nothing written", file=sys.stderr)
        return 0
    apply_plan(plan, args.papers_dir, catalogue.files, rejected)
    return 0
