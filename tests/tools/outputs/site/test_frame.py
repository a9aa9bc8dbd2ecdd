"""Paper pages built from the shared theme frame (tools/outputs/site/mkdocs_hooks.py) are the pages the theme renders in
full: the fixture catalogue (hostile and 10 kB titles included) built both ways gives the same bytes."""

from __future__ import annotations

import jinja2
import pytest

from tests.tools.outputs._fixture_catalogue import REPO_URL
from tools.outputs.site import mkdocs_hooks
from tools.outputs.site.mkdocs_hooks import CONTENT_SLOT, TITLE_SLOT, FrameError


def test_paper_pages_from_the_frame_equal_the_full_theme_render(built_site, tmp_path, monkeypatch):
    from tools.outputs.site.build import mkdocs_build

    monkeypatch.setenv("ATLAS_FULL_THEME", "1")
    mkdocs_build(built_site.docs, tmp_path / "full", strict=True, repo_url=REPO_URL)
    framed = sorted((built_site.site / "papers").glob("*.html"))
    assert len(framed) == len(built_site.papers)
    for page in framed:
        full = (tmp_path / "full" / "papers" / page.name).read_bytes()
        assert page.read_bytes() == full, page.name
    assert b"atlas:title-slot" not in b"".join(p.read_bytes() for p in framed)


class _Page:
    def __init__(self, title: str, body: str):
        self.meta = {"title": title}
        self.content = body
        self.title = title


def _frames(frame_template: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.DictLoader(
            {
                mkdocs_hooks.FRAME_TEMPLATE: frame_template,
                mkdocs_hooks.CONTENT_TEMPLATE: "{% block content %}<article>{{ page.content }}</article>{% endblock %}",
                "page.html": "{{ atlas_paper_page() }}",
            }
        )
    )
    mkdocs_hooks.on_env(env, None, None)
    return env


GOOD_FRAME = (
    "<title>{{ page.meta.title }} - site</title><h1>{{ page.meta.title }}</h1><base href='{{ base_url }}'>"
    "{% if atlas_content_slot is defined %}{{ atlas_content_slot }}{% else %}FULL{% endif %}<footer/>"
)


def test_each_page_gets_its_own_title_and_content_in_the_frame_of_its_folder():
    env = _frames(GOOD_FRAME)
    page = env.get_template("page.html")
    one = page.render(page=_Page("One &amp; <b>", "first"), base_url="..")
    two = page.render(page=_Page("Two", "second"), base_url="..")
    top = page.render(page=_Page("Three", "third"), base_url=".")
    assert (
        one
        == "<title>One &amp; <b> - site</title><h1>One &amp; <b></h1><base href='..'><article>first</article><footer/>"
    )
    assert two == "<title>Two - site</title><h1>Two</h1><base href='..'><article>second</article><footer/>"
    assert "<base href='.'>" in top and "<article>third</article>" in top
    assert TITLE_SLOT not in one + two + top and CONTENT_SLOT not in one + two + top


@pytest.mark.parametrize(
    "frame",
    [
        "<title>{{ page.meta.title }}</title>no content slot",
        "<title>{{ page.meta.title }}</title>{{ atlas_content_slot }}{{ atlas_content_slot }}",
        "<title>fixed</title>{{ atlas_content_slot }}",
        "<title>{{ page.meta.title }}</title><h1>{{ page.title }}</h1>{{ atlas_content_slot }}",
    ],
)
def test_a_frame_that_would_not_fill_correctly_fails_the_build(frame):
    env = _frames(frame)
    with pytest.raises(FrameError):
        env.get_template("page.html").render(page=_Page("A title", "body"), base_url="..")
