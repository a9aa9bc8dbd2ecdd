"""The built site in headless Chromium (Debian's chromium, driven by Playwright; nothing is downloaded), as three users
would use it, on a desktop (1366 px) and a phone (390 px):

* finding: the explorer's multi-select filters and technique groups, every author and summary searchable, paging,
  the whole state in the address (a reload shows the same view), and site search that puts the right paper first
  (on the fixture catalogue, with decoys, and on the real one);
* citing: an export of a filtered view is exactly the rows shown (BibTeX parsed with bibtexparser, CSV, JSON), and
  an export of everything is the published catalogue file byte for byte; a paper page copies its BibTeX;
* adding: the contributing page is one click from home and gives `tools add` and the "Submit a paper" form.

Every test also checks that no request left 127.0.0.1 (each one is blocked and recorded), that the console stayed
free of errors, and hostile text stays inert. Screenshots go to $ATLAS_SCREENSHOT_DIR when set (else a temporary
folder); the responsive test asserts what they show: no horizontal scrolling, year / venue / links on one line, no
word broken inside, and cards below 700 px.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import urlsplit

import bibtexparser
import pytest

from tests.tools.outputs._fixture_catalogue import HOSTILE_TITLE, REPO_URL, UNIQUE_AUTHOR, XSS_IMG
from tools.outputs.bibtex import latex_decode
from tools.outputs.site.build import make_server

pytestmark = pytest.mark.browser

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP, PHONE = {"width": 1366, "height": 900}, {"width": 390, "height": 844}


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _serve(site: Path):
    srv = make_server(site, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/"


@pytest.fixture(scope="module")
def server(built_site):
    srv, url = _serve(built_site.site)
    yield url
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def real_server(tmp_path_factory):
    """The real catalogue's site (search ranking is checked on it too: FastV ranked sixth there)."""
    from tools.catalogue.taxonomy import load_taxonomy
    from tools.catalogue.validate import load_catalogue
    from tools.outputs.reconcile import render_reconciliation
    from tools.outputs.site.build import build_site
    from tools.outputs.site.generate import generate
    from tools.outputs.site.measured import load_measurements
    from tools.outputs.site.refimpls import RESULTS_DIR

    root = tmp_path_factory.mktemp("real-site")
    papers = load_catalogue()
    generated = generate(
        papers,
        load_taxonomy(),
        root / "docs",
        reconciliation=render_reconciliation,
        results_dir=RESULTS_DIR,
        measurements=load_measurements(papers),
    )
    build_site(root / "docs", root / "html", generated.paper_bibs, strict=True)
    srv, url = _serve(root / "html")
    yield url
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("ATLAS_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    executable = _chromium()
    if executable is None:
        pytest.skip("Debian's chromium is not installed (run `make browser-deps` as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=executable, headless=True, args=FLAGS, viewport=DESKTOP, accept_downloads=True
        )
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

    def clean(self) -> bool:
        return self.errors == [] and self.outside == [] and self.dialogs == []

    def close(self):
        self.page.close()


@pytest.fixture
def watched(browser_context):
    w = Watched(browser_context)
    yield w
    w.close()


# ------------------------------------------------------------------------------------------------ helpers
def _explorer(page, url: str):
    page.goto(url, wait_until="networkidle")
    page.wait_for_selector("#atlas-explorer[data-ready]")
    return page.locator("#atlas-explorer tbody tr")


def _ids(rows) -> list[str]:
    return [rows.nth(i).get_attribute("data-id") for i in range(rows.count())]


def _pick(page, filter_key: str, value: str, name: str | None = None):
    """Open a filter's drop-down, tick one value, close it (two clicks and a tick)."""
    details = page.locator(f"details[data-filter={filter_key}]")
    details.locator("summary").click()
    page.check(f"input[name={name or filter_key}][value={value}]")
    details.locator("summary").click()


def _download(page, selector: str) -> tuple[str, str]:
    with page.expect_download() as download:
        page.locator(selector).click()
    return download.value.suggested_filename, Path(download.value.path()).read_text(encoding="utf-8")


def _first_search_result(page, query: str) -> str:
    """Type a query in the header search; the first result's page, once the results answer this very query (the
    theme adds the matched words to each result link as ?h=...)."""
    box = page.locator("input.md-search__input")
    box.click()
    box.fill("")
    box.press_sequentially(query, delay=15)
    terms = "+".join(query.lower().split())
    page.wait_for_function(
        """terms => { const a = document.querySelector('.md-search-result__item > a');
                      return a && new RegExp('[?&]h=' + terms.replace(/[+]/g, '\\\\+') + '($|[&#])').test(a.href); }""",
        arg=terms,
    )
    href = page.locator(".md-search-result__item > a").first.get_attribute("href")
    page.keyboard.press("Escape")
    return urlsplit(href).path.rsplit("/", 2)[-2] + "/" + urlsplit(href).path.rsplit("/", 1)[-1]


CONTRAST = """sel => {
  const parse = c => c.match(/[\\d.]+/g).map(Number);
  const lum = ([r, g, b]) => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) **
  2.4; };
                               return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const el = document.querySelector(sel);
  let node = el, bg = [255, 255, 255];
  while (node) { const c = parse(getComputedStyle(node).backgroundColor); if (c.length < 4 || c[3] > 0) { bg = c;
  break; }
                 node = node.parentElement; }
  const fg = parse(getComputedStyle(el).color), a = fg.length > 3 ? fg[3] : 1;
  const mixed = [0, 1, 2].map(i => a * fg[i] + (1 - a) * bg[i]);
  const [hi, lo] = [lum(mixed), lum(bg)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}"""

LINES = """sel => [...document.querySelectorAll(sel)].filter(td => {
  const r = document.createRange(); r.selectNodeContents(td);
  return new Set([...r.getClientRects()].filter(x => x.width > 0).map(x => Math.round(x.top))).size > 1;
}).map(td => td.textContent)"""

BROKEN_WORDS = """sel => { const bad = [];
  for (const a of document.querySelectorAll(sel)) {
    const td = a.closest('td'), st = getComputedStyle(td);
    const width = td.clientWidth - parseFloat(st.paddingLeft) - parseFloat(st.paddingRight);
    const span = document.createElement('span');
    span.style.cssText = 'position:absolute;visibility:hidden;white-space:nowrap;font:' + getComputedStyle(a).font;
    document.body.appendChild(span);
    for (const w of a.textContent.split(/\\s+/)) { span.textContent = w;
      if (w.length < 40 && span.getBoundingClientRect().width > width + 1) bad.push(w); }
    span.remove();
  }
  return bad; }"""


# ------------------------------------------------------------------------------------------------ pages
def test_home_loads_without_console_errors_or_outside_requests(watched, server):
    page = watched.page
    page.goto(server, wait_until="networkidle")
    assert "Efficient LVLM Inference Atlas" in page.title()
    assert page.locator("table a[href='cells/prefill-density.html']").inner_text() == "4"
    assert page.locator("header a.md-source").get_attribute("href") == REPO_URL  # no API call for its stars
    assert watched.clean()


def test_a_missing_page_shows_the_sites_404(watched, server):
    page = watched.page
    response = page.goto(server + "papers/not-here.html", wait_until="networkidle")
    assert response.status == 404 and "404 - Not found" in page.locator("article").inner_text()
    assert watched.outside == []


# ------------------------------------------------------------------------------------------------ search
@pytest.mark.parametrize(
    "query, expected",
    [
        ("FastV", "papers/fastv-2024.html"),  # FastVariant's title and two summaries also start with "fastv"
        ("SnapKV", "papers/snapkv-2024.html"),
        ("VisionZip", "papers/visionzip-2025.html"),
        (UNIQUE_AUTHOR, "papers/visionzip-2025.html"),  # an author's full name
        ("Yingbing Huang", "papers/snapkv-2024.html"),
    ],
)
def test_search_puts_the_right_paper_first(watched, server, query, expected):
    page = watched.page
    page.goto(server, wait_until="networkidle")
    assert _first_search_result(page, query) == expected
    assert watched.clean()


def test_search_on_the_real_catalogue_puts_the_right_paper_first(watched, real_server):
    """Before: "FastV" ranked the FastV page sixth (behind FastViT, FastVLM ...), an author's name ranked the
    reconciliation page or any title starting with "Li" first; now an author's name ranks one of their papers first."""
    from tools.catalogue.validate import load_catalogue

    papers = load_catalogue()

    def pages_by(author: str) -> set[str]:
        return {f"papers/{p.id}.html" for p in papers.values() if author in p.authors}

    page = watched.page
    page.goto(real_server, wait_until="networkidle")
    for query, expected in [
        ("FastV", {"papers/fastv-2024.html"}),
        ("SnapKV", {"papers/snapkv-2024.html"}),
        ("VisionZip", {"papers/visionzip-2025.html"}),
        ("Liang Chen", pages_by("Liang Chen")),  # "liang" and "chen" are in 100+ pages
        ("Zhuotao Tian", pages_by("Zhuotao Tian")),
    ]:
        assert expected and _first_search_result(page, query) in expected, query
    assert watched.clean()


# ------------------------------------------------------------------------------------------------ explorer
def test_explorer_filters_are_multi_select_and_survive_a_reload(watched, server):
    page = watched.page
    rows = _explorer(page, server + "explorer.html")
    assert rows.count() == 9
    _pick(page, "stage", "prefill")
    _pick(page, "stage", "decode")
    assert sorted(_ids(rows)) == [
        "bidi-2025",
        "chen-collision-2024",
        "fastv-2024",
        "hostile-2025",
        "long-title-2025",
        "snapkv-2024",
    ]
    _pick(page, "modality", "text")
    assert sorted(_ids(rows)) == ["bidi-2025", "snapkv-2024"]
    page.check("input[data-filter=code]")
    assert _ids(rows) == ["snapkv-2024"]
    assert "stage=prefill%2Cdecode" in page.url and "modality=text" in page.url and "code=1" in page.url
    page.reload(wait_until="networkidle")
    page.wait_for_selector("#atlas-explorer[data-ready]")
    assert _ids(rows) == ["snapkv-2024"]  # the same view after a reload
    assert page.is_checked("input[name=stage][value=decode]") and page.is_checked("input[data-filter=code]")
    assert page.locator("details[data-filter=stage] summary").inner_text().startswith("Stage (2)")
    page.locator("button.atlas-clear").click()
    assert rows.count() == 9 and urlsplit(page.url).query == ""
    assert watched.clean()


def test_explorer_technique_groups_text_and_sort(watched, server):
    page = watched.page
    rows = _explorer(page, server + "explorer.html")
    _pick(page, "technique", "kv_cache_compression", name="group")  # every KV-cache technique at once
    assert _ids(rows) == ["snapkv-2024"]
    _pick(page, "technique", "token_merging")  # a group and a technique: papers with either
    assert sorted(_ids(rows)) == ["fast-variant-2025", "snapkv-2024"]
    page.locator("button.atlas-clear").click()
    for words, expected in [
        ("chengyao", ["visionzip-2025"]),  # the fourth author: every author is searched
        ("dominant contextual", ["visionzip-2025"]),  # words of the summary, in any order
        ("muller", ["keyframe-selector-2025"]),  # without the accent
        ("FastVariant", ["fast-variant-2025"]),
    ]:  # the short name
        page.fill("input[data-filter=text]", words)
        assert _ids(rows) == expected, words
    page.fill("input[data-filter=text]", "")
    page.locator("th[data-sort=year]").click()  # newest first -> oldest first
    years = [int(rows.nth(i).locator("td").nth(1).inner_text()) for i in range(rows.count())]
    assert years == sorted(years) and "sort=year" in page.url and "dir=asc" in page.url
    row = page.locator("tr[data-id=fastv-2024]")
    assert row.locator("a[data-link=paper]").get_attribute("href") == "https://arxiv.org/abs/2403.06764"
    assert row.locator("a[data-link=code]").get_attribute("href") == "https://github.com/pkunlp-icler/FastV"
    assert watched.clean()


def test_explorer_pages_through_the_selection(watched, server):
    page = watched.page
    rows = _explorer(page, server + "explorer.html?per=4")
    first = _ids(rows)
    assert len(first) == 4 and "Page 1 of 3" in page.locator(".atlas-page").inner_text()
    page.locator("button[data-page=next]").click()
    second = _ids(rows)
    assert len(second) == 4 and not set(first) & set(second) and "page=2" in page.url
    page.reload(wait_until="networkidle")
    page.wait_for_selector("#atlas-explorer[data-ready]")
    assert _ids(rows) == second and "Showing 5–8 of 9 papers" in page.locator(".atlas-count").inner_text()
    rows = _explorer(page, server + "explorer.html?stage=nowhere,decode")  # an old or mistyped link
    assert sorted(_ids(rows)) == ["bidi-2025", "snapkv-2024"] and "nowhere" not in page.url
    assert watched.clean()


def test_an_export_of_a_filtered_view_has_exactly_the_rows_shown(watched, server, built_site):
    page = watched.page
    rows = _explorer(page, server + "explorer.html?technique=token_pruning,token_merging&sort=title&dir=asc")
    shown = _ids(rows)
    assert len(shown) == 6 and "Export these 6 papers" in page.locator(".atlas-export").inner_text()
    records = {r["id"]: r for r in json.loads((built_site.site / "data" / "papers.json").read_text())["papers"]}

    name, text = _download(page, "button[data-export=bib]")
    library = bibtexparser.parse_string(text)
    assert name == "atlas-selection.bib" and library.failed_blocks == []
    assert [e.key for e in library.entries] == [records[pid]["key"] for pid in shown]
    hostile = next(e for e in library.entries if e.key == records["hostile-2025"]["key"])
    assert latex_decode(hostile.fields_dict["title"].value) == HOSTILE_TITLE

    name, text = _download(page, "button[data-export=csv]")
    table = list(csv.reader(io.StringIO(text, newline="")))
    assert name == "atlas-selection.csv" and [r[0] for r in table[1:]] == shown
    name, text = _download(page, "button[data-export=json]")
    assert name == "atlas-selection.json" and [r["id"] for r in json.loads(text)] == shown
    assert watched.clean()


def test_an_export_of_everything_is_the_published_catalogue(watched, server, built_site):
    page = watched.page
    _explorer(page, server + "explorer.html")
    _, text = _download(page, "button[data-export=csv]")
    assert text == (built_site.site / "data" / "catalogue.csv").read_text(encoding="utf-8")
    _, text = _download(page, "button[data-export=json]")
    assert text == (built_site.site / "data" / "catalogue.json").read_text(encoding="utf-8")
    assert watched.clean()


# ------------------------------------------------------------------------------------------------ the three tasks
def test_three_user_tasks_take_a_few_clicks(watched, server):
    page = watched.page
    # Finding KV-cache compression papers on text with code: from home, 1 click to the explorer, then the group,
    # the modality and the code box (7 clicks in all, 16 selections before).
    page.goto(server, wait_until="networkidle")
    page.locator("article a[href='explorer.html']").first.click()  # the home page's own link (it hides the nav)
    page.wait_for_selector("#atlas-explorer[data-ready]")
    _pick(page, "technique", "kv_cache_compression", name="group")
    _pick(page, "modality", "text")
    page.check("input[data-filter=code]")
    assert _ids(page.locator("#atlas-explorer tbody tr")) == ["snapkv-2024"]
    # Citing every token-pruning paper: two clicks and a tick, then one click for the .bib (41 clicks before).
    page.locator("button.atlas-clear").click()
    _pick(page, "technique", "token_pruning")
    _, text = _download(page, "button[data-export=bib]")
    assert len(bibtexparser.parse_string(text).entries) == 5
    # Adding a paper: one click from home to the instructions and the issue form.
    page.goto(server, wait_until="networkidle")
    page.locator("article a[href='contributing.html']").first.click()
    article = page.locator("article").inner_text()
    assert article.index("python -m tools add 2403.06764") < article.index("python -m tools new")
    assert page.locator("article a", has_text="Submit a paper").get_attribute("href") == (
        REPO_URL + "/issues/new?template=add-paper.yml"
    )
    assert watched.clean()


# ------------------------------------------------------------------------------------------------ layout
@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1366px", "390px"])
def test_tables_read_well_on_a_desktop_and_become_cards_on_a_phone(watched, server, shots, viewport):
    page = watched.page
    page.set_viewport_size(viewport)
    width = viewport["width"]
    for path, ready in [
        ("", None),
        ("explorer.html", "#atlas-explorer[data-ready]"),
        ("techniques/token_pruning.html", None),
        ("results.html", None),
        ("papers/fastv-2024.html", None),
    ]:
        page.goto(server + path, wait_until="networkidle")
        if ready:
            page.wait_for_selector(ready)
        name = (path.replace("/", "-").removesuffix(".html") or "home") + f"-{width}.png"
        page.screenshot(path=str(shots / name), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= width, path  # no sideways scrolling
        cells = (
            "table.atlas-cards td[data-label=Year], table.atlas-cards td[data-label=Venue], "
            "table.atlas-cards td[data-label=Links]"
        )
        assert page.evaluate(LINES, cells) == [], path  # each on one line ("20/26", "offi/cia/l" before)
        assert page.evaluate(BROKEN_WORDS, "table.atlas-cards td[data-label=Paper] a") == [], path
        tables = page.locator("table.atlas-cards")
        if tables.count():
            display = page.evaluate(
                "t => getComputedStyle(t.querySelector('tbody tr')).display", tables.first.element_handle()
            )
            head = page.evaluate(
                "t => getComputedStyle(t.querySelector('thead')).display", tables.first.element_handle()
            )
            assert (display, head) == (("block", "none") if width < 700 else ("table-row", "table-header-group")), path
    assert watched.clean()


def test_buttons_are_readable_in_the_dark_scheme(watched, server, shots):
    """The dark scheme's "Copy BibTeX" and "Download .bib" buttons had 2.35:1 contrast; WCAG AA asks 4.5:1."""
    page = watched.page
    page.goto(server + "papers/fastv-2024.html", wait_until="networkidle")
    try:
        page.locator("form[data-md-component=palette] label:visible").first.click()
        page.wait_for_selector("body[data-md-color-scheme=slate]")
        page.locator("#bibtex").scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "paper-bibtex-dark-1366.png"))
        for button in ("button.atlas-copy", "a.atlas-download"):
            assert page.evaluate(CONTRAST, button) >= 4.5, button
            page.hover(button)
            assert page.evaluate(CONTRAST, button) >= 4.5, f"{button} hovered"
        _explorer(page, server + "explorer.html")
        assert page.locator("body[data-md-color-scheme=slate]").count() == 1
        for button in ("button[data-export=bib]", "button.atlas-clear"):
            assert page.evaluate(CONTRAST, button) >= 4.5, button
        page.screenshot(path=str(shots / "explorer-dark-1366.png"))
    finally:
        page.evaluate("localStorage.clear()")
    assert watched.clean()


