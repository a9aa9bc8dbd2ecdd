"""The one way the tools talk to arXiv: a shared ``arxiv.Client`` per run, polite and failure-proof.

* **Endpoint:** ``--api-url`` > ``$ATLAS_ARXIV_API`` > ``https://export.arxiv.org/api/query`` (so a mirror or a local
  test server can stand in for arXiv).
* **Rate:** at most one request every ``delay`` seconds (``--arxiv-delay`` > ``$ATLAS_ARXIV_DELAY`` > 3 s, arXiv's
  rule). A delay below 3 s is only honoured for endpoints that are not on arxiv.org (a mirror or a local server).
* **Timeout:** ``--timeout`` bounds each request as a whole (connecting, waiting, and reading the feed), so a server
  that trickles its answer cannot stall a run.
* **Retries:** a 429, a 5xx, a connection error, a timeout or a malformed/truncated feed is retried with exponential
  backoff (``delay * 2**attempt``, or the server's ``Retry-After`` when it is longer); any other HTTP status, an
  error entry of the API, or an entry with a malformed date is not.
* **Failures:** every failure becomes one ``ArxivSourceError`` whose lines each name the id (or query) and the cause;
  the commands print them and exit with code 1 (``reports_remote_failures``).

Tests reach the HTTP layer through ``new_session`` (mount a ``requests`` adapter on the session it returns) or serve
feeds from a local server and point ``--api-url`` at it.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import os
import re
import sys
import threading
import time
import unicodedata
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable
from urllib.parse import urlparse

import arxiv
import requests

from tools.catalogue.schema import ARXIV_NEW, ARXIV_OLD, DOI_PATTERN

DEFAULT_API_URL = "https://export.arxiv.org/api/query"
API_URL_ENV = "ATLAS_ARXIV_API"
DELAY_ENV = "ATLAS_ARXIV_DELAY"
ARXIV_MIN_DELAY = 3.0  # arXiv's terms of use: no more than one request every three seconds
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
MAX_RETRY_AFTER = 120.0
ID_BATCH = 100  # ids per id_list request (also the page size)

_ATOM = "{http://www.w3.org/2005/Atom}"
_OPENSEARCH = "{http://a9.com/-/spec/opensearch/1.1/}"
_WITHDRAWN = re.compile(
    r"(?i)\b(this (paper|article|submission|manuscript) (has been|is|was) withdrawn|withdrawn by)\b"
)
_DOI_RE = re.compile(DOI_PATTERN)
_CLASS_RE = re.compile(r"^[a-z-]+(\.[A-Za-z-]+)?$")


# ================================================================================================= errors
class ArxivSourceError(Exception):
    """One or more remote failures; each line names the id (or query) and the cause."""

    def __init__(self, failures: list[tuple[str, str]]):
        self.failures = failures
        super().__init__("\n".join(f"{subject}: {cause}" for subject, cause in failures))

    @classmethod
    def one(cls, subject: str, cause: str) -> "ArxivSourceError":
        """An error about one subject (an id or a query) and its cause."""
        return cls([(subject, cause)])


class MalformedFeed(requests.RequestException):
    """A 200 response whose body is not an arXiv Atom feed (empty, truncated, HTML, ...)."""

    @property
    def transient(self) -> bool:
        """A cut-off or garbled answer may come right on a retry; what a complete feed says will not change."""
        return not str(self).startswith(_PERMANENT_FEED_PROBLEMS)


class DeadlineExceeded(requests.exceptions.Timeout):
    """The whole request (connect, headers and body) took longer than the timeout."""


def reports_remote_failures(run: Callable[[Any], int]) -> Callable[[Any], int]:
    """Wrap a command's ``run``: an ArxivSourceError is printed as ``error: <line>`` lines and gives exit code 1."""

    @functools.wraps(run)
    def wrapper(args) -> int:
        try:
            return run(args)
        except ArxivSourceError as exc:
            for subject, cause in exc.failures:
                print(f"error: {subject}: {cause}", file=sys.stderr)
            print("nothing was written", file=sys.stderr)
            return 1

    return wrapper


# ================================================================================================= ids
_URL_ID = re.compile(
    r"^(?:https?://)?(?:www\.|export\.)?arxiv\.org/(?:abs|pdf|html)/(?P<id>[^?#]+?)(?:\.pdf)?/?(?:[?#].*)?$",
    re.IGNORECASE,
)
_VERSION = re.compile(r"^(?P<id>.+?)v(?P<v>\d+)$")


