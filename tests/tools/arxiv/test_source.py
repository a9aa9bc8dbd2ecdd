"""tools/arxiv/source.py: ids, records parsed from handwritten feeds, endpoint and rate settings, retries, failures.

Feeds are served by a requests adapter mounted on the client's session, or by a local HTTP server on 127.0.0.1
reached through the configurable endpoint. No test touches the network.
"""

from __future__ import annotations

import datetime as dt
import socket
import time

import pytest

from tests.tools._arxiv_feed import API, REFUSED, TIMEOUT, FeedServer, body_of, patch_session
from tools.arxiv.source import (
    API_URL_ENV,
    ARXIV_MIN_DELAY,
    DEFAULT_API_URL,
    DELAY_ENV,
    ArxivSource,
    ArxivSourceError,
    feed_problem,
    parse_arxiv_ref,
)


def source(**kwargs) -> ArxivSource:
    kwargs.setdefault("api_url", API)
    kwargs.setdefault("delay", 0)
    return ArxivSource(**kwargs)


# ------------------------------------------------------------------------------------------------------ ids
@pytest.mark.parametrize(
    "text, expected",
    [
        ("2403.06764", ("2403.06764", None)),
        ("2403.06764v2", ("2403.06764", 2)),
        ("arXiv:2403.06764v12", ("2403.06764", 12)),
        ("  2501.00001 ", ("2501.00001", None)),
        ("https://arxiv.org/abs/2403.06764v3", ("2403.06764", 3)),
        ("http://arxiv.org/pdf/2403.06764v1.pdf", ("2403.06764", 1)),
        ("https://arxiv.org/pdf/2403.06764", ("2403.06764", None)),
        ("https://www.arxiv.org/html/2403.06764v2#S3", ("2403.06764", 2)),
        ("https://export.arxiv.org/abs/2403.06764?context=cs", ("2403.06764", None)),
        ("hep-th/9901001", ("hep-th/9901001", None)),
        ("https://arxiv.org/abs/math.GT/0309136v1", ("math.GT/0309136", 1)),
    ],
)
def test_parse_arxiv_ref_accepts_ids_and_urls(text, expected):
    assert parse_arxiv_ref(text) == expected


@pytest.mark.parametrize(
    "text",
    ["203.05527", "2403.067", "2403.06764v", "https://example.org/abs/2403.06764", "fastv", "", "2403.06764.pdf.exe"],
)
def test_parse_arxiv_ref_rejects_what_is_not_an_id(text):
    with pytest.raises(ValueError, match="not an arXiv"):
        parse_arxiv_ref(text)


# ------------------------------------------------------------------------------------------------------ records
def test_record_from_a_classic_feed_via_the_patched_session(monkeypatch):
    adapter = patch_session(monkeypatch, ["prunelens_v3.xml"])
    rec = source().lookup(["2511.04321"])["2511.04321"]
    assert rec.version == 3
    assert rec.title == ("PruneLens: Attention-Guided Visual Token Pruning for Fast Large Vision-Language Models")
    assert rec.authors == ["Zoë Müller", "Jiří Novák", "Ana María Pérez-Ruiz", "王小明", "Søren Ødegård"]
    assert rec.first_version == dt.date(2025, 11, 6) and rec.updated == dt.date(2026, 3, 2)
    assert rec.doi == "10.1109/CVPR52734.2026.01234"
    assert rec.journal_ref.startswith(
        "Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR), 2026"
    )
    assert rec.comment.startswith("Accepted to CVPR 2026;")
    assert rec.primary_class == "cs.CV" and rec.categories == ["cs.CV", "cs.CL", "cs.LG"]
    assert rec.abstract.startswith("Large vision-language models") and rec.abstract.endswith("accuracy.")
    assert "\n" not in rec.abstract and "  " not in rec.abstract
    assert rec.url == "https://arxiv.org/abs/2511.04321v3" and rec.v1_url == "https://arxiv.org/abs/2511.04321v1"
    assert not rec.withdrawn
    # The request: the id without version, to the configured endpoint, with the default timeout.
    assert adapter.requests[0]["id_list"] == "2511.04321"
    assert adapter.timeouts == [30.0]


def test_records_from_a_current_style_feed_come_back_by_id(monkeypatch):
    patch_session(monkeypatch, ["two_preprints.xml"])
    records = source().lookup(["2512.00077", "2601.01234"])
    assert set(records) == {"2512.00077", "2601.01234"}
    assert records["2601.01234"].authors == ["Mehmet Yılmaz", "Chloé Dubois", "Ravi Shankar"]
    assert records["2601.01234"].version == 2 and records["2601.01234"].first_version == dt.date(2026, 1, 5)
    assert records["2512.00077"].doi is None and records["2512.00077"].journal_ref is None


