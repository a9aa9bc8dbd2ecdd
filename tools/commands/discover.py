"""``python -m tools discover --since DATE``: find new arXiv papers for the catalogue and queue them for triage.

One arXiv query per technique (cs.CV, cs.CL, cs.LG, cs.AI by default), made of the keywords taxonomy.yaml attaches to
it (every content word of a keyword must occur in the abstract) and the submission-date window. Papers the catalogue
already has (arXiv id, DOI or a near-duplicate title), rejected ones (tools/data/rejected.yaml) and queued ones
are dropped; the rest are ranked by relevance (tools/arxiv/placement.py) and added to the triage queue
(tools/data/triage_queue.yaml) with a suggested placement. Review them with ``python -m tools triage``. Every run that
updates the queue is recorded in tools/data/discovery_log.yaml (the dates, categories and techniques searched, and
any query cut at its result limit), from which the website says how far discovery has covered
(tools/catalogue/discovery_log.py).
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from pathlib import Path

from tools.arxiv.options import add_source_options, source_from_args
from tools.arxiv.placement import suggest_placement
from tools.arxiv.source import reports_remote_failures
from tools.arxiv.triage_state import Candidate, add_state_options, read_queue, write_queue
from tools.catalogue.citekeys import STOPWORDS
from tools.catalogue.discovery_log import DEFAULT_CATEGORIES, LOG_PATH, DiscoveryRun, record_run
from tools.catalogue.paths import PAPERS_DIR, display_path
from tools.catalogue.problems import UserError
from tools.catalogue.rejected import read_rejected
from tools.catalogue.same_paper import Described, duplicate_pairs
from tools.catalogue.taxonomy import load_taxonomy
from tools.catalogue.validate import catalogue_for_update

NAME = "discover"
HELP = "query arXiv with the taxonomy's keywords and queue new candidates for triage"


def configure(parser) -> None:
    """The command's options."""
    parser.add_argument("--since", required=True, help="first submission date to consider (YYYY-MM-DD)")
    parser.add_argument("--until", help="last submission date (YYYY-MM-DD, default today)")
    parser.add_argument(
        "--category",
        action="append",
        dest="categories",
        metavar="CAT",
        help=f"arXiv category to search (repeat; default {' '.join(DEFAULT_CATEGORIES)})",
    )
    parser.add_argument(
        "--technique",
        action="append",
        default=[],
        metavar="ID",
        help="only these techniques' keywords (repeat; default all)",
    )
    parser.add_argument(
        "--max-per-technique", type=int, default=100, metavar="N", help="results read per technique query (default 100)"
    )
    parser.add_argument(
        "--min-relevance", type=float, default=1.0, help="drop candidates scoring below this (default 1.0)"
    )
    parser.add_argument("--papers-dir", type=Path, default=PAPERS_DIR, help="where the entries live (default papers/)")
    parser.add_argument("--dry-run", action="store_true", help="list the candidates, leave the queue alone")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--log", type=Path, default=LOG_PATH, help=f"where runs are recorded (default {display_path(LOG_PATH)})"
    )
    add_state_options(parser)
    add_source_options(parser)


def _date(text: str | None, option: str) -> dt.date:
    if text is None:
        return dt.date.today()
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise UserError(f"{option} {text!r} is not a date (YYYY-MM-DD)") from None


def keyword_clause(keyword: str) -> str:
    """A taxonomy keyword as an arXiv query: every content word in the abstract."""
    words = [w for w in re.findall(r"[A-Za-z0-9]+", keyword) if w.lower() not in STOPWORDS]
    return "(" + " AND ".join(f"abs:{w}" for w in words) + ")"


def build_query(keywords: list[str], categories: list[str], since: dt.date, until: dt.date) -> str:
    """The arXiv search query of a technique's keywords within categories and submission dates."""
    cats = " OR ".join(f"cat:{c}" for c in categories)
    words = " OR ".join(keyword_clause(k) for k in keywords)
    return f"({cats}) AND ({words}) AND submittedDate:[{since:%Y%m%d}0000 TO {until:%Y%m%d}2359]"


def _checked_arguments(args, taxonomy):
    """``(since, until, categories, techniques)`` from the command line; UserError for a bad value."""
    since, until = _date(args.since, "--since"), _date(args.until, "--until")
    if since > until:
        raise UserError(f"--since {since} is after --until {until}")
    if args.max_per_technique < 1:
        raise UserError("--max-per-technique must be at least 1")
    categories = args.categories or DEFAULT_CATEGORIES
    bad = [c for c in categories if not re.fullmatch(r"[a-z-]+(\.[A-Za-z-]+)?", c)]
    if bad:
        raise UserError(f"not arXiv categories: {', '.join(bad)} (e.g. cs.CV)")
    unknown = [t for t in args.technique if t not in taxonomy.technique_by_id]
    if unknown:
        raise UserError(f"unknown technique(s) {', '.join(unknown)} (see techniques in taxonomy.yaml)")
    techniques = [taxonomy.technique_by_id[t] for t in args.technique] or list(taxonomy.techniques)
    return since, until, categories, techniques


