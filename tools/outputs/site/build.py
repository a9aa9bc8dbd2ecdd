"""Build the generated docs tree with mkdocs (strict), and serve a built site on a local address: the site's own
404 page for a missing path, and a rebuild when a watched source changes (``make serve``)."""

from __future__ import annotations

import concurrent.futures
import functools
import http.server
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping

from tools.catalogue.paths import ROOT
from tools.outputs.site.generate import GENERATED, MKDOCS_YML

WATCHED = [ROOT / "papers", ROOT / "taxonomy.yaml", ROOT / "site"]  # what `make serve` rebuilds the site for
NOT_WATCHED = [GENERATED]  # written by the build itself


class BuildError(Exception):
    """mkdocs refused the site (in strict mode, any warning)."""


def https_address(remote: str) -> str | None:
    """A repository's web address from a git remote (``git@host:owner/name.git`` or ``https://host/owner/name``);
    None for anything else."""
    remote = remote.strip()
    ssh = re.fullmatch(r"git@([\w.-]+):([\w.-]+/[\w.-]+?)(?:\.git)?/?", remote)
    url = f"https://{ssh[1]}/{ssh[2]}" if ssh else re.sub(r"(?:\.git)?/?$", "", remote)
    return url if re.fullmatch(r"https://[\w.-]+(?::\d+)?/[\w.-]+/[\w.-]+", url) else None


def repository_url(explicit: str | None = None) -> str | None:
    """The repository's web address for the site's links: ``explicit`` (``--repo-url``), else ``$ATLAS_REPO_URL``,
    else GitHub Actions' ``$GITHUB_SERVER_URL/$GITHUB_REPOSITORY`` (the site workflow), else the clone's ``origin``
    remote; None when none is known (the site then names no repository)."""
    url = explicit or os.environ.get("ATLAS_REPO_URL")
    if not url and os.environ.get("GITHUB_SERVER_URL") and os.environ.get("GITHUB_REPOSITORY"):
        url = f"{os.environ['GITHUB_SERVER_URL']}/{os.environ['GITHUB_REPOSITORY']}"
    if not url:
        try:
            url = subprocess.run(
                ["git", "-C", str(ROOT), "remote", "get-url", "origin"], capture_output=True, text=True, timeout=5
            ).stdout
        except (OSError, subprocess.SubprocessError):
            url = ""
    return https_address(url or "")


def mkdocs_build(
    docs_dir: Path,
    site_dir: Path,
    *,
    config_file: Path = MKDOCS_YML,
    strict: bool = True,
    verbose: bool = False,
    repo_url: str | None = None,
) -> None:
    """Run ``mkdocs build`` in this process on ``docs_dir`` into ``site_dir`` with the repository's mkdocs.yml (and
    ``repo_url`` when given: the header's repository link)."""
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
        extra = {"repo_url": repo_url} if repo_url else {}
        config = load_config(
            config_file=str(config_file),
            docs_dir=str(Path(docs_dir).resolve()),
            site_dir=str(Path(site_dir).resolve()),
            strict=strict,
            **extra,
        )
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
    :attr:`tools.outputs.site.generate.Generated.paper_bibs`).

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
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".bib": "text/plain; charset=utf-8",
        ".json": "application/json",
        ".js": "text/javascript",
        ".svg": "image/svg+xml",
        ".csv": "text/csv; charset=utf-8",
    }

    def send_head(self):
        with self.server.swap_lock:  # never half-way through a rebuild's swap (see SiteServer.swap_in)
            return super().send_head()

    def send_error(self, code, message=None, explain=None):
        """A missing path gets the site's own 404 page (mkdocs-material's 404.html), with status 404."""
        page = Path(self.directory) / "404.html"
        if code != 404 or not page.is_file():
            return super().send_error(code, message, explain)
        body = page.read_bytes()
        self.send_response(404, message)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format, *args):  # quieter than the default: errors only
        if len(args) > 1 and str(args[1]).startswith(("4", "5")):
            super().log_message(format, *args)


