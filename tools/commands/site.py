"""``python -m tools site [--build] [--serve] [--output DIR]``: generate the website's pages and mkdocs.yml, build the
site with mkdocs-material (strict), and serve it locally."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tools.catalogue.discovery_log import LOG_PATH
from tools.catalogue.paths import display_path
from tools.catalogue.taxonomy import load_taxonomy
from tools.catalogue.validate import load_catalogue
from tools.outputs.generated import write_or_check

NAME = "site"
HELP = "generate the website (Markdown + mkdocs.yml); --build: build it strictly; --serve: build and serve it locally"


def configure(parser) -> None:
    """The command's options."""
    parser.add_argument("--build", action="store_true", help="build the static site with mkdocs (strict)")
    parser.add_argument("--serve", action="store_true", help="build, then serve the site (implies --build)")
    parser.add_argument("--output", type=Path, default=Path("_site"), help="where to build the site (default: _site)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to serve on (default: 8000)")
    parser.add_argument(
        "--no-watch",
        action="store_true",
        help="with --serve: do not rebuild when papers/, taxonomy.yaml or site/ change",
    )
    parser.add_argument(
        "--repo-url",
        help="the repository the site links to (default: $ATLAS_REPO_URL, GitHub "
        "Actions' repository, or the clone's origin remote)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only check that mkdocs.yml is up to date with the taxonomy (exit 1 if stale)",
    )
    parser.add_argument("--verbose", action="store_true", help="show mkdocs' progress messages")


def run(args) -> int:
    """Generate the site's pages, then build or serve it (or check the generated files are fresh)."""
    from tools.outputs.site.generate import GENERATED, MKDOCS_YML, generate, render_mkdocs_config

    taxonomy = load_taxonomy()
    config = render_mkdocs_config(taxonomy)
    if args.check:
        return write_or_check(MKDOCS_YML, config, check=True, command="python -m tools site")
    if not MKDOCS_YML.exists() or MKDOCS_YML.read_text(encoding="utf-8") != config:
        write_or_check(MKDOCS_YML, config, check=False, command="python -m tools site")
    t0 = time.perf_counter()
    papers = load_catalogue()
    try:
        from tools.outputs.reconcile import render_reconciliation
    except ImportError:  # pragma: no cover - the report module is optional for the site
        render_reconciliation = None
    from tools.catalogue.problems import ProblemError
    from tools.outputs.site.build import repository_url
    from tools.outputs.site.measured import load_measurements
    from tools.outputs.site.refimpls import RESULTS_DIR

    try:
        measurements = load_measurements(papers)
    except ProblemError as exc:
        for problem in exc.problems:
            print(f"error: {problem.as_text()}", file=sys.stderr)
        return 1
    repo_url = repository_url(args.repo_url)
    generated = generate(
        papers,
        taxonomy,
        GENERATED,
        reconciliation=render_reconciliation,
        results_dir=RESULTS_DIR,
        measurements=measurements,
        repo_url=repo_url,
        discovery_log=LOG_PATH,
    )
    print(
        f"generated {generated.files} files for {len(papers)} papers in {display_path(GENERATED)} "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    if not (args.build or args.serve):
        return 0
    from tools.outputs.site.build import BuildError, build_site, serve

    t0 = time.perf_counter()
    try:
        build_site(GENERATED, args.output, generated.paper_bibs, verbose=args.verbose, repo_url=repo_url)
    except BuildError as exc:
        print(f"error: the site does not build: {exc}", file=sys.stderr)
        return 1
    print(f"built the site into {display_path(args.output)} ({time.perf_counter() - t0:.1f} s)")
    if args.serve:
        try:
            serve(args.output, args.host, args.port, watch=not args.no_watch, repo_url=args.repo_url)
        except KeyboardInterrupt:
            print("stopped")
    return 0