def test_record_round_trips_through_plain_data(monkeypatch):
    patch_session(monkeypatch, ["prunelens_v3.xml"])
    rec = source().lookup(["2511.04321"])["2511.04321"]
    data = rec.to_data()
    assert data["first_version"] == dt.date(2025, 11, 6)
    assert type(rec).from_data(data) == rec
    as_text = {**data, "first_version": "2025-11-06", "updated": "2026-03-02"}
    assert type(rec).from_data(as_text) == rec


# ------------------------------------------------------------------------------------------------------ settings
def test_endpoint_comes_from_the_option_then_the_environment_then_the_default(monkeypatch):
    monkeypatch.delenv(API_URL_ENV, raising=False)
    monkeypatch.delenv(DELAY_ENV, raising=False)
    assert ArxivSource().api_url == DEFAULT_API_URL
    monkeypatch.setenv(API_URL_ENV, "http://127.0.0.1:9/api/query")
    assert ArxivSource().api_url == "http://127.0.0.1:9/api/query"
    assert ArxivSource(api_url="http://mirror.example/api/query").api_url == "http://mirror.example/api/query"
    with pytest.raises(ValueError, match="not an http"):
        ArxivSource(api_url="ftp://mirror.example/api")


def test_the_delay_is_three_seconds_by_default_and_never_less_on_arxiv_org(monkeypatch):
    monkeypatch.delenv(DELAY_ENV, raising=False)
    warnings = []
    assert ArxivSource().delay == ARXIV_MIN_DELAY == 3.0
    assert ArxivSource().client.delay_seconds == 3.0
    assert ArxivSource(api_url=DEFAULT_API_URL, delay=0, warn=warnings.append).delay == 3.0
    assert warnings and "3 s" in warnings[0]
    assert ArxivSource(api_url="http://127.0.0.1:1/api/query", delay=0).delay == 0
    monkeypatch.setenv(DELAY_ENV, "0.5")
    assert ArxivSource(api_url="http://127.0.0.1:1/api/query").delay == 0.5
    monkeypatch.setenv(DELAY_ENV, "soon")
    with pytest.raises(ValueError, match=DELAY_ENV):
        ArxivSource(api_url="http://127.0.0.1:1/api/query")


def test_one_request_per_delay_through_the_shared_client():
    with FeedServer(["prunelens_v3.xml"]) as server:
        src = ArxivSource(api_url=server.url, delay=0.3)
        started = time.monotonic()
        src.fetch(["2511.04321"])
        src.fetch(["2511.04321"])
        src.fetch(["2511.04321"])
        elapsed = time.monotonic() - started
    assert len(server.requests) == 3
    assert elapsed >= 0.6  # two waits of 0.3 s between three requests


def test_local_server_through_the_environment_variable(monkeypatch):
    with FeedServer(["two_preprints.xml"]) as server:
        monkeypatch.setenv(API_URL_ENV, server.url)
        records = ArxivSource(delay=0).lookup(["2601.01234"])
    assert records["2601.01234"].title.startswith("Relaxed Verification")
    assert server.requests == [
        {"id_list": "2601.01234", "sortBy": "relevance", "sortOrder": "descending", "start": "0", "max_results": "100"}
    ]


def test_batches_split_the_id_list(monkeypatch):
    adapter = patch_session(monkeypatch, ["two_preprints.xml"])
    source().fetch(["2601.01234", "2512.00077", "2511.04321"], batch_size=2)
    assert [r["id_list"] for r in adapter.requests] == ["2601.01234,2512.00077", "2511.04321"]


# ------------------------------------------------------------------------------------------------------ retries
def test_transient_failures_are_retried_with_exponential_backoff(monkeypatch):
    adapter = patch_session(monkeypatch, [(503, b"busy"), (429, b"slow down"), REFUSED, "prunelens_v3.xml"])
    sleeps = []
    rec = source(backoff=1.5, sleep=sleeps.append).lookup(["2511.04321"])
    assert "2511.04321" in rec
    assert sleeps == [1.5, 3.0, 6.0]
    assert len(adapter.requests) == 4


def test_retry_after_is_honoured_when_longer_than_the_backoff(monkeypatch):
    patch_session(monkeypatch, [(429, b"", {"Retry-After": "7"}), "prunelens_v3.xml"])
    sleeps = []
    source(backoff=1, sleep=sleeps.append).lookup(["2511.04321"])
    assert sleeps == [7.0]


def test_a_client_error_is_not_retried(monkeypatch):
    adapter = patch_session(monkeypatch, [(400, b"bad query")])
    with pytest.raises(ArxivSourceError) as err:
        source(sleep=lambda s: None).fetch(["2511.04321"])
    assert str(err.value) == "arXiv 2511.04321: HTTP 400 from the API"
    assert len(adapter.requests) == 1


