"""Escaping: paper text (titles, summaries, names, notes) is data, never markup.

Everything a template prints goes through :func:`md_text` unless it is ``Markup`` built by our own code: HTML specials
and every character Markdown or its extensions could read as syntax become numeric character references, and
whitespace (newlines included) collapses to single spaces, so a hostile title can neither open an HTML tag, nor start
a Markdown list, link, emphasis or attribute list, nor break a table row. The browser shows the original characters.
Templates are compiled from ``site/templates`` only; paper text is passed as values and is never compiled.

Bidirectional-text controls (U+202A-U+202E, U+2066-U+2069, U+200E/U+200F, U+061C) are removed from every string a
page shows (:func:`plain`): one stray U+202E in a title would otherwise reverse the text after it on every page that
lists the paper.
"""

from __future__ import annotations

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

# HTML specials, Markdown syntax (emphasis, links, code, headings, lists, tables, attribute lists, escapes), and the
# characters that form entities or Jinja/mkdocs-macros delimiters.
_ESCAPED = "&<>\"'\\`*_{}[]()#+-.!|~:=$%^@"
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_NO_BIDI = {ord(ch): None for ch in BIDI_CONTROLS}
_TABLE = {**{ord(ch): f"&#{ord(ch)};" for ch in _ESCAPED}, **_NO_BIDI}


def plain(value) -> str:
    """Text as the site shows it: bidirectional controls removed (the one clean-up every displayed string gets)."""
    if value is None:
        return ""
    return str(value).translate(_NO_BIDI)


def md_text(value) -> str:
    """Plain text -> a string that Markdown and HTML both show as exactly that text (on one line)."""
    if value is None:
        return ""
    return " ".join(str(value).split()).translate(_TABLE)


def html_text(value) -> str:
    """Plain text -> HTML text or attribute value (keeps line breaks; for <pre> blocks)."""
    if value is None:
        return ""
    return (
        plain(value)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


def title_text(value) -> str:
    """A page title for the front matter: one line, HTML specials escaped (``&amp; &lt; &gt;``) and nothing else.
    The theme prints it as HTML and the search index stores it as is, so a numeric entity here would be searched
    as the literal ``&#58;``."""
    return " ".join(plain(value).split()).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _finalize(value):
    if isinstance(value, Markup):
        return value
    return Markup(md_text(value))


def _pre(value) -> Markup:
    """Multi-line text for a raw <pre> block (no blank lines: they would end the HTML block in Markdown)."""
    lines = [line for line in str(value).splitlines() if line.strip()]
    return Markup(html_text("\n".join(lines)).replace("{", "&#123;").replace("}", "&#125;"))


def template_environment(folder) -> Environment:
    """The Jinja environment of the site's templates (autoescaping on, compiled from ``folder`` only)."""
    env = Environment(
        loader=FileSystemLoader(str(folder)),
        autoescape=True,  # everything printed is escaped (see _finalize) unless it is Markup built in Python
        finalize=_finalize,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["pre"] = _pre
    env.filters["h"] = lambda value: Markup(html_text(value))  # inside raw HTML blocks, which Markdown leaves alone
    # a one-line raw HTML block's text: whitespace (newlines included) collapses, so no blank line ends the block
    env.filters["hline"] = lambda value: Markup(html_text(" ".join(str(value).split()) if value is not None else ""))
    # inline code in Markdown: an HTML <code> element (a Markdown code span would show entities literally)
    env.filters["code"] = lambda value: Markup("<code>" + html_text(value).replace("|", "&#124;") + "</code>")
    return env
