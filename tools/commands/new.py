"""``python -m tools new``: scaffold a valid paper entry from command-line options, written atomically.

Every check runs before anything is written, ``--dry-run`` included: the schema and taxonomy, the sources (public
addresses), the rejected list, and the duplicate check against the catalogue (tools/catalogue/same_paper.py)."""

from __future__ import annotations

import datetime as dt
import sys

from tools.catalogue.entries import build_paper, conflicts_with, paper_path, to_yaml_data, write_paper
from tools.catalogue.problems import ProblemError, UserError
from tools.catalogue.rejected import read_rejected
from tools.catalogue.validate import validate_catalogue
from tools.catalogue.yamlio import dump_entry

NAME = "new"
HELP = "create papers/<id>.yaml from options (validated before it is written)"


def configure(parser) -> None:
    """The command's options."""
    parser.add_argument("--id", required=True, help="canonical id, e.g. fastv-2024 (lowercase, digits, hyphens)")
    parser.add_argument("--title", required=True)
    parser.add_argument("--short-name", help="the method's short name, e.g. FastV")
    parser.add_argument("--author", action="append", default=[], help="one author, 'Given Family' (repeat)")
    parser.add_argument("--authors-truncated", action="store_true", help="the author list is incomplete")
    parser.add_argument("--year", type=int, required=True)
    parser.add_argument("--first-version", help="date of arXiv v1, YYYY-MM-DD")
    parser.add_argument("--venue", default="arXiv", help='"CVPR 2025", or "arXiv" for a preprint (default)')
    parser.add_argument(
        "--venue-source",
        metavar="URL",
        help="the proceedings page (or the authors' statement) the venue was checked on",
    )
    parser.add_argument("--arxiv", help="arXiv id without version")
    parser.add_argument("--doi")
    parser.add_argument("--paper-url")
    parser.add_argument("--code", help="code repository URL")
    parser.add_argument(
        "--code-official",
        action="store_true",
        help="the code link is the authors' own (otherwise it is recorded as not verified)",
    )
    parser.add_argument("--technique", action="append", default=[], required=True, help="technique id (repeat)")
    parser.add_argument("--cell", action="append", default=[], required=True, help="cell, e.g. prefill.density")
    parser.add_argument("--modality", action="append", default=[], help="image, multi-image, video, audio, text")
    parser.add_argument("--training", choices=["training-free", "training-aware"])
    parser.add_argument("--summary", help="one to three sentences in your own words")
    parser.add_argument(
        "--source",
        required=True,
        metavar="URL",
        help="the public address where the facts were read (e.g. https://arxiv.org/abs/<id>)",
    )
    parser.add_argument(
        "--listed-in",
        action="append",
        default=[],
        metavar="LIST",
        help="a paper list that carries the paper, owner/repo@commit (repeat)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="run every check and print the entry instead of writing it"
    )


def run(args) -> int:
    """Create one entry from the options, validated before it is written."""
    try:
        first_version = dt.date.fromisoformat(args.first_version) if args.first_version else None
    except ValueError:
        raise UserError(f"--first-version {args.first_version!r} is not a date (YYYY-MM-DD)") from None
    provenance = {"title": args.source, "placement": args.source, "modality": args.source}
    for name, given in (
        ("authors", args.author),
        ("first_version", first_version),
        ("summary", args.summary),
        ("training", args.training),
    ):
        if given:
            provenance[name] = args.source
    if args.venue_source:
        provenance["venue"] = args.venue_source
    data = {
        "id": args.id,
        "title": args.title,
        "short_name": args.short_name,
        "authors": args.author,
        "authors_status": ("truncated" if args.authors_truncated else "complete") if args.author else "unknown",
        "year": args.year,
        "first_version": first_version,
        "venue": args.venue,
        "venue_checked": bool(args.venue_source),
        "arxiv": args.arxiv,
        "doi": args.doi,
        "paper_url": args.paper_url,
        "code": [{"url": args.code, "official": True if args.code_official else None}] if args.code else [],
        "placement": {"cells": args.cell, "techniques": args.technique, "method": "curated"},
        "modality": args.modality or ["image"],
        "training": args.training,
        "summary": args.summary,
        "provenance": provenance,
        "listed_in": args.listed_in,
        "last_verified": dt.date.today(),
    }
    data = {k: v for k, v in data.items() if v is not None or k == "training"}
    paper = build_paper(data, label=f"papers/{args.id}.yaml")
    catalogue = validate_catalogue()
    reasons = conflicts_with(paper, catalogue.papers)
    if paper_path(paper.id).exists() and paper.id not in catalogue.papers:
        reasons.append(f"papers/{paper.id}.yaml exists")
    refusal = read_rejected().refusal(paper.arxiv, paper.id)
    if refusal:
        reasons.append(refusal)
    if args.dry_run:
        sys.stdout.write(dump_entry(to_yaml_data(paper)))
    if reasons:
        raise UserError(("refusing to write: " if not args.dry_run else "dry run: would refuse: ") + "; ".join(reasons))
    if args.dry_run:
        print("dry run: every check passed; nothing written", file=sys.stderr)
        return 0
    path = write_paper(paper)
    print(f"wrote {path.relative_to(path.parent.parent)}; check it with `python -m tools validate`")
    return 0


__all__ = ["NAME", "HELP", "configure", "run", "ProblemError"]