def _search(args, source, techniques, categories, since, until):
    """One arXiv query per technique: ``(papers by arXiv id, result count, techniques whose query hit the limit)``."""
    found: dict = {}
    iterator = techniques
    if not args.no_progress:
        from tqdm import tqdm

        iterator = tqdm(techniques, unit="query", desc="arXiv", file=sys.stderr, disable=None, leave=False)
    results, truncated = 0, []
    for technique in iterator:
        query = build_query(list(technique.keywords), categories, since, until)
        records = source.search(query, args.max_per_technique, label=f"{technique.id} since {since}")
        results += len(records)
        if len(records) >= args.max_per_technique:
            truncated.append(technique.id)
        for record in records:
            found.setdefault(record.arxiv, record)
    return found, results, truncated


def _ranked(fresh, duplicates, taxonomy, min_relevance, today, dropped) -> list:
    """The fresh records that are not near-duplicates, as candidates with a suggested placement, above the
    relevance threshold (``dropped`` counts the others)."""
    new = []
    for record in fresh:
        if record.arxiv in duplicates:
            continue
        suggestion = suggest_placement(record.title, record.abstract, taxonomy)
        if suggestion.relevance < min_relevance:
            dropped["below the relevance threshold"] += 1
            continue
        new.append(
            Candidate(
                record=record,
                relevance=suggestion.relevance,
                discovered=today,
                matched=suggestion.matched,
                techniques=suggestion.techniques,
                cells=suggestion.cells,
                modality=suggestion.modality,
            )
        )
    return new


@reports_remote_failures
def run(args) -> int:
    """Search arXiv for new candidates and add them to the triage queue."""
    taxonomy = load_taxonomy()
    since, until, categories, techniques = _checked_arguments(args, taxonomy)
    queue = read_queue(args.queue)
    rejected = read_rejected(args.rejected).arxiv_ids
    catalogue = catalogue_for_update(args.papers_dir, taxonomy)
    catalogued_ids = {p.arxiv for p in catalogue.papers.values() if p.arxiv}
    catalogued_dois = {p.doi.lower() for p in catalogue.papers.values() if p.doi}

    found, results, truncated = _search(args, source_from_args(args), techniques, categories, since, until)

    dropped = {
        "catalogued": 0,
        "rejected": 0,
        "queued": 0,
        "outside the dates or categories": 0,
        "below the relevance threshold": 0,
    }
    queued = {c.arxiv for c in queue}
    fresh = []
    for record in found.values():
        if record.arxiv in catalogued_ids or (record.doi and record.doi.lower() in catalogued_dois):
            dropped["catalogued"] += 1
        elif record.arxiv in rejected:
            dropped["rejected"] += 1
        elif record.arxiv in queued:
            dropped["queued"] += 1
        elif not (since <= record.first_version <= until) or not set(record.categories) & set(categories):
            dropped["outside the dates or categories"] += 1
        elif not record.withdrawn:
            fresh.append(record)
    duplicates = _near_duplicates(fresh, catalogue.papers)
    dropped["catalogued"] += len(duplicates)
    today = dt.date.today()
    new = _ranked(fresh, duplicates, taxonomy, args.min_relevance, today, dropped)
    # The queue keeps its candidates, minus those catalogued or rejected since.
    kept = [c for c in queue if c.arxiv not in catalogued_ids and c.arxiv not in rejected]
    pruned = len(queue) - len(kept)
    print(
        f"{len(techniques)} quer{'y' if len(techniques) == 1 else 'ies'}, {results} results, {len(found)} papers; "
        f"{len(new)} new candidate(s)"
        + "".join(f"; {n} {why}" for why, n in dropped.items() if n)
        + (f"; {pruned} queued candidate(s) now catalogued or rejected, removed" if pruned else "")
    )
    for cand in sorted(new, key=lambda c: (-c.relevance, c.arxiv))[:20]:
        print(f"  {cand.relevance:5.2f}  {cand.arxiv}  {cand.record.title}  -> {'+'.join(cand.techniques)}")
    if truncated:
        print(
            f"{len(truncated)} quer{'y' if len(truncated) == 1 else 'ies'} returned the --max-per-technique limit "
            f"and may have missed papers ({', '.join(truncated)}): this window is not recorded as complete"
        )
    if args.dry_run:
        print("dry run: the queue is unchanged")
        return 0
    if new or pruned:
        write_queue(kept + new, args.queue)
        print(
            f"queue: {display_path(args.queue)} ({len(kept) + len(new)} candidate(s)); "
            "review with `python -m tools triage`"
        )
    record_run(
        DiscoveryRun(
            since=since,
            until=until,
            ran_on=today,
            categories=list(categories),
            techniques="all" if not args.technique else sorted(set(args.technique)),
            results=results,
            truncated=truncated,
        ),
        args.log,
    )
    return 0


def _near_duplicates(records, papers) -> set[str]:
    """arXiv ids of records that describe a catalogued paper under another id (tools/catalogue/same_paper.py)."""
    new = {f"\0{r.arxiv}": r for r in records}
    pool = [Described.of(p) for p in papers.values()]
    pool += [Described(key, r.title, tuple(r.authors), None, r.doi) for key, r in new.items()]
    out = set()
    for match in duplicate_pairs(pool, involving=set(new)):
        if (match.a in new) != (match.b in new):
            out.add(new[match.a if match.a in new else match.b].arxiv)
    return out
