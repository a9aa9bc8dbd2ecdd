"""What the site's templates see: a page (its path and relative links) and the context shared by every page (the
model, the taxonomy's names, links and tables built from trusted parts), and the repository the site links to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from markupsafe import Markup

from tools.catalogue.schema import Paper
from tools.outputs.site.explorer import (
    paper_link,
)
from tools.outputs.site.markup import (
    clip,
    href,
    md_link,
    rel,
)
from tools.outputs.site.model import (
    SiteModel,
    axis_page,
    cell_page,
    display_name,
    paper_page,
    stage_page,
    technique_page,
)
from tools.outputs.site.refimpls import (
    RefImpl,
    implementations,
)
from tools.outputs.text import (
    html_text,
)

ISSUE_FORM = "add-paper.yml"  # .github/ISSUE_TEMPLATE/: the "Submit a paper" form


@dataclass
class Page:
    """One generated page: its path, and links relative to it."""

    path: str  # docs-relative path of the Markdown source
    ctx: "Context"

    def link(self, target: str) -> Markup:
        """For Markdown links: mkdocs checks the target and rewrites .md to .html."""
        return Markup(rel(self.path, target))

    def href(self, target: str) -> Markup:
        """For raw HTML (which mkdocs leaves alone): the built page's relative URL."""
        link = rel(self.path, target)
        return Markup(link[:-3] + ".html" if link.endswith(".md") else link)