# ------------------------------------------------------------------------------------------------------ failures
@pytest.mark.parametrize(
    "reply, cause",
    [
        ((429, b"Rate exceeded."), "rate limited (HTTP 429 Too Many Requests) (gave up after 3 tries)"),
        ((503, b"Service Unavailable"), "arXiv server error (HTTP 503) (gave up after 3 tries)"),
        ((500, b""), "arXiv server error (HTTP 500) (gave up after 3 tries)"),
        (TIMEOUT, "timed out (no complete answer within 30 s) (gave up after 3 tries)"),
        (REFUSED, "cannot connect to arxiv.test (Connection refused) (gave up after 3 tries)"),
        ("truncated.xml", "malformed feed (XML error: "),
        ("not_a_feed.html", "malformed feed (the document is <html>, not an Atom <feed>)"),
        ((200, b""), "empty response (no feed) (gave up after 3 tries)"),
        ((200, b"<feed xmlns='http://www.w3.org/2005/Atom'/>"), "malformed feed (no opensearch:totalResults"),
    ],
)
def test_every_failure_is_one_line_naming_the_id_and_the_cause(monkeypatch, reply, cause):
    adapter = patch_session(monkeypatch, [reply])
    with pytest.raises(ArxivSourceError) as err:
        source(retries=2, sleep=lambda s: None).lookup(["2511.04321"])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"arXiv 2511.04321: {cause}")
    assert len(adapter.requests) == 3  # each is retried: a truncated feed may be a dropped connection


def test_an_api_error_entry_is_reported_and_not_retried(monkeypatch):
    adapter = patch_session(monkeypatch, ["api_error.xml"])
    with pytest.raises(ArxivSourceError, match=r"^arXiv 2511\.04321: the API reports an error: incorrect id format"):
        source(sleep=lambda s: None).lookup(["2511.04321"])
    assert len(adapter.requests) == 1


def test_unknown_and_withdrawn_ids_are_one_line_each(monkeypatch):
    patch_session(monkeypatch, ["empty.xml", "withdrawn.xml"])
    src = source()
    with pytest.raises(ArxivSourceError) as err:
        src.lookup(["2599.99999"])
    assert str(err.value) == "arXiv 2599.99999: unknown id: the API returned no entry for it"
    with pytest.raises(ArxivSourceError) as err:
        src.lookup(["2512.05555"])
    assert str(err.value).startswith("arXiv 2512.05555: withdrawn (v2: 'This paper has been withdrawn by the authors")


def test_a_mixed_batch_names_each_missing_id(monkeypatch):
    patch_session(monkeypatch, ["two_preprints.xml"])
    with pytest.raises(ArxivSourceError) as err:
        source().lookup(["2601.01234", "2599.99999", "2512.00077", "2599.88888"])
    assert str(err.value).splitlines() == [
        "arXiv 2599.99999: unknown id: the API returned no entry for it",
        "arXiv 2599.88888: unknown id: the API returned no entry for it",
    ]


def test_the_empty_page_after_unknown_ids_ends_the_list(monkeypatch):
    # The API once counted unknown ids in totalResults and then served an empty page (lukasschwab/arxiv.py#82).
    partial = (
        200,
        body_of("prunelens_v3.xml").replace(b">1</opensearch:totalResults>", b">2</opensearch:totalResults>"),
    )
    adapter = patch_session(monkeypatch, [partial, "empty.xml"])
    records = source().fetch(["2511.04321", "2599.99999"])
    assert list(records) == ["2511.04321"]
    assert [r["start"] for r in adapter.requests] == ["0", "1"]


def test_no_network_on_a_real_local_port():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    src = ArxivSource(api_url=f"http://127.0.0.1:{port}/api/query", delay=0, retries=1)
    with pytest.raises(ArxivSourceError) as err:
        src.lookup(["2511.04321"])
    assert str(err.value).startswith(f"arXiv 2511.04321: cannot connect to 127.0.0.1:{port} (")
    assert str(err.value).endswith("(gave up after 2 tries)")


def test_a_real_timeout_against_a_slow_local_server():
    with FeedServer([(200, "prunelens_v3.xml", {"_sleep": 1.0})]) as server:
        src = ArxivSource(api_url=server.url, delay=0, retries=0, timeout=0.2)
        with pytest.raises(
            ArxivSourceError, match=r"^arXiv 2511\.04321: timed out \(no complete answer within 0\.2 s\)$"
        ):
            src.lookup(["2511.04321"])


def test_search_returns_unique_records_in_feed_order(monkeypatch):
    adapter = patch_session(monkeypatch, ["discover_feed.xml"])
    records = source().search("abs:token", max_results=50, label="token_pruning")
    assert records[0].arxiv == "2511.04321" and len(records) == 8
    assert adapter.requests[0]["search_query"] == "abs:token"
    with pytest.raises(ArxivSourceError, match=r"^arXiv query 'token_pruning': arXiv server error"):
        patch_session(monkeypatch, [(502, b"")])
        source(retries=0).search("abs:token", max_results=5, label="token_pruning")


def test_feed_problem_accepts_every_fixture_feed():
    for name in (
        "prunelens_v3.xml",
        "two_preprints.xml",
        "streamkv_v2_icml.xml",
        "empty.xml",
        "withdrawn.xml",
        "discover_feed.xml",
    ):
        assert feed_problem(body_of(name)) is None, name
