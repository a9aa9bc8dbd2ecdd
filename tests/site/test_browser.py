"""The built site in headless Chromium (Debian's chromium, driven by Playwright; nothing is downloaded): the home
page loads without console errors and without requests leaving 127.0.0.1, search finds FastV, explorer filters narrow
the table, a paper page shows and copies its BibTeX, and hostile text stays inert text in the page, the explorer,
the search results and the .bib."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path
from urllib.parse import urlsplit

import bibtexparser
import pytest

from tests.site.site_fixtures import HOSTILE_TITLE, XSS_IMG
from tools.bibtex import latex_decode
from tools.site.build import make_server

pytestmark = pytest.mark.browser

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def server(built_site):
    srv = make_server(built_site.site, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    executable = _chromium()
    if executable is None:
        pytest.skip("Debian's chromium is not installed (run `make browser-deps` as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=executable, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900})
        context.set_default_timeout(30_000)
        context.outside = []  # every request that tried to leave 127.0.0.1 (blocked), workers' included

        def route(r):
            url = r.request.url
            if urlsplit(url).hostname != "127.0.0.1" and not url.startswith(("data:", "blob:")):
                context.outside.append(url)
                r.abort()
            else:
                r.continue_()

        context.route("**/*", route)
        yield context
        context.close()


class Watched:
    """A page with every console error, dialog and outside request recorded (outside requests are blocked)."""

    def __init__(self, context):
        self.page = context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("dialog", self._dialog)
        self.outside = context.outside

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def close(self):
        self.page.close()


@pytest.fixture
def watched(browser_context):
    w = Watched(browser_context)
    yield w
    w.close()


def _search(page, query: str):
    box = page.locator("input.md-search__input")
    box.click()
    box.press_sequentially(query, delay=30)
    page.wait_for_selector(".md-search-result__item", state="attached")
    return page.locator(".md-search-result__item")


def test_home_loads_without_console_errors_or_outside_requests(watched, server):
    page = watched.page
    page.goto(server, wait_until="networkidle")
    assert "Efficient LVLM Inference Atlas" in page.title()
    assert page.locator("table a[href='cells/prefill-density.html']").inner_text() == "4"
    assert watched.errors == [] and watched.outside == [] and watched.dialogs == []


def test_search_finds_fastv(watched, server):
    page = watched.page
    page.goto(server, wait_until="networkidle")
    results = _search(page, "FastV")
    assert results.count() >= 1
    assert "FastV" in page.locator(".md-search-result").inner_text()
    page.locator(".md-search-result__link[href*='papers/fastv-2024.html']").first.wait_for()
    assert watched.errors == [] and watched.outside == []


def test_explorer_filters_narrow_the_table(watched, server):
    page = watched.page
    page.goto(server + "explorer.html", wait_until="networkidle")
    page.wait_for_selector("#atlas-explorer[data-ready]")
    rows = page.locator("#atlas-explorer tbody tr")
    assert rows.count() == 6
    page.select_option("select[data-filter=stage]", "decode")
    assert rows.count() == 1 and rows.first.get_attribute("data-id") == "snapkv-2024"
    page.select_option("select[data-filter=stage]", "")
    page.select_option("select[data-filter=technique]", "token_pruning")
    assert rows.count() == 4
    page.check("input[data-filter=code]")
    assert sorted(rows.nth(i).get_attribute("data-id") for i in range(rows.count())) == ["fastv-2024",
                                                                                         "hostile-2025"]
    page.uncheck("input[data-filter=code]")
    page.check("input[data-filter=refimpl]")
    assert rows.count() == 1 and rows.first.get_attribute("data-id") == "fastv-2024"
    page.uncheck("input[data-filter=refimpl]")
    page.select_option("select[data-filter=technique]", "")
    page.fill("input[data-filter=text]", "müller")
    assert rows.count() == 1 and rows.first.get_attribute("data-id") == "keyframe-selector-2025"
    page.fill("input[data-filter=text]", "")
    page.locator("th[data-sort=year]").click()  # newest first -> oldest first
    years = [int(rows.nth(i).locator("td").nth(1).inner_text()) for i in range(rows.count())]
    assert years == sorted(years)
    assert "6 of 6 papers" in page.locator(".atlas-count").inner_text()
    assert watched.errors == [] and watched.outside == []


def test_paper_page_shows_and_copies_its_bibtex(watched, server, browser_context):
    page = watched.page
    browser_context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.rstrip("/"))
    page.goto(server + "papers/fastv-2024.html", wait_until="networkidle")
    bib = page.locator("#bibtex-fastv-2024 pre").inner_text()
    assert bib.startswith("@inproceedings{chen2024imageb,")
    assert "booktitle     = {European Conference on Computer Vision}" in bib
    page.locator("button.atlas-copy").click()
    page.wait_for_function("document.querySelector('button.atlas-copy').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == bib
    with page.expect_download() as download:  # the static papers/<id>.bib next to the page
        page.locator("a.atlas-download").click()
    assert download.value.suggested_filename == "fastv-2024.bib"
    assert Path(download.value.path()).read_text(encoding="utf-8") == bib + "\n"
    assert watched.errors == [] and watched.outside == []


def test_hostile_text_is_inert_in_page_explorer_search_and_bib(watched, server):
    page = watched.page
    page.goto(server + "papers/hostile-2025.html", wait_until="networkidle")
    assert page.locator("article h1").inner_text() == HOSTILE_TITLE
    assert page.locator("img[src=x], iframe, article svg[onload], article b, article script").count() == 0
    assert XSS_IMG in page.locator("article").inner_text()
    assert "{{ 7*7 }}" in page.locator("article").inner_text()

    page.goto(server + "explorer.html", wait_until="networkidle")
    page.wait_for_selector("#atlas-explorer[data-ready]")
    page.fill("input[data-filter=text]", "onerror")
    rows = page.locator("#atlas-explorer tbody tr")
    assert rows.count() == 2  # the hostile paper and the 10 kB title
    assert HOSTILE_TITLE in page.locator("tr[data-id=hostile-2025]").inner_text()
    assert page.locator("#atlas-explorer img, #atlas-explorer b, #atlas-explorer script").count() == 0

    page.goto(server, wait_until="networkidle")
    _search(page, "onerror")
    results = page.locator(".md-search-result")
    page.wait_for_timeout(500)
    assert "onerror" in results.inner_text()
    assert page.locator(".md-search-result img, .md-search-result svg[onload], .md-search-result iframe").count() == 0

    page.goto(server + "papers/hostile-2025.html", wait_until="networkidle")
    with page.expect_download() as download:
        page.locator("a.atlas-download").click()
    assert download.value.suggested_filename == "hostile-2025.bib"
    library = bibtexparser.parse_string(Path(download.value.path()).read_text(encoding="utf-8"))
    assert library.failed_blocks == [] and len(library.entries) == 1
    assert latex_decode(library.entries[0].fields_dict["title"].value) == HOSTILE_TITLE
    assert watched.dialogs == [] and watched.errors == [] and watched.outside == []


def test_paper_page_nav_drawer_reaches_the_top_level_pages(watched, server):
    """Paper pages write the (flat) primary nav themselves (site/overrides/paper.html): it must still open as the
    mobile drawer and lead to the top-level pages."""
    page = watched.page
    page.set_viewport_size({"width": 400, "height": 800})
    page.goto(server + "papers/snapkv-2024.html", wait_until="networkidle")
    page.locator("label.md-header__button[for=__drawer]").click()
    page.locator(".md-sidebar--primary a.md-nav__link", has_text="Explorer").click()
    page.wait_for_url("**/explorer.html")
    assert watched.errors == [] and watched.outside == []