def parse_arxiv_ref(text: str) -> tuple[str, int | None]:
    """An arXiv id or URL -> (id without version, version or None). Raises ValueError naming what is wrong.

    Accepts ``2401.12345``, ``2401.12345v2``, ``arXiv:2401.12345``, ``hep-th/9901001`` and the abs, pdf and html
    pages on arxiv.org.
    """
    raw = text.strip()
    candidate = raw
    m = _URL_ID.match(raw)
    if m:
        candidate = m["id"]
    elif re.match(r"(?i)^https?://", raw):
        raise ValueError(f"{text!r} is not an arXiv page (expected https://arxiv.org/abs/<id>)")
    candidate = re.sub(r"(?i)^arxiv:", "", candidate).strip()
    version = None
    vm = _VERSION.match(candidate)
    if vm:
        candidate, version = vm["id"], int(vm["v"])
    if not (ARXIV_NEW.match(candidate) or ARXIV_OLD.match(candidate)):
        raise ValueError(f"{text!r} is not an arXiv id or URL (e.g. 2403.06764, arXiv:2403.06764v2, hep-th/9901001)")
    return candidate, version


def abs_url(arxiv_id: str, version: int | None = None) -> str:
    """The canonical address of an arXiv abstract page (of one version when ``version`` is given)."""
    return f"https://arxiv.org/abs/{arxiv_id}" + (f"v{version}" if version else "")


# ================================================================================================= records
def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    text = " ".join(unicodedata.normalize("NFC", text).split())
    return text or None


@dataclass(frozen=True)
class ArxivRecord:
    """What arXiv says about one paper (its latest version), cleaned: whitespace collapsed, NFC names."""

    arxiv: str  # without version
    version: int  # latest version
    title: str
    authors: list[str]
    abstract: str
    first_version: dt.date  # v1 submission date ("published" in the API)
    updated: dt.date  # date of the latest version
    primary_class: str | None = None
    categories: list[str] = field(default_factory=list)
    doi: str | None = None
    journal_ref: str | None = None
    comment: str | None = None

    @property
    def url(self) -> str:
        """The abstract page of the latest version (what every fact was read from)."""
        return abs_url(self.arxiv, self.version)

    @property
    def v1_url(self) -> str:
        """The abstract page of version 1 (where the first-version date is read)."""
        return abs_url(self.arxiv, 1)

    @property
    def withdrawn(self) -> bool:
        """Whether arXiv marks the paper as withdrawn."""
        return any(_WITHDRAWN.search(text or "") for text in (self.comment, self.abstract[:300]))

    def to_data(self) -> dict[str, Any]:
        """Plain data (for the triage queue); ``from_data`` reads it back."""
        data = asdict(self)
        for key in ("first_version", "updated"):  # new objects: the YAML dumper aliases repeated ones
            data[key] = dt.date.fromordinal(data[key].toordinal())
        return {k: v for k, v in data.items() if v not in (None, [])}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> "ArxivRecord":
        """A record from its stored form (the triage queue)."""
        values = dict(data)
        for key in ("first_version", "updated"):
            if isinstance(values.get(key), str):
                values[key] = dt.date.fromisoformat(values[key])
        return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})

    @classmethod
    def from_result(cls, result: arxiv.Result) -> "ArxivRecord":
        """A record from the ``arxiv`` package's result."""
        short = result.get_short_id()
        m = _VERSION.match(short)
        arxiv_id, version = (m["id"], int(m["v"])) if m else (short, 1)
        doi = (result.doi or "").split()[0] if result.doi else None
        if doi and not _DOI_RE.match(doi):
            doi = None
        primary = result.primary_category or None
        if primary and not _CLASS_RE.match(primary):
            primary = None
        authors = [name for name in (_clean(a.name) for a in result.authors) if name]
        return cls(
            arxiv=arxiv_id,
            version=version,
            title=_clean(result.title) or "",
            authors=authors,
            abstract=_clean(result.summary) or "",
            first_version=result.published.date(),
            updated=result.updated.date(),
            primary_class=primary,
            categories=list(dict.fromkeys(result.categories)),
            doi=doi,
            journal_ref=_clean(result.journal_ref),
            comment=_clean(result.comment),
        )


# ================================================================================================= HTTP
class _ApiSession(requests.Session):
    """A ``requests.Session`` with a default timeout that rejects 200 responses which are not an Atom feed."""

    def __init__(self, timeout: float):
        super().__init__()
        self.timeout = timeout
        self.last_retry_after: float | None = None

    def request(self, method, url, *args, **kwargs):  # noqa: D401 - requests' signature
        kwargs.setdefault("timeout", self.timeout)
        self.last_retry_after = None
        response = _within(self.timeout, lambda: super(_ApiSession, self).request(method, url, *args, **kwargs))
        if response.status_code != 200:
            self.last_retry_after = _retry_after(response.headers.get("Retry-After"))
            return response
        problem = feed_problem(response.content)
        if problem:
            raise MalformedFeed(problem)
        return response


