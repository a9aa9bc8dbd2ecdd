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
from tools.catalogue.validate import coverage
from tools.outputs.bibtex import catalogue_keys, render_bib, render_one
from tools.outputs.site import plots
from tools.outputs.site.context import Context, Page, Repository
from tools.outputs.site.explorer import (
    bibtex_json,
    explorer_json,
    explorer_records,
    export_csv,
    export_json,
)
from tools.outputs.site.markup import (
    claim_value,
    front_matter,
    href,
    ident,
    number,
    page_title,
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


# ------------------------------------------------------------------------------------------------ pages
class Generator:
    """Writes the site's Markdown tree from the model, rewriting files in place and removing stale ones."""

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
        """Write a generated file and remember it (files not written in this run are removed at the end)."""
        self._folder(path)
        with open(self.out / path, "w", encoding="utf-8") as handle:
            handle.write(text)
        self._paths.add(path)
        self.written += 1

    def copy(self, source: Path, path: str) -> None:
        """Copy a static file into the generated tree."""
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
        """Papers per technique among ``pids``."""
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
        """Render a template to a page."""
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
        """Generate every page and data file, remove stale ones; returns the number of files written."""
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
            verified=coverage(dict(model.papers)),
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
    """What a generation wrote."""

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
