"""mkdocs hook (mkdocs.yml ``hooks:``): paper pages share one theme frame per build, and the theme's compiled
templates are cached between builds (jinja's bytecode cache; ``ATLAS_JINJA_CACHE=0`` turns it off).

A paper page is built thousands of times, and most of its cost was the theme: material's base.html renders the
header, nav, search, palette and scripts through dozens of includes and translation macros, and all of that comes
out the same for every paper page. Paper pages all live in ``papers/`` (so their relative URLs are the same) and
outside the nav (so no nav item is active and there are no previous/next links); they differ only in their title
and their content block. So ``site/overrides/paper.html`` calls :func:`atlas_paper_page`, which renders
``paper-frame.html`` once with placeholder slots for the title and the content, and fills the slots for each paper.

tests/tools/outputs/site/test_frame.py builds a catalogue with ``ATLAS_FULL_THEME=1`` (the theme renders every paper
page in full) and without it, and checks the HTML is byte for byte the same, hostile titles included.

This file is loaded by mkdocs by path, not imported as part of ``tools``: it uses mkdocs and jinja2 only.
"""

from __future__ import annotations

import os

import jinja2

FRAME_TEMPLATE = "paper-frame.html"  # the theme page of a paper (site/overrides/)
CONTENT_TEMPLATE = "listing.html"  # whose `content` block is a paper page's content
# Slots: HTML comments, which a page title (stored HTML-escaped by tools/outputs/site/generate.py) cannot contain.
TITLE_SLOT = "<!--atlas:title-slot-->"
CONTENT_SLOT = "<!--atlas:content-slot-->"


class FrameError(Exception):
    """The theme's page did not come out as a frame with the expected slots."""


class _SlotPage:
    """A page whose title is the title slot; everything else is the real page's."""

    def __init__(self, page):
        self._page = page
        self.meta = {**page.meta, "title": TITLE_SLOT}

    def __getattr__(self, name):
        return getattr(self._page, name)


class PaperFrames:
    """The frame of paper pages for one build, rendered on first use for each base URL."""

    def __init__(self, env: jinja2.Environment, full_theme: bool = False):
        self.env = env
        self.full_theme = full_theme
        self.frames: dict[str, tuple[str, str]] = {}

    def frame(self, context: jinja2.runtime.Context) -> tuple[str, str]:
        """(before, after) the content slot; the title slot is still in both."""
        key = context["base_url"]
        if key not in self.frames:
            page = context["page"]
            values = {**context.get_all(), "page": _SlotPage(page), "atlas_content_slot": CONTENT_SLOT}
            html = self.env.get_template(FRAME_TEMPLATE).render(values)
            before, slot, after = html.partition(CONTENT_SLOT)
            if not slot or CONTENT_SLOT in after or TITLE_SLOT not in before:
                raise FrameError(f"{FRAME_TEMPLATE} rendered without one content slot and a title slot")
            if page.meta["title"] in html.replace(TITLE_SLOT, ""):
                raise FrameError(f"{FRAME_TEMPLATE} prints the page title outside page.meta.title")
            self.frames[key] = (before, after)
        return self.frames[key]

    def render(self, context: jinja2.runtime.Context) -> str:
        """Render the shared frame with this page's context."""
        page = context["page"]
        if self.full_theme or not page.meta.get("title"):
            return self.env.get_template(FRAME_TEMPLATE).render(context.get_all())
        before, after = self.frame(context)
        content = self.env.get_template(CONTENT_TEMPLATE)
        body = "".join(content.blocks["content"](content.new_context(context.get_all(), shared=True)))
        title = page.meta["title"]
        return before.replace(TITLE_SLOT, title) + body + after.replace(TITLE_SLOT, title)


def on_env(env: jinja2.Environment, config, files) -> jinja2.Environment:
    # The theme's ~45 templates are compiled on every build (0.3 s, a tenth of the real catalogue's build); jinja's
    # bytecode cache (in the user's temporary folder, keyed by each template's source checksum) keeps them.
    """MkDocs hook: share one compiled theme frame between paper pages."""
    if env.bytecode_cache is None and os.environ.get("ATLAS_JINJA_CACHE", "1") == "1":
        env.bytecode_cache = jinja2.FileSystemBytecodeCache()
    frames = PaperFrames(env, full_theme=os.environ.get("ATLAS_FULL_THEME") == "1")

    @jinja2.pass_context
    def atlas_paper_page(context: jinja2.runtime.Context) -> str:
        return frames.render(context)

    env.globals["atlas_paper_page"] = atlas_paper_page
    return env