def test_results_tables_sort_by_any_column(watched, server):
    page = watched.page
    page.goto(server + "results.html", wait_until="networkidle")
    table = page.locator("#tokens-performance-llava-1-5-7b ~ .atlas-setting table").first
    claims = lambda: [float(re.sub(r"[^\d.]", "", c)) for c in table.locator("td[data-label=Claim]").all_inner_texts()]
    table.locator("th").nth(2).click()
    assert claims() == sorted(claims())
    table.locator("th").nth(2).click()
    assert claims() == sorted(claims(), reverse=True)
    assert watched.clean()


# ------------------------------------------------------------------------------------------------ BibTeX, hostile text
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
    name, text = _download(page, "a.atlas-download")  # the static bib/<id>.bib
    assert name == "fastv-2024.bib" and text == bib + "\n"
    assert watched.clean()


def test_hostile_text_is_inert_in_page_explorer_search_and_bib(watched, server):
    page = watched.page
    page.goto(server + "papers/hostile-2025.html", wait_until="networkidle")
    assert page.locator("article h1").inner_text() == HOSTILE_TITLE
    assert page.locator("img[src=x], iframe, article svg[onload], article b, article script").count() == 0
    assert XSS_IMG in page.locator("article").inner_text()
    assert "{{ 7*7 }}" in page.locator("article").inner_text()

    rows = _explorer(page, server + "explorer.html")
    page.fill("input[data-filter=text]", "onerror")
    assert rows.count() == 2  # the hostile paper and the 10 kB title
    assert HOSTILE_TITLE in page.locator("tr[data-id=hostile-2025]").inner_text()
    assert page.locator("#atlas-explorer img, #atlas-explorer b, #atlas-explorer script").count() == 0

    page.goto(server, wait_until="networkidle")
    box = page.locator("input.md-search__input")
    box.click()
    box.press_sequentially("onerror", delay=15)
    page.wait_for_selector(".md-search-result__item", state="attached")
    page.wait_for_timeout(500)
    assert "onerror" in page.locator(".md-search-result").inner_text()
    assert page.locator(".md-search-result img, .md-search-result svg[onload], .md-search-result iframe").count() == 0

    page.goto(server + "papers/hostile-2025.html", wait_until="networkidle")
    name, text = _download(page, "a.atlas-download")
    library = bibtexparser.parse_string(text)
    assert name == "hostile-2025.bib" and library.failed_blocks == [] and len(library.entries) == 1
    assert latex_decode(library.entries[0].fields_dict["title"].value) == HOSTILE_TITLE
    assert watched.clean()


def test_paper_page_nav_drawer_reaches_the_top_level_pages(watched, server):
    """Paper pages write the (flat) primary nav themselves (site/overrides/paper.html): it must still open as the
    mobile drawer and lead to the top-level pages."""
    page = watched.page
    page.set_viewport_size({"width": 400, "height": 800})
    page.goto(server + "papers/snapkv-2024.html", wait_until="networkidle")
    page.locator("label.md-header__button[for=__drawer]").click()
    page.locator(".md-sidebar--primary a.md-nav__link", has_text="Explorer").click()
    page.wait_for_url("**/explorer.html")
    assert watched.clean()
