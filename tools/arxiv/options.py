"""The command-line options every arXiv command shares (API address, delay between requests, timeout, retries)
and the source they build."""

from __future__ import annotations

import sys

from tools.arxiv.source import API_URL_ENV, DEFAULT_API_URL, DEFAULT_RETRIES, DEFAULT_TIMEOUT, DELAY_ENV, ArxivSource


# ================================================================================================= CLI options
def add_source_options(parser) -> None:
    """The options every command that talks to arXiv takes."""
    group = parser.add_argument_group("arXiv API")
    group.add_argument(
        "--api-url", metavar="URL", help=f"arXiv API endpoint (default ${API_URL_ENV}, else {DEFAULT_API_URL})"
    )
    group.add_argument(
        "--arxiv-delay",
        type=float,
        metavar="SECONDS",
        help=f"seconds between requests (default ${DELAY_ENV}, else 3; at least 3 on arxiv.org)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"the most one request may take, all of it (default {DEFAULT_TIMEOUT:g})",
    )
    group.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        help=f"retries of a failed request, with exponential backoff (default {DEFAULT_RETRIES})",
    )


def source_from_args(args) -> ArxivSource:
    """The run's one shared source; a bad setting is a usage error."""
    from tools.catalogue.problems import UserError

    try:
        return ArxivSource(
            api_url=args.api_url,
            delay=args.arxiv_delay,
            timeout=args.timeout,
            retries=args.retries,
            warn=lambda msg: print(f"note: {msg}", file=sys.stderr),
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
