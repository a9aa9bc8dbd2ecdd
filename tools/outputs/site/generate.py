"""Render the docs tree (Markdown pages, atlas.bib, explorer JSON, exports, assets) and ``mkdocs.yml``.

Page layout (paths inside the docs folder; mkdocs turns ``x.md`` into ``x.html``)::

    index.md  explorer.md  trends.md  results.md  taxonomy.md  reference-implementations.md  reconciliation.md
    frontiers.md  contributing.md  tags.md  atlas.bib  assets/...
    data/papers.json  data/bibtex.json  data/catalogue.csv  data/catalogue.json  data/results/...
    stages/<stage>.md  axes/<axis>.md  cells/<stage>-<axis>.md  techniques/<technique>.md
    papers/<id>.md

Only the top-level pages are in the nav; the rest are reached through links (``not_in_nav`` in mkdocs.yml). A paper
page's BibTeX is in the page (copy and download buttons: site/assets/atlas.js), in atlas.bib, and in bib/<id>.bib,
which tools/outputs/site/build.py writes beside the build (not through the docs tree, where each extra file per paper
would cost more to write and copy than the page itself). Tags
(front matter ``tags:``, checked against the taxonomy by the tags plugin) are on the stage, axis and technique pages,
not on paper pages: the tags page is then an index of the taxonomy rather than every paper three times over, and each
paper page skips the tags plugin's work (about 0.2 ms of the 3 ms budget per paper page).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from tools.catalogue.discovery_log import covered, read_log
from tools.catalogue.paths import ROOT
from tools.catalogue.schema import Paper
from tools.catalogue.taxonomy import Taxonomy
from tools.outputs.bibtex import catalogue_keys, render_bib, render_one
from tools.outputs.site import plots
from tools.outputs.site.explorer import (
    bibtex_json,
    explorer_json,
    explorer_records,
    export_csv,
    export_json,
    paper_link,
)
from tools.outputs.site.markup import (
    claim_value,
    clip,
    front_matter,
    href,
    ident,
    md_link,
    number,
    page_title,
    rel,
    setting,
    tags_allowed,
)
from tools.outputs.site.measured import Measurement
from tools.outputs.site.model import (
    SiteModel,
    axis_page,
    cell_page,
    display_name,
    first_version_date,
    paper_page,
    short_authors,
    stage_page,
    technique_page,
)
from tools.outputs.site.refimpls import (
    RefImpl,
    benchmark_results,
    describe,
    implementations,
)
from tools.outputs.site.results import comparable_settings
from tools.outputs.text import (
    html_text,
    plain,
    template_environment,
)

SITE_SOURCE = ROOT / "site"
TEMPLATES = SITE_SOURCE / "templates"
PAGES = SITE_SOURCE / "pages"
ASSETS = SITE_SOURCE / "assets"
GENERATED = SITE_SOURCE / "_generated"
MKDOCS_YML = ROOT / "mkdocs.yml"
NAV = [  # (title, page): the whole nav; every other page is reached through links
    ("Home", "index.md"),
    ("Explorer", "explorer.md"),
    ("Taxonomy", "taxonomy.md"),
    ("Trends", "trends.md"),
    ("Results", "results.md"),
    ("Reference implementations", "reference-implementations.md"),
    ("Frontiers", "frontiers.md"),
    ("Reconciliation report", "reconciliation.md"),
    ("Tags", "tags.md"),
    ("Contributing", "contributing.md"),
]
NOT_IN_NAV = ["/papers/", "/cells/", "/stages/", "/axes/", "/techniques/"]
CATALOGUE_CSV = "data/catalogue.csv"  # the whole catalogue, as the explorer exports a selection
CATALOGUE_JSON = "data/catalogue.json"
ISSUE_FORM = "add-paper.yml"  # .github/ISSUE_TEMPLATE/: the "Submit a paper" form


@dataclass
class Page:
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
        if ref not in self._refimpl_cache:
            self._refimpl_cache[ref] = self._refimpl(ref)
        return self._refimpl_cache[ref]

    def cell_name(self, cell: str) -> str:
        stage, axis = cell.split(".", 1)
        return f"{self.stage_name.get(stage, stage)} × {self.axis_name.get(axis, axis)}"

    def cell_link(self, page: Page, cell: str) -> Markup:
        return md_link(self.cell_name(cell), page.link(cell_page(cell)))

    def technique_link(self, page: Page, technique: str) -> Markup:
        return md_link(self.technique_name.get(technique, technique), page.link(technique_page(technique)))

    def paper_link(self, page: Page, pid: str) -> Markup:
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
        return f"{self.url}/issues/new?template={ISSUE_FORM}" if self.url else None

    def file(self, path: str) -> str | None:
        """A file of the repository on GitHub (the default branch)."""
        return f"{self.url}/blob/HEAD/{path}" if self.url else None


# ------------------------------------------------------------------------------------------------ pages
class Generator:
    def __init__(
        self,
        papers: Mapping[str, Paper],
        taxonomy: Taxonomy,
        out: Path,
        *,
        refimpl: Callable[[str], RefImpl] = describe,
        results_dir: Path | None = None,
        reconciliation: Callable[[Mapping[str, Paper]], str] | None = None,
        bib_text: str | None = None,
        discovery_log: Path | None = None,
        measurements: list[Measurement] = (),
        repo_url: str | None = None,
    ):
        self.keys = catalogue_keys(papers)
        self.model = SiteModel(papers, taxonomy, self.keys)
        self.ctx = Context(self.model, refimpl)
        self.out = Path(out)
        self.env = template_environment(TEMPLATES)
        methods = {
            "survey": "the survey's own placement",
            "mapped": "mapping a source list's category",
            "curated": "curation from the title and abstract",
        }
        frontiers = {f.id: f.name for f in taxonomy.frontiers}
        self.env.globals.update(
            href=href,
            raw=Markup,
            ident=ident,
            number=number,
            setting=setting,
            front_matter=front_matter,
            tax_method=lambda m: methods.get(m, m),
            frontier_name=lambda f: frontiers.get(f, f),
            page_title=page_title,
            repo=Repository(repo_url),
            claim_value=claim_value,
        )
        self.env.filters["extract_name"] = lambda value, names: names.get(value, value)
        self.results_dir = results_dir
        self.measured: dict[str, list[Measurement]] = {}
        for m in measurements:
            self.measured.setdefault(m.paper, []).append(m)
        self.reconciliation = reconciliation
        self.bib_text = bib_text
        self.covered = covered(read_log(discovery_log)) if discovery_log else None  # (first day, last day) or None
        self.written = 0
        self.paper_bibs: dict[str, str] = {}  # id -> its BibTeX entry, as on its page (build.py writes bib/<id>.bib)
        self._folders: set[str] = set()
        self._paths: set[str] = set()

    def _folder(self, path: str) -> None:
        folder = path.rpartition("/")[0]
        if folder not in self._folders:  # one mkdir per folder, not per file
            (self.out / folder).mkdir(parents=True, exist_ok=True)
            self._folders.add(folder)

    def write(self, path: str, text: str) -> None:
        self._folder(path)
        with open(self.out / path, "w", encoding="utf-8") as handle:
            handle.write(text)
        self._paths.add(path)
        self.written += 1

    def copy(self, source: Path, path: str) -> None:
        self._folder(path)
        shutil.copyfile(source, self.out / path)
        self._paths.add(path)

    def remove_stale(self, previous: set[str]) -> None:
        """Delete what an earlier run wrote and this one did not (a paper that left the catalogue), then the
        folders left empty."""
        for path in sorted(previous - self._paths):
            (self.out / path).unlink()
        for root, _, _ in os.walk(self.out, topdown=False):
            if Path(root) != self.out and not os.listdir(root):
                os.rmdir(root)

    def _files_on_disk(self) -> set[str]:
        found = set()
        for root, _, names in os.walk(self.out):
            rel = os.path.relpath(root, self.out).replace(os.sep, "/")
            found.update(name if rel == "." else f"{rel}/{name}" for name in names)
        return found

    def technique_counts(self, pids: list[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for pid in pids:
            for t in self.model.papers[pid].placement.techniques:
                counts[t] = counts.get(t, 0) + 1
        return counts

    def render_group(self, path: str, pids: list[str], techniques: list[str] | None = None, **values) -> None:
        """A stage, axis, cell or technique page; ``techniques`` defaults to those its papers use."""
        counts = self.technique_counts(pids)
        self.render(
            "group.md.j2",
            path,
            pids=pids,
            technique_counts=counts,
            techniques=sorted(counts) if techniques is None else techniques,
            **values,
        )

    def render_results(self, results) -> None:
        """results.md: claimed vs measured (every paper a GPU benchmark measured) and the comparable settings, each
        with its figure and a sortable table."""
        model = self.model
        settings = comparable_settings(model.papers, model.ordered_ids)
        figures = {}
        for s in settings:
            points = [
                {"x": r.budget, "y": float(r.claim.value), "name": plain(display_name(model.papers[r.paper]))}
                for r in s.rows
            ]
            figures[s.id] = Markup(plots.setting_scatter(points, s.kind.x_label, s.kind.y_label, s.title))
        measured = [m for pid in model.ordered_ids for m in self.measured.get(pid, [])]
        published = {r.name for r in results}
        self.render(
            "results.md.j2", "results.md", settings=settings, figures=figures, measured=measured, published=published
        )

    def render(self, template: str, path: str, **values) -> None:
        page = Page(path, self.ctx)
        text = self.env.get_template(template).render(page=page, c=self.ctx, tax=self.ctx.tax, **values)
        self.write(path, text)

    def render_groups(self) -> None:
        """One page per stage, axis, cell and technique, each listing its papers."""
        tax, model = self.ctx.tax, self.model
        for stage in tax.stages:
            self.render_group(
                stage_page(stage.id),
                kind="stage",
                title=f"Stage: {stage.name}",
                explanation=stage.bottleneck,
                tag=stage.id,
                cells=[f"{stage.id}.{a}" for a in tax.axis_ids],
                pids=model.by_stage.get(stage.id, []),
            )
        for axis in tax.axes:
            self.render_group(
                axis_page(axis.id),
                kind="axis",
                title=f"Axis: {axis.name}",
                explanation=axis.description,
                tag=axis.id,
                cells=[f"{s}.{axis.id}" for s in tax.stage_ids],
                pids=model.by_axis.get(axis.id, []),
            )
        for cell in tax.cell_ids:
            self.render_group(
                cell_page(cell),
                kind="cell",
                title=self.ctx.cell_name(cell),
                explanation=tax.cells[cell],
                tag=None,
                cells=[],
                techniques=[t.id for t in tax.techniques if cell in t.cells],
                pids=model.by_cell.get(cell, []),
                cell=cell,
            )
        for technique in tax.techniques:
            self.render_group(
                technique_page(technique.id),
                kind="technique",
                title=f"Technique: {technique.name}",
                explanation=technique.description,
                tag=technique.id,
                cells=list(technique.cells),
                techniques=[],
                pids=model.by_technique.get(technique.id, []),
            )

    def render_papers(self, published: set) -> None:
        """One page per paper (its BibTeX entry kept for the site's atlas.bib)."""
        tax, model = self.ctx.tax, self.model
        paper_template = self.env.get_template("paper.md.j2")
        bibs = self.paper_bibs
        for pid in model.ordered_ids:
            paper = model.papers[pid]
            path = paper_page(pid)
            bib = bibs[pid] = render_one(paper, self.keys[pid], tax)
            page = Page(path, self.ctx)
            self.write(
                path,
                paper_template.render(
                    page=page,
                    c=self.ctx,
                    tax=tax,
                    p=paper,
                    key=self.keys[pid],
                    bib=bib,
                    authors=short_authors(paper, 1000),
                    date=first_version_date(paper),
                    related=model.related(pid),
                    refimpls=[self.ctx.refimpl(r) for r in implementations(paper)],
                    closest=[self.ctx.refimpl(r) for r in paper.closest_impl],
                    measured=self.measured.get(pid, []),
                    published=published,
                ),
            )

    def run(self) -> int:
        # Files are rewritten in place and stale ones deleted at the end, not the whole tree deleted first: on ext4,
        # creating a file soon after thousands were deleted is slow (inode allocation skips recently deleted
        # inodes), and rewriting an existing file allocates none. See benchmarks/README.md.
        self.out.mkdir(parents=True, exist_ok=True)
        previous = self._files_on_disk()
        self._folders, self._paths = {""}, set()
        for source in sorted(ASSETS.rglob("*")):
            if source.is_file():
                self.copy(source, "assets/" + source.relative_to(ASSETS).as_posix())
        for page in sorted(PAGES.glob("*.md")):
            self.copy(page, page.name)
        tax, model = self.ctx.tax, self.model
        self.render(
            "index.md.j2",
            "index.md",
            newest=model.newest(),
            n_papers=len(model.papers),
            n_code=sum(1 for p in model.papers.values() if p.code),
            n_claims=sum(len(p.claims) for p in model.papers.values()),
            n_refimpl=sum(1 for p in model.papers.values() if implementations(p)),
            n_measured=len(self.measured),
            covered=self.covered,
        )
        self.render("contributing.md.j2", "contributing.md")
        self.render("taxonomy.md.j2", "taxonomy.md")
        self.render_groups()
        results = benchmark_results(self.results_dir) if self.results_dir else []
        self.render_papers({r.name for r in results})
        quarter_svg, quarter_facts = plots.papers_per_quarter(model)
        speed_svg, points = plots.speedup_vs_retained(model)
        self.render(
            "trends.md.j2",
            "trends.md",
            quarter_svg=Markup(quarter_svg),
            quarter_facts=quarter_facts,
            speed_svg=Markup(speed_svg),
            points=points,
        )
        self.render("explorer.md.j2", "explorer.md")
        records = explorer_records(model)
        self.write("data/papers.json", explorer_json(model, records))
        self.write("data/bibtex.json", bibtex_json({pid: self.paper_bibs[pid] for pid in model.ordered_ids}))
        self.write(CATALOGUE_CSV, export_csv(records))
        self.write(CATALOGUE_JSON, export_json(records))
        self.render("frontiers.md.j2", "frontiers.md")
        all_refs = sorted({r for p in model.papers.values() for r in [*implementations(p), *p.closest_impl]})
        for result in results:
            self.write(f"data/results/{result.name}", result.text)
        self.render(
            "refimpls.md.j2",
            "reference-implementations.md",
            refs=[
                (
                    self.ctx.refimpl(r),
                    [pid for pid in model.ordered_ids if r in implementations(model.papers[pid])],
                    [pid for pid in model.ordered_ids if r in model.papers[pid].closest_impl],
                )
                for r in all_refs
            ],
            results=results,
        )
        self.render_results(results)
        report = self.reconciliation(model.papers) if self.reconciliation else "# Reconciliation report\n"
        # out of the search index: it repeats every disputed title and author list, and outranked the papers
        self.write("reconciliation.md", "---\ntitle: Reconciliation report\nsearch:\n  exclude: true\n---\n" + report)
        self.write(
            "atlas.bib",
            self.bib_text
            if self.bib_text is not None
            else render_bib(model.papers, tax, self.keys, rendered=self.paper_bibs),
        )
        self.remove_stale(previous)
        return self.written


@dataclass(frozen=True)
class Generated:
    files: int  # files written into the docs tree
    paper_bibs: Mapping[str, str]  # paper id -> its BibTeX entry (for the site's bib/<id>.bib)


def generate(papers: Mapping[str, Paper], taxonomy: Taxonomy, out: Path = GENERATED, **options) -> Generated:
    """Write the docs tree for these papers into ``out`` (files rewritten in place, stale ones deleted)."""
    generator = Generator(papers, taxonomy, out, **options)
    return Generated(generator.run(), generator.paper_bibs)


# ------------------------------------------------------------------------------------------------ mkdocs.yml
def render_mkdocs_config(taxonomy: Taxonomy) -> str:
    """mkdocs.yml from site/templates/mkdocs.yml.j2: the nav and the allowed tags come from here and the taxonomy."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False
    )  # YAML, from trusted values only (ids match [a-z][a-z0-9_-]*)
    return env.get_template("mkdocs.yml.j2").render(nav=NAV, not_in_nav=NOT_IN_NAV, tags=tags_allowed(taxonomy))