class Context:
    """What the templates need: the model, the taxonomy's names, and links/tables built from trusted parts."""

    def __init__(self, model: SiteModel, refimpl: Callable[[str], RefImpl]):
        self.model = model
        self.tax = model.taxonomy
        self.papers = model.papers
        self._refimpl = refimpl
        self.stage_name = {s.id: s.name for s in self.tax.stages}
        self.axis_name = {a.id: a.name for a in self.tax.axes}
        self.technique_name = {t.id: t.name for t in self.tax.techniques}
        self.modality_name = {m.id: m.name for m in self.tax.modalities}
        self.training_name = {r.id: r.name for r in self.tax.training_regimes}
        self.metric_name = {m.id: m.name for m in self.tax.metrics}
        self._refimpl_cache: dict[str, RefImpl] = {}
        self._html_links: dict[tuple[str, str, str], Markup] = {}
        self._related_items: dict[tuple[str, str], str] = {}
        self._external_links: dict[str, Markup] = {}

    def refimpl(self, ref: str) -> RefImpl:
        """The description of a reference implementation link."""
        if ref not in self._refimpl_cache:
            self._refimpl_cache[ref] = self._refimpl(ref)
        return self._refimpl_cache[ref]

    def cell_name(self, cell: str) -> str:
        """A cell's display name (stage and axis)."""
        stage, axis = cell.split(".", 1)
        return f"{self.stage_name.get(stage, stage)} × {self.axis_name.get(axis, axis)}"

    def cell_link(self, page: Page, cell: str) -> Markup:
        """A link from ``page`` to a cell's page."""
        return md_link(self.cell_name(cell), page.link(cell_page(cell)))

    def technique_link(self, page: Page, technique: str) -> Markup:
        """A link from ``page`` to a technique's page."""
        return md_link(self.technique_name.get(technique, technique), page.link(technique_page(technique)))

    def paper_link(self, page: Page, pid: str) -> Markup:
        """A link from ``page`` to a paper's page."""
        return md_link(display_name(self.papers[pid]), page.link(paper_page(pid)))

    def refimpls_for(self, pids) -> list[tuple[RefImpl, list[str]]]:
        """Reference implementations linked by any of these papers, with the papers that link each."""
        found: dict[str, list[str]] = {}
        for pid in pids:
            for ref in implementations(self.papers[pid]):
                found.setdefault(ref, []).append(pid)
        return [(self.refimpl(ref), found[ref]) for ref in sorted(found)]

    def paper_table(self, page: Page, pids: list[str]) -> Markup:
        """A table of papers (newest first), as a raw HTML block: Markdown leaves it alone (fast, and nothing in it
        is read as Markdown), and search skips it (every row repeats a paper page). Below 700 px wide the rows become
        cards (site/assets/atlas.css), each cell labelled by its ``data-label``."""
        if not pids:
            return Markup("<p><em>No paper in the catalogue yet.</em></p>\n")
        out = [
            '<table class="atlas-papers atlas-cards" data-search-exclude>',
            "<thead><tr><th>Paper</th><th>Year</th><th>Venue</th><th>Techniques</th><th>Links</th>"
            "<th>Ref. impl.</th></tr></thead><tbody>",
        ]
        names = self.technique_name
        for pid in pids:
            p = self.papers[pid]
            cell = f'<a href="{page.href(paper_page(pid))}">{html_text(display_name(p))}</a>'
            if p.short_name:
                cell += f"<br><small>{html_text(clip(p.title, 110))}</small>"
            techniques = ", ".join(
                f'<a href="{page.href(technique_page(t))}">{html_text(names.get(t, t))}</a>'
                for t in p.placement.techniques
            )
            out.append(
                f'<tr><td data-label="Paper">{cell}</td><td data-label="Year">{p.year}</td>'
                f'<td data-label="Venue">{html_text(p.venue)}</td><td data-label="Techniques">{techniques}</td>'
                f'<td data-label="Links">{self.external_links(p)}</td>'
                f'<td data-label="Ref. impl.">{"yes" if implementations(p) else ""}</td></tr>'
            )
        out.append("</tbody></table>")
        return Markup("\n".join(out) + "\n")

    def external_links(self, p: Paper) -> Markup:
        """The paper's own page and its code (the official repository when known), as short links; built once per
        paper (it is listed on several pages)."""
        links = self._external_links.get(p.id)
        if links is None:
            links = self._external_links[p.id] = self._external_links_of(p)
        return links

    @staticmethod
    def _external_links_of(p: Paper) -> Markup:
        links = []
        if paper_link(p):
            links.append(f'<a href="{href(paper_link(p))}">paper</a>')
        code = next((c for c in p.code if c.official), p.code[0] if p.code else None)
        if code is not None:
            official = "official code" if code.official else "code (not verified as official)"
            links.append(f'<a href="{href(code.url)}" title="{official}">code</a>')
        return Markup(" · ".join(links))

    def html_link(self, page: Page, target: str, text: str) -> Markup:
        """An HTML link; memoised by folder, target and text (paper pages repeat the same cell, stage, axis and
        technique links thousands of times)."""
        key = (page.path.rpartition("/")[0], target, text)
        link = self._html_links.get(key)
        if link is None:
            link = self._html_links[key] = Markup(f'<a href="{page.href(target)}">{html_text(text)}</a>')
        return link

    def related_items(self, page: Page, pids: list[str]) -> Markup:
        """``<li>`` items for a related-papers list: name (a link), year, and the full title after a short name. Each
        item is built once per folder (every paper page is in papers/, and a paper is related to many others)."""
        folder = page.path.rpartition("/")[0]
        items = []
        for pid in pids:
            item = self._related_items.get((folder, pid))
            if item is None:
                q = self.papers[pid]
                item = f"<li>{self.html_link(page, paper_page(pid), display_name(q))} ({q.year})"
                if q.short_name:
                    item += f" — {html_text(q.title)}"
                item = self._related_items[(folder, pid)] = item + "</li>"
            items.append(item)
        return Markup("\n".join(items))

    def matrix(self, page: Page) -> Markup:
        """The stage × axis matrix: paper counts, each cell a link to its page."""
        head = (
            "| Stage \\ Axis | "
            + " | ".join(str(md_link(a.name, page.link(axis_page(a.id)))) for a in self.tax.axes)
            + " | All |"
        )
        rows = [head, "|---" * (len(self.tax.axes) + 2) + "|"]
        for s in self.tax.stages:
            cells = []
            for a in self.tax.axes:
                cell = f"{s.id}.{a.id}"
                cells.append(str(md_link(str(self.model.cell_count(cell)), page.link(cell_page(cell)))))
            total = len(self.model.by_stage.get(s.id, []))
            rows.append(f"| {md_link(s.name, page.link(stage_page(s.id)))} | " + " | ".join(cells) + f" | {total} |")
        return Markup("\n".join(rows) + "\n")


@dataclass(frozen=True)
class Repository:
    """The repository the site links to (mkdocs ``repo_url``), when known: its "Submit a paper" issue form and its
    files."""

    url: str | None

    @property
    def submit_paper(self) -> str | None:
        """The address of the repository's "Submit a paper" issue form, when the repository is known."""
        return f"{self.url}/issues/new?template={ISSUE_FORM}" if self.url else None

    def file(self, path: str) -> str | None:
        """A file of the repository on GitHub (the default branch)."""
        return f"{self.url}/blob/HEAD/{path}" if self.url else None