def _within(seconds: float, call: Callable[[], Any]) -> Any:
    """``call()``, or DeadlineExceeded once ``seconds`` have passed.

    requests' own timeout applies to each socket operation, so a server sending a byte every few seconds would
    never trip it. The call runs in a daemon thread that is abandoned at the deadline; its socket still times out
    on its own once the server goes quiet.
    """
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="arxiv-request", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise DeadlineExceeded(f"no complete answer within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def new_session(timeout: float = DEFAULT_TIMEOUT) -> _ApiSession:
    """The session the shared client fetches with (tests mount a fixture adapter on it)."""
    return _ApiSession(timeout)


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    return None


_PERMANENT_FEED_PROBLEMS = ("the API reports an error", "the feed has a malformed date")


def _atom_date_problem(text: str | None) -> bool:
    """True when an Atom date is present but not an RFC 3339 timestamp (what the arxiv package parses)."""
    if text is None:
        return False
    try:
        dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return True
    return False


def feed_problem(content: bytes) -> str | None:
    """Why a response body is not a complete arXiv API feed; None when it is one."""
    if not content or not content.strip():
        return "empty response (no feed)"
    try:
        root = ET.fromstring(content)
    except ET.ParseError as exc:
        return f"malformed feed (XML error: {exc})"
    if root.tag != f"{_ATOM}feed":
        return f"malformed feed (the document is <{root.tag.split('}')[-1]}>, not an Atom <feed>)"
    if root.find(f"{_OPENSEARCH}totalResults") is None:
        return "malformed feed (no opensearch:totalResults: not an arXiv API response)"
    for entry in root.iter(f"{_ATOM}entry"):
        entry_id = entry.findtext(f"{_ATOM}id") or ""
        if "/api/errors" in entry_id:
            message = " ".join((entry.findtext(f"{_ATOM}summary") or "unknown error").split())
            return f"the API reports an error: {message}"
        for tag in ("published", "updated"):
            value = entry.findtext(f"{_ATOM}{tag}")
            if _atom_date_problem(value):
                shown = entry_id.rsplit("/abs/", 1)[-1] or "without an id"
                return f"the feed has a malformed date (entry {shown}: <{tag}> is {value.strip()[:40]!r})"
    return None


_STATUS_CAUSES = {429: "rate limited (HTTP 429 Too Many Requests)"}


def _describe(exc: BaseException, timeout: float, host: str) -> tuple[str, bool]:
    """(one-line cause, whether a retry may help)."""
    if isinstance(exc, arxiv.HTTPError):
        status = exc.status
        if status in _STATUS_CAUSES:
            return _STATUS_CAUSES[status], True
        if 500 <= status < 600:
            return f"arXiv server error (HTTP {status})", True
        return f"HTTP {status} from the API", False
    if isinstance(exc, MalformedFeed):
        return str(exc), exc.transient
    if isinstance(exc, arxiv.UnexpectedEmptyPageError):
        return "empty feed page in the middle of the results", True
    if isinstance(exc, requests.exceptions.Timeout):
        return f"timed out (no complete answer within {timeout:g} s)", True
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = str(exc)
        errno = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
        reason = errno.group(1).strip() if errno else " ".join(text.split())[:160]
        return f"cannot connect to {host} ({reason})", True
    if isinstance(exc, requests.RequestException):
        return f"request failed ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})", True
    raise exc


# ================================================================================================= the source
class ArxivSource:
    """One ``arxiv.Client`` (one per run), with the endpoint, rate, timeout and retry policy above."""

    def __init__(
        self,
        api_url: str | None = None,
        delay: float | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        warn=None,
    ):
        self.api_url = (api_url or os.environ.get(API_URL_ENV) or DEFAULT_API_URL).strip()
        parsed = urlparse(self.api_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"the arXiv API URL {self.api_url!r} is not an http(s) URL")
        if delay is None:
            env = os.environ.get(DELAY_ENV)
            try:
                delay = float(env) if env else ARXIV_MIN_DELAY
            except ValueError:
                raise ValueError(f"${DELAY_ENV}={env!r} is not a number of seconds") from None
        if not (math.isfinite(delay) and delay >= 0):
            raise ValueError(f"the delay between requests must be a finite number of seconds >= 0, got {delay!r}")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"the timeout must be a finite number of seconds > 0, got {timeout!r}")
        if retries < 0:
            raise ValueError(f"the number of retries must be >= 0, got {retries}")
        host = (parsed.hostname or "").lower()
        if (host == "arxiv.org" or host.endswith(".arxiv.org")) and delay < ARXIV_MIN_DELAY:
            if warn:
                warn(f"arXiv allows one request every {ARXIV_MIN_DELAY:g} s: using a {ARXIV_MIN_DELAY:g} s delay")
            delay = ARXIV_MIN_DELAY
        self.delay = delay
        self.timeout = timeout
        self.retries = retries
        self.backoff = delay if backoff is None else backoff
        self._sleep = sleep
        self.client = arxiv.Client(page_size=ID_BATCH, delay_seconds=delay, num_retries=0)
        self.client.query_url_format = self.api_url + ("&" if "?" in self.api_url else "?") + "{}"
        self.session = new_session(timeout)
        self.client._session = self.session  # the documented way to reach the client's HTTP layer
        self.requests_made = 0

    # -------------------------------------------------------------------------------------------- fetching
    def _run(self, search: arxiv.Search, subject: str) -> list[arxiv.Result]:
        """All results of ``search``, retrying transient failures; resumes at the first result not yet read."""
        collected: list[arxiv.Result] = []
        attempt = 0
        while True:
            try:
                for result in self.client.results(search, offset=len(collected)):
                    collected.append(result)
                return collected
            except Exception as exc:  # translated below; anything unexpected is re-raised by _describe
                if isinstance(exc, arxiv.UnexpectedEmptyPageError) and search.id_list and collected:
                    # The API counts unknown ids in totalResults, then serves an empty page: the list is complete.
                    return collected
                cause, transient = _describe(exc, self.timeout, urlparse(self.api_url).netloc)
                if not transient or attempt >= self.retries:
                    tries = f" (gave up after {attempt + 1} tries)" if attempt else ""
                    raise ArxivSourceError.one(subject, cause + tries) from None
                retry_after = self.session.last_retry_after or 0.0
                self._sleep(max(self.backoff * 2**attempt, retry_after))
                attempt += 1

    def fetch(self, ids: Iterable[str], progress=None, batch_size: int = ID_BATCH) -> dict[str, ArxivRecord]:
        """Records for ``ids`` (without versions), in batches; an id arXiv does not know is absent from the result."""
        wanted = list(dict.fromkeys(ids))
        out: dict[str, ArxivRecord] = {}
        for start in range(0, len(wanted), batch_size):
            batch = wanted[start : start + batch_size]
            subject = f"arXiv {batch[0]}" if len(batch) == 1 else f"arXiv {batch[0]} (+{len(batch) - 1} more ids)"
            search = arxiv.Search(id_list=batch, max_results=None)  # every entry the feed has (filtered below)
            for result in self._run(search, subject):
                record = ArxivRecord.from_result(result)
                if record.arxiv in batch:
                    out.setdefault(record.arxiv, record)
            if progress is not None:
                progress(len(batch))
        return out

    def lookup(self, ids: Iterable[str], progress=None) -> dict[str, ArxivRecord]:
        """Like ``fetch``, but an unknown or withdrawn id is an error (one line per id)."""
        wanted = list(dict.fromkeys(ids))
        records = self.fetch(wanted, progress=progress)
        failures = lookup_failures(wanted, records)
        if failures:
            raise ArxivSourceError(failures)
        return records

    def search(self, query: str, max_results: int, label: str | None = None) -> list[ArxivRecord]:
        """The records of an API ``search_query``, best matches first (arXiv's relevance order)."""
        search = arxiv.Search(query=query, max_results=max_results, sort_by=arxiv.SortCriterion.Relevance)
        results = self._run(search, f"arXiv query {label or query!r}")
        seen, out = set(), []
        for result in results:
            record = ArxivRecord.from_result(result)
            if record.arxiv not in seen:
                seen.add(record.arxiv)
                out.append(record)
        return out


def lookup_failures(ids: Iterable[str], records: dict[str, ArxivRecord]) -> list[tuple[str, str]]:
    """(subject, cause) for every id that arXiv does not know or that has been withdrawn."""
    failures = []
    for arxiv_id in ids:
        record = records.get(arxiv_id)
        if record is None:
            failures.append((f"arXiv {arxiv_id}", "unknown id: the API returned no entry for it"))
        elif record.withdrawn:
            why = record.comment or record.abstract[:120]
            failures.append((f"arXiv {arxiv_id}", f"withdrawn (v{record.version}: {why!r})"))
    return failures
