"""``python -m tools triage``: review the candidates ``discover`` queued.

Without options it lists the queue. ``--accept ID`` creates the entry from the facts arXiv gave when the candidate was
found (no network; placement suggested, ``needs_review: true``); ``--reject ID [--reason TEXT]`` records the id in
the rejected list (tools/data/rejected.yaml) so ``discover`` never proposes it again; ``--interactive`` asks about
each candidate. A candidate on the rejected list is never accepted.
Every entry is validated and checked against the catalogue before anything is written; then the entries, the rejected
list and the queue are written, each atomically.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tools.arxiv.entries import entry_from_record
from tools.arxiv.source import parse_arxiv_ref
from tools.arxiv.triage_state import add_state_options, read_queue, write_queue
from tools.catalogue.entries import build_paper, conflicts_with, write_paper
from tools.catalogue.paths import PAPERS_DIR, display_path
from tools.catalogue.problems import UserError
from tools.catalogue.rejected import Rejection, read_rejected
from tools.catalogue.taxonomy import load_taxonomy
from tools.catalogue.validate import existing_papers

NAME = "triage"
HELP = "list, accept (creating entries) or reject (remembered) the candidates queued by discover"


def configure(parser) -> None:
    """The command's options."""
    parser.add_argument("--accept", nargs="+", default=[], metavar="ID", help="arXiv ids to add to the catalogue")
    parser.add_argument("--reject", nargs="+", default=[], metavar="ID", help="arXiv ids to reject for good")
    parser.add_argument("--reason", help="why the rejected papers do not belong (recorded)")
    parser.add_argument("-i", "--interactive", action="store_true", help="ask about each candidate in turn")
    parser.add_argument("--papers-dir", type=Path, default=PAPERS_DIR, help="where the entries live (default papers/)")
    add_state_options(parser)


def _ids(refs: list[str]) -> list[str]:
    try:
        return list(dict.fromkeys(parse_arxiv_ref(r)[0] for r in refs))
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _list(queue) -> None:
    if not queue:
        print("the triage queue is empty (run `python -m tools discover --since YYYY-MM-DD`)")
        return
    for cand in queue:
        print(f"{cand.relevance:5.2f}  {cand.arxiv}  {cand.record.title}")
        print(f"       suggested {'+'.join(cand.techniques)} in {'+'.join(cand.cells)}; {cand.record.url}")
    print(f"{len(queue)} candidate(s): `python -m tools triage --accept ID... --reject ID... --reason TEXT`")


def _ask(queue) -> tuple[list[str], list[str]]:
    accept, reject = [], []
    for cand in queue:
        print(
            f"\n{cand.arxiv}  {cand.record.title}\n  {', '.join(cand.record.authors[:6])}"
            f"{' et al.' if len(cand.record.authors) > 6 else ''}\n  {cand.record.abstract[:600]}\n"
            f"  suggested {'+'.join(cand.techniques)} in {'+'.join(cand.cells)} (relevance {cand.relevance})"
        )
        while True:
            answer = input("[a]ccept, [r]eject, [s]kip, [q]uit? ").strip().lower()[:1]
            if answer in ("a", "r", "s", "q"):
                break
        if answer == "q":
            break
        if answer == "a":
            accept.append(cand.arxiv)
        elif answer == "r":
            reject.append(cand.arxiv)
    return accept, reject


def run(args) -> int:
    """Accept queued candidates as entries or reject them onto the rejected list."""
    queue = read_queue(args.queue)
    rejections = read_rejected(args.rejected)
    accept, reject = _ids(args.accept), _ids(args.reject)
    if args.interactive:
        if accept or reject:
            raise UserError("--interactive decides for itself: give no --accept or --reject with it")
        try:
            accept, reject = _ask(queue)
        except EOFError:
            raise UserError("--interactive needs a terminal (use --accept / --reject)") from None
    elif not accept and not reject:
        _list(queue)
        return 0
    by_id = {c.arxiv: c for c in queue}
    both = set(accept) & set(reject)
    if both:
        raise UserError(f"both accepted and rejected: {', '.join(sorted(both))}")
    missing = [i for i in accept + reject if i not in by_id]
    if missing:
        raise UserError(f"not in the triage queue ({display_path(args.queue)}): {', '.join(missing)}")
    if args.reason and not reject:
        raise UserError("--reason goes with --reject")

    taxonomy = load_taxonomy()
    existing, taken = existing_papers(args.papers_dir, taxonomy)
    today = dt.date.today()
    new, refusals = [], []
    for arxiv_id in accept:
        refusal = rejections.refusal(arxiv_id)
        if refusal:
            refusals.append(f"arXiv {arxiv_id} {by_id[arxiv_id].record.title!r}: {refusal}")
            continue
        record = by_id[arxiv_id].record
        paper = build_paper(entry_from_record(record, taxonomy, taken, today), taxonomy, label=f"arXiv {arxiv_id}")
        reasons = conflicts_with(paper, {**existing, **{p.id: p for p in new}})
        if reasons:
            refusals.append(f"arXiv {arxiv_id} {record.title!r}: " + "; ".join(reasons))
            continue
        taken.add(paper.id)
        new.append(paper)
    if refusals:
        raise UserError("refusing to accept (reject these instead?):\n" + "\n".join(refusals))

    for paper in new:
        path = write_paper(paper, args.papers_dir)
        print(
            f"accepted {paper.arxiv}: wrote {display_path(path)} "
            f"({'+'.join(paper.placement.techniques)} in {'+'.join(paper.placement.cells)}, needs review)"
        )
    if reject:
        for arxiv_id in reject:
            rejections.add(Rejection(arxiv_id, by_id[arxiv_id].record.title, today, args.reason))
            print(f"rejected {arxiv_id}: {by_id[arxiv_id].record.title}")
        rejections.write()
    handled = set(accept) | set(reject)
    write_queue([c for c in queue if c.arxiv not in handled], args.queue)
    print(f"{len(queue) - len(handled)} candidate(s) left in {display_path(args.queue)}")
    return 0
