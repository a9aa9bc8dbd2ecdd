"""Offline arXiv for the tests: handwritten feeds served by a local HTTP server or a requests adapter.

Both take a list of scripted replies; each request consumes the next one (the last one repeats). A reply is a fixture
file name (status 200), or ``(status, fixture-or-bytes, headers)``, or the exception class ``TIMEOUT`` / ``REFUSED``
(adapter only), or a function of the query parameters returning one of those. Every request's query parameters are
recorded in ``requests``.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import requests
from requests.adapters import BaseAdapter

from tools.catalogue.entries import build_paper, write_paper

FIXTURES = Path(__file__).parent / "fixtures" / "arxiv"
ATOM = "application/atom+xml; charset=utf-8"
API = "http://arxiv.test/api/query"  # the address patch_session answers
NO_WAIT = ["--arxiv-delay", "0", "--retries", "0"]  # a request fails at once instead of waiting to retry


def body_of(item) -> bytes:
    if isinstance(item, bytes):
        return item
    return (FIXTURES / item).read_bytes()


def _normalise(reply):
    if isinstance(reply, str):
        return 200, body_of(reply), {}
    if isinstance(reply, tuple):
        status, body, *rest = reply
        return status, body_of(body), (rest[0] if rest else {})
    return reply  # an exception class


class _Script:
    def __init__(self, replies):
        self.replies = list(replies)
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    def next(self, url: str):
        with self.lock:
            query = parse_qs(urlparse(url).query)
            self.requests.append({k: v[0] for k, v in query.items()})
            reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
            params = self.requests[-1]
        if callable(reply) and not (isinstance(reply, type) and issubclass(reply, Exception)):
            reply = reply(params)  # a router: query parameters -> reply
        return _normalise(reply)


class LocalServer:
    """An HTTP server on 127.0.0.1 (a free port) running ``handler`` in a thread while the ``with`` block lasts."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/api/query"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class FeedServer(LocalServer):
    """A local HTTP server answering the API path with the scripted replies."""

    def __init__(self, replies):
        self.script = _Script(replies)
        script = self.script

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                status, body, headers = script.next(self.path)
                headers = dict(headers)
                if "_sleep" in headers:  # a slow server, for timeouts
                    time.sleep(headers.pop("_sleep"))
                self.send_response(status)
                self.send_header("Content-Type", headers.pop("Content-Type", ATOM))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

            def log_message(self, *args):
                pass

        super().__init__(Handler)

    @property
    def requests(self) -> list[dict]:
        return self.script.requests


def feed_for(ids, *files: str) -> bytes:
    """A feed with the entries of ``ids`` taken from the fixture ``files`` (the first file that has an id wins)."""
    atom = "{http://www.w3.org/2005/Atom}"
    entries = {}
    for name in files:
        for entry in ET.fromstring(body_of(name)).iter(f"{atom}entry"):
            short = entry.findtext(f"{atom}id").rsplit("/abs/", 1)[-1]
            entries.setdefault(re.sub(r"v\d+$", "", short), entry)
    found = [entries[i] for i in ids if i in entries]
    body = "".join(ET.tostring(e, encoding="unicode") for e in found)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom" '
        'xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">'
        f"<id>https://arxiv.org/api/local</id><title>local</title><updated>2026-01-01T00:00:00Z</updated>"
        f"<opensearch:totalResults>{len(found)}</opensearch:totalResults>"
        f"<opensearch:startIndex>0</opensearch:startIndex><opensearch:itemsPerPage>{len(found)}"
        f"</opensearch:itemsPerPage>{body}</feed>"
    ).encode("utf-8")


class TIMEOUT(requests.exceptions.ReadTimeout):
    pass


class REFUSED(requests.exceptions.ConnectionError):
    pass


class FixtureAdapter(BaseAdapter):
    """A requests transport adapter that answers from the script (mounted on the client's session)."""

    def __init__(self, replies):
        super().__init__()
        self.script = _Script(replies)
        self.timeouts: list = []

    @property
    def requests(self) -> list[dict]:
        return self.script.requests

    def send(self, request, **kwargs):
        self.timeouts.append(kwargs.get("timeout"))
        reply = self.script.next(request.url)
        if isinstance(reply, type) and issubclass(reply, Exception):
            if reply is REFUSED:
                raise reply(
                    "HTTPSConnectionPool(host='export.arxiv.org', port=443): Max retries exceeded "
                    "(Caused by NewConnectionError('[Errno 111] Connection refused'))",
                    request=request,
                )
            raise reply("Read timed out. (read timeout=30)", request=request)
        status, body, headers = reply
        response = requests.Response()
        response.status_code = status
        response._content = body
        response.headers.update({"Content-Type": ATOM, **headers})
        response.url = request.url
        response.request = request
        response.encoding = "utf-8"
        return response

    def close(self):
        pass


def patch_session(monkeypatch, replies) -> FixtureAdapter:
    """Make every ArxivSource's session answer from ``replies`` (returns the adapter, to inspect its requests)."""
    import tools.arxiv.source as source_module

    adapter = FixtureAdapter(replies)
    original = source_module.new_session

    def new_session(timeout=source_module.DEFAULT_TIMEOUT):
        session = original(timeout)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    monkeypatch.setattr(source_module, "new_session", new_session)
    return adapter


# ------------------------------------------------------------------------------------------------ a tiny catalogue
def seed_entry(**overrides) -> dict:
    """A catalogued paper whose facts came from a paper list: unsourced (a list is never a source), the list named
    in listed_in, as the entries record them."""
    src = "someone/Awesome-List:README.md@abc1234"
    data = {
        "id": "streamkv-2025",
        "title": "StreamKV: Bounded KV Cache Eviction for Streaming Video LLMs",
        "authors": ["Hana Kobayashi", "Lukas Brandt"],
        "authors_status": "truncated",
        "year": 2026,
        "venue": "arXiv",
        "arxiv": "2512.00077",
        "paper_url": "https://arxiv.org/abs/2512.00077",
        "placement": {"cells": ["decode.memory"], "techniques": ["kv_eviction"], "method": "curated"},
        "modality": ["video"],
        "training": "training-free",
        "listed_in": [src],
        "last_verified": dt.date(2026, 1, 2),
    }
    data.update(overrides)
    return data


def other_entry() -> dict:
    """An unrelated catalogued paper (its title is the near-duplicate target in the discover feed)."""
    return {
        "id": "sink-aware-2025",
        "title": "Sink-aware visual token pruning for efficient VLMs",
        "authors": ["Twin Original"],
        "authors_status": "complete",
        "year": 2025,
        "venue": "arXiv",
        "arxiv": "2509.00001",
        "placement": {"cells": ["prefill.density"], "techniques": ["token_pruning"], "method": "curated"},
        "modality": ["image"],
        "training": None,
        "provenance": {"title": "https://arxiv.org/abs/2509.00001", "authors": "https://arxiv.org/abs/2509.00001"},
        "last_verified": dt.date(2026, 1, 2),
    }


def make_catalogue(papers_dir: Path, *entries: dict) -> Path:
    papers_dir.mkdir(parents=True, exist_ok=True)
    for data in entries:
        write_paper(build_paper(data), papers_dir)
    return papers_dir


def snapshot(*dirs: Path) -> dict[str, bytes]:
    """Every file under the folders, with its bytes (to prove a failure changed nothing)."""
    out = {}
    for folder in dirs:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                out[str(path)] = path.read_bytes()
    return out
