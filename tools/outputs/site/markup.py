"""Markup helpers of the site generator: relative links, safe hrefs and identifiers, YAML front matter, and how
numbers, claims and settings are written on the pages."""

from __future__ import annotations

import json
import posixpath
import re

from markupsafe import Markup

from tools.catalogue.schema import Paper
from tools.catalogue.taxonomy import Taxonomy
from tools.outputs.text import (
    md_text,
    title_text,
)


# ------------------------------------------------------------------------------------------------ small helpers
def rel(from_page: str, to_page: str) -> str:
    """A relative link between two docs pages (Markdown source paths)."""
    here = from_page.rpartition("/")[0]
    there = to_page.rpartition("/")[0]
    if here == there:
        return to_page.rpartition("/")[2]
    if "/" not in here and (not here or "/" not in to_page or not to_page.startswith(here + "/")):
        return ("../" if here else "") + to_page  # the site is at most one folder deep
    return posixpath.relpath(to_page, here or ".")


_URL_UNSAFE = re.compile(r"[^A-Za-z0-9\-._~:/?#@!$&*+,;=%\']")


def href(url: str) -> Markup:
    """An external http(s) URL for a Markdown link target or an HTML attribute (percent-encodes what could end
    either: quotes, brackets, parentheses, spaces, non-ASCII)."""
    if not url.lower().startswith(("http://", "https://")):
        raise ValueError(f"refusing a non-http(s) link: {url!r}")
    safe = _URL_UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8")), url)
    return Markup(safe.replace("&", "&amp;"))


def ident(value: str) -> Markup:
    """A paper id (schema pattern: lowercase letters, digits, single hyphens) for HTML ids and file names."""
    if not re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", value):
        raise ValueError(f"not a paper id: {value!r}")
    return Markup(value)


def md_link(text: str, target: str) -> Markup:
    """A Markdown link with escaped text."""
    return Markup(f"[{md_text(text)}]({target})")


def tags_allowed(taxonomy: Taxonomy) -> list[str]:
    """Every taxonomy id a page may carry as a tag (stages, axes, techniques, frontiers, modalities)."""
    ids = [s.id for s in taxonomy.stages] + [a.id for a in taxonomy.axes] + [t.id for t in taxonomy.techniques]
    ids += [f.id for f in taxonomy.frontiers] + [m.id for m in taxonomy.modalities]
    return sorted(set(ids))


_YAML_UNSAFE = re.compile("[\x80-\x9f\u2028\u2029\ufffe\uffff\ud800-\udfff]")


def yaml_string(value: str) -> str:
    """A YAML double-quoted scalar on one line. JSON's escaping (quotes, backslashes, control characters) with
    non-ASCII kept literal: JSON writes characters beyond the BMP (emoji, math letters) as surrogate-pair escapes,
    which YAML rejects. What YAML may not hold literally (C1 controls, line and paragraph separators, U+FFFE/FFFF)
    is escaped; a lone surrogate (not valid text) becomes U+FFFD."""

    def escape(match: re.Match) -> str:
        code = ord(match.group())
        return "\ufffd" if 0xD800 <= code <= 0xDFFF else f"\\u{code:04x}"

    return _YAML_UNSAFE.sub(escape, json.dumps(value, ensure_ascii=False))


def front_matter(title: str, tags: list[str] | None = None, extra: dict | None = None) -> Markup:
    """YAML front matter. The title is stored HTML-escaped (:func:`title_text`): mkdocs and the theme print page
    titles as HTML, and the search index keeps them as they are."""
    lines = ["---", "title: " + yaml_string(title_text(title))]
    if tags:
        lines.append("tags: " + json.dumps(tags))
    for key, value in (extra or {}).items():
        lines.append(f"{key}: {yaml_string(value) if isinstance(value, str) else json.dumps(value)}")
    lines.append("---")
    return Markup("\n".join(lines) + "\n")


def page_title(p: Paper) -> str:
    """A paper page's title (browser tab, header, search): the short name first when the title lacks it, so that
    searching "FastV" finds the FastV page by its title."""
    name = p.short_name
    return f"{name}: {p.title}" if name and name.lower() not in p.title.lower() else p.title


def number(value) -> str:
    """45.0 -> '45', 2.50 -> '2.5'."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def claim_value(claim) -> str:
    """'up to 2.5x', '45%', '576 tokens'."""
    unit = claim.unit if claim.unit in ("x", "%") else " " + claim.unit
    return f"{claim.qualifier + ' ' if claim.qualifier else ''}{number(claim.value)}{unit}"


def setting(s) -> str:
    """A claim's setting as one line."""
    parts = [f"{name}: {getattr(s, name)}" for name in ("model", "budget", "benchmark", "baseline") if getattr(s, name)]
    if s.baseline_score is not None:
        parts.append(f"baseline score: {number(s.baseline_score)}")
    return "; ".join(parts)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