class SiteServer(http.server.ThreadingHTTPServer):
    """Serves a built site folder; :meth:`swap_in` replaces the folder's content with a new build between two
    requests."""

    def __init__(self, site_dir: Path, host: str, port: int):
        self.site_dir = Path(site_dir)
        self.swap_lock = threading.Lock()
        super().__init__((host, port), functools.partial(_Handler, directory=str(self.site_dir)))

    def swap_in(self, new_site: Path) -> None:
        """Make ``new_site`` (a complete build, on the same file system) the served site: two renames under the lock
        every request takes to open its file, then the old build is deleted."""
        old = self.site_dir.with_name(f".{self.site_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        with self.swap_lock:
            if self.site_dir.exists():
                os.replace(self.site_dir, old)
            os.replace(new_site, self.site_dir)
        shutil.rmtree(old, ignore_errors=True)


def make_server(site_dir: Path, host: str = "127.0.0.1", port: int = 8000) -> SiteServer:
    """A local HTTP server for the built site in ``site_dir``."""
    return SiteServer(site_dir, host, port)


def _files(base: Path, skip: list[str]):
    if base.is_file():
        yield str(base)
        return
    for root, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if not d.startswith(".") and os.path.join(root, d) not in skip]
        yield from (os.path.join(root, name) for name in files)


def _state(paths: Iterable[Path], skip: Iterable[Path]) -> dict[str, tuple[int, int]]:
    """Every file under ``paths`` (not under ``skip``) -> (modification time, size)."""
    skip = [str(p) for p in skip]
    out = {}
    for base in paths:
        for path in _files(Path(base), skip):
            try:
                info = os.stat(path)
            except OSError:  # deleted since it was listed
                continue
            out[path] = (info.st_mtime_ns, info.st_size)
    return out


class Watcher:
    """Polls files for changes (no dependency, and cheap: one stat per file per poll) and calls ``on_change`` once
    they have been quiet for a moment (an editor saving several files, a `git checkout`)."""

    def __init__(
        self,
        paths: Iterable[Path],
        on_change: Callable[[], None],
        *,
        skip: Iterable[Path] = NOT_WATCHED,
        interval: float = 0.5,
    ):
        self.paths, self.skip, self.on_change, self.interval = list(paths), list(skip), on_change, interval
        self.state = _state(self.paths, self.skip)
        self.stopped = threading.Event()

    def poll(self) -> bool:
        """True (after calling ``on_change``) when something changed since the last poll."""
        now = _state(self.paths, self.skip)
        if now == self.state:
            return False
        while True:  # wait until the files stop changing
            time.sleep(self.interval)
            later = _state(self.paths, self.skip)
            if later == now:
                break
            now = later
        self.state = now
        self.on_change()
        return True

    def run(self) -> None:
        """Poll the watched sources every ``interval`` seconds until stopped."""
        while not self.stopped.wait(self.interval):
            self.poll()


def rebuild_command(staging: Path, repo_url: str | None = None) -> list[str]:
    """The build a change triggers: the whole ``python -m tools site --build`` in a fresh process (validation
    included), so that nothing cached in this one (the taxonomy, templates) survives an edit."""
    command = [sys.executable, "-m", "tools", "site", "--build", "--output", str(staging)]
    return command + (["--repo-url", repo_url] if repo_url else [])


def rebuild_into(server: SiteServer, command: list[str], staging: Path) -> bool:
    """Run ``command`` (which builds into ``staging``) and serve its build; on failure keep serving the old one."""
    print("change seen: rebuilding the site ...", flush=True)
    started = time.perf_counter()
    shutil.rmtree(staging, ignore_errors=True)
    done = subprocess.run(command, cwd=str(ROOT))
    if done.returncode != 0 or not (staging / "index.html").is_file():
        shutil.rmtree(staging, ignore_errors=True)
        print("the site was not rebuilt (see the errors above); still serving the previous build", flush=True)
        return False
    server.swap_in(staging)
    print(f"rebuilt in {time.perf_counter() - started:.1f} s: reload the page", flush=True)
    return True


def serve(site_dir: Path, host: str, port: int, *, watch: bool = True, repo_url: str | None = None) -> None:
    """Serve the built site; with ``watch``, rebuild it whenever a file under :data:`WATCHED` changes."""
    site_dir = Path(site_dir).resolve()
    server = make_server(site_dir, host, port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"serving {site_dir} on http://{host}:{server.server_address[1]}/ (Ctrl+C to stop)", flush=True)
    staging = site_dir.with_name(f".{site_dir.name}.next")
    command = rebuild_command(staging, repo_url)
    try:
        if watch:
            print("rebuilding on changes to papers/, taxonomy.yaml and site/", flush=True)
            Watcher(WATCHED, lambda: rebuild_into(server, command, staging)).run()
        else:
            thread.join()
    finally:
        server.shutdown()
        server.server_close()
