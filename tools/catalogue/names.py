"""Names the catalogue derives from what a page or a list spells: the taxonomy's venue form, a method's short name
from its title, and the readable ids a new entry may take."""

from __future__ import annotations

import re

from tools.catalogue.citekeys import STOPWORDS, ascii_fold
from tools.catalogue.schema import PREPRINT
from tools.catalogue.taxonomy import Taxonomy

__all__ = ["normalise_venue", "venue_from_citation", "slugify", "short_name_of", "id_candidates"]

_PRESENTATION = {"oral", "highlight", "spotlight", "poster"}
_VENUE_ALIASES = {
    "trans. mach. learn. res.": "TMLR",
    "transactions on machine learning research": "TMLR",
    "acm sigcomm": "SIGCOMM",
    "nips": "NeurIPS",
    "acm multimedia": "ACM MM",
    "acmmm": "ACM MM",
    "mm": "ACM MM",
    "vldb endowment": "VLDB",
    "pvldb": "VLDB",
}


def normalise_venue(raw: str | None, taxonomy: Taxonomy) -> str | None:
    """A list's venue string -> the taxonomy's form ("CVPR 2025", "EMNLP 2023 Findings", "ICML 2023 Workshop",
    "arXiv"); None for an empty value. Raises ValueError for a venue the taxonomy does not know."""
    if raw is None or not raw.strip():
        return None
    text = " ".join(raw.replace("\u2019", "'").split())
    if re.fullmatch(r"(?i)arxiv(\s*'?\d{2,4})?(\s+preprint)?", text):
        return PREPRINT
    findings = bool(re.search(r"(?i)\bfindings\b", text))
    text = re.sub(r"(?i)\bfindings( of( the)?)?\b", " ", text)
    # Year: "2024", or an apostrophe form "EMNLP'23".
    year = None
    m = re.search(r"\b((?:19|20)\d\d)\b", text)
    if m:
        year = int(m.group(1))
        text = text[: m.start()] + " " + text[m.end() :]
    else:
        m = re.search(r"'(\d\d)\b", text)
        if m:
            year = 2000 + int(m.group(1))
            text = text[: m.start()] + " " + text[m.end() :]
    if year is None:
        raise ValueError(f"venue {raw!r} has no year")
    words = [w for w in text.split() if w.lower() not in _PRESENTATION]
    name_text = " ".join(words).strip(" ,.-")
    venue_ids = sorted(taxonomy.venue_by_id, key=len, reverse=True)
    lowered = name_text.lower()
    name, rest = None, ""
    for alias, target in _VENUE_ALIASES.items():
        alias = alias.rstrip(".")
        if lowered == alias or lowered.startswith(alias + " "):
            name, rest = target, name_text[len(alias) :]
            break
    if name is None:
        for vid in venue_ids:
            if lowered == vid.lower() or lowered.startswith(vid.lower() + " "):
                name, rest = vid, name_text[len(vid) :]
                break
    if name is None:
        raise ValueError(
            f"venue {raw!r} is not a known venue: add it to `venues` in taxonomy.yaml (then run `python -m tools "
            "schema`)"
        )
    rest_words = [w for w in rest.split() if w]
    workshop = any(w.lower().startswith("workshop") for w in rest_words) or bool(rest_words)
    track = " Findings" if findings else (" Workshop" if workshop else "")
    return f"{name} {year}{track}"


def venue_from_citation(raw: str | None, taxonomy: Taxonomy) -> str | None:
    """A venue as a BibTeX entry or a README spells it ("Proceedings of ... (ICCV) 2023") -> normalised, or None
    when it does not name both a known venue and a year (then it is not used: no guessing)."""
    if not raw:
        return None
    try:
        return normalise_venue(raw, taxonomy)
    except ValueError:
        pass
    year = re.search(r"\b((?:19|20)\d\d)\b", raw)
    if not year:
        return None
    for vid in sorted(taxonomy.venue_by_id, key=len, reverse=True):
        if re.search(rf"(?<![A-Za-z]){re.escape(vid)}(?![A-Za-z])", raw):
            return f"{vid} {year.group(1)}"
    return None


def slugify(text: str) -> str:
    """Lower-case ASCII words joined by single hyphens (``"Vision-Language Models!"`` -> ``vision-language-models``)."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", ascii_fold(text).lower())).strip("-")


def short_name_of(title: str) -> str | None:
    """The method name before ':' when it is short (at most two words, 24 characters): 'FastV: ...' -> FastV."""
    if ":" not in title:
        return None
    head = title.split(":", 1)[0].strip()
    if not head or len(head) > 24 or len(head.split()) > 2 or not re.search(r"[A-Za-z]", head):
        return None
    return head


def _significant_words(text: str) -> list[str]:
    words = [slugify(w) for w in re.split(r"[\s/]+", text)]
    return [w for w in words if w and w not in STOPWORDS]


def id_candidates(title: str, short_name: str | None, year: int) -> list[str]:
    """Ids to try, most readable first: short name (or three significant title words), then longer variants."""
    if short_name:
        base = slugify(short_name)[:40].strip("-")
        rest = _significant_words(title.split(":", 1)[1] if ":" in title else title)
    else:
        words = _significant_words(title)
        base, rest = "-".join(words[:3]), words[3:]
    out = [f"{base}-{year}"]
    for n in (1, 2, 3):
        if len(rest) >= n:
            out.append(f"{base}-{'-'.join(rest[:n])}-{year}")
    return [re.sub(r"-+", "-", c)[:80].strip("-") for c in out]
