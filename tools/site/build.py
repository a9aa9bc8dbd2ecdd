"""Build the generated docs tree with mkdocs (strict), and serve a built site on a local address."""
from __future__ import annotations

import concurrent.futures
import functools
import http.server
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Mapping

from tools.site.generate import MKDOCS_YML


class BuildError(Exception):
    """mkdocs refused the site (in strict mode, any warning)."""


def mkdocs_build(docs_dir: Path, site_dir: Path, *, config_file: Path = MKDOCS_YML, strict: bool = True,
                 verbose: bool = False) -> None:
    """Run ``mkdocs build`` in this process on ``docs_dir`` into ``site_dir`` with the repository's mkdocs.yml."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config
    from mkdocs.exceptions import Abort, ConfigurationError

    logger = logging.getLogger("mkdocs")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("mkdocs %(levelname)s: %(message)s"))
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        config = load_config(config_file=str(config_file), docs_dir=str(Path(docs_dir).resolve()),
                             site_dir=str(Path(site_dir).resolve()), strict=strict)
        build(config)
    except (Abort, ConfigurationError) as exc:
        raise BuildError(str(exc)) from None
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


BIB_FOLDER = "bib"  # the per-paper .bib files: <site>/bib/<id>.bib


def write_paper_bibs(folder: Path, paper_bibs: Mapping[str, str]) -> int:
    """One ``<id>.bib`` per paper in ``folder``, from the entries the generator rendered (keys as in atlas.bib)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for pid, text in paper_bibs.items():
        with open(folder / f"{pid}.bib", "w", encoding="utf-8") as handle:
            handle.write(text if text.endswith("\n") else text + "\n")
    return len(paper_bibs)


def build_site(docs_dir: Path, site_dir: Path, paper_bibs: Mapping[str, str], **options) -> None:
    """The strict mkdocs build of a generated docs tree, plus ``bib/<id>.bib`` for every paper (``paper_bibs``:
    :attr:`tools.site.generate.Generated.paper_bibs`).

    The .bib files are not copied through the docs tree (that doubled the file work per paper): a second thread
    writes them into a sibling folder while mkdocs builds (creating files is mostly kernel time, so it overlaps with
    mkdocs' Python on another core), and the folder is moved into the built site in one rename. mkdocs cleans the
    site folder when it starts, which is why they are not written there directly.
    """
    site_dir = Path(site_dir)
    staging = site_dir.with_name(f".{site_dir.name}.bib-staging")
    shutil.rmtree(staging, ignore_errors=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        bibs = pool.submit(write_paper_bibs, staging, paper_bibs)
        try:
            mkdocs_build(docs_dir, site_dir, **options)
        finally:
            bibs.result()  # re-raises a failure of the writer
    target = site_dir / BIB_FOLDER
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".bib": "text/plain; charset=utf-8", ".json": "application/json", ".js": "text/javascript",
                      ".svg": "image/svg+xml"}

    def log_message(self, format, *args):  # quieter than the default: errors only
        if len(args) > 1 and str(args[1]).startswith(("4", "5")):
            super().log_message(format, *args)


def make_server(site_dir: Path, host: str = "127.0.0.1", port: int = 8000) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(_Handler, directory=str(site_dir))
    return http.server.ThreadingHTTPServer((host, port), handler)


def serve(site_dir: Path, host: str, port: int) -> None:
    server = make_server(site_dir, host, port)
    print(f"serving {site_dir} on http://{host}:{server.server_address[1]}/ (Ctrl+C to stop)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
