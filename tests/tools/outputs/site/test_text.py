"""Escaping paper text: whatever the text, Markdown + HTML show exactly it, as text."""

from __future__ import annotations

import html
import re

import markdown
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.outputs.site.generate import TEMPLATES
from tools.outputs.text import md_text, template_environment

EXTENSIONS = ["toc", "tables", "admonition"]  # as in mkdocs.yml
HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "</script><script>alert(1)</script>",
    "{{ 7*7 }}",
    "{% raw %}",
    "[x](javascript:alert(1))",
    "*em* _u_ `code` \\*",
    "1. list",
    "# heading",
    "a | b",
    "&amp; &#60;",
    "{: onclick=alert(1)}",
    "<!-- comment -->",
    "- item",
    "![img](x.png)",
    "<http://example.org>",
]


def _visible_text(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markup)).strip()


def _render(text: str) -> str:
    return markdown.markdown(md_text(text), extensions=EXTENSIONS)


def test_hostile_strings_render_as_their_own_text():
    for text in HOSTILE:
        out = _render(text)
        assert re.fullmatch(r"<p>.*</p>", out), out  # one paragraph, no other element
        assert _visible_text(out) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=80))
def test_any_text_round_trips_through_markdown(text):
    text = " ".join(text.split())
    if not text:
        return
    out = _render(text)
    assert re.fullmatch(r"<p>.*</p>", out, flags=re.S), out
    assert "<" not in out[3:-4]  # no tag inside the paragraph
    assert _visible_text(out) == text


def test_newlines_collapse_so_text_cannot_start_a_block():
    out = _render("line one\n\n# not a heading\n- not a list")
    assert out.startswith("<p>") and out.count("<p>") == 1
    assert _visible_text(out) == "line one # not a heading - not a list"


def test_templates_escape_every_value_and_never_compile_data(tmp_path):
    (tmp_path / "t.md.j2").write_text("# {{ title }}\n{{ note }}\n", encoding="utf-8")
    env = template_environment(tmp_path)
    out = env.get_template("t.md.j2").render(title="{{ 7*7 }} <b>", note="{% raw %}")
    assert "49" not in out and "<b>" not in out
    assert _visible_text(markdown.markdown(out)).startswith("{{ 7*7 }} <b>")
    assert TEMPLATES.is_dir()


def test_hline_keeps_a_raw_html_block_on_one_line(tmp_path):
    """Paper pages print title and summary as one-line raw HTML blocks: a blank line in the text must not end the
    block (the rest would then be read as Markdown), and markup stays text."""
    (tmp_path / "t.md.j2").write_text("<p>{{ text | hline }}</p>\n", encoding="utf-8")
    env = template_environment(tmp_path)
    for text in HOSTILE + ["one\n\n# two\n\n- three <b>x</b>", "a\r\n\r\n<script>alert(1)</script>"]:
        out = markdown.markdown(env.get_template("t.md.j2").render(text=text), extensions=EXTENSIONS)
        assert re.fullmatch(r"<p>[^<]*</p>", out), out
        assert _visible_text(out) == " ".join(text.split())
