"""Suggest where a new paper goes, from the ``keywords`` that taxonomy.yaml attaches to each technique.

A suggestion is a starting point for a person, never a decision: entries made from it carry
``placement.needs_review: true`` (method ``curated``, to be confirmed or corrected by whoever reviews the entry).

Scoring (title counts double, words are compared after a light stemming):

* a keyword whose words all occur as one phrase scores 1 (2 in the title);
* otherwise a keyword whose content words mostly occur (at least 3 of 4) scores their share, halved;
* a technique's score is its best keyword plus a quarter of each further keyword that matched.

The best technique is suggested, with the runner-up when it scores at least 80 % of the best; when no keyword
matches, the technique whose name and keywords share the most telling words with the text (a note says so). The cell
is the
technique's cell whose stage (encode / prefill / decode) the text mentions most; ties go to prefill, then decode.
``relevance`` (used by ``discover`` to rank candidates) is the best score plus 1 when the text is about
vision-language or multimodal models, the atlas's subject.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field

from tools.catalogue.citekeys import STOPWORDS
from tools.catalogue.taxonomy import Taxonomy

SECOND_TECHNIQUE_SHARE = 0.8
PARTIAL_MATCH_SHARE = 0.75

_STAGE_HINTS = {
    "encode": [
        "vision encoder",
        "visual encoder",
        "encoder",
        "encoding",
        "frame",
        "resolution",
        "crop",
        "vit",
        "patch",
    ],
    "prefill": [
        "prefill",
        "prefilling",
        "time to first token",
        "ttft",
        "llm layer",
        "language model layer",
        "inside the llm",
        "long context",
        "prompt",
    ],
    "decode": ["decod", "generation", "kv cache", "kv-cache", "per token", "generated token", "draft", "latency per"],
}
_STAGE_ORDER = ["prefill", "decode", "encode"]
_MULTIMODAL = re.compile(
    r"\b(vision[- ]language|multi-?modal|vlms?|lvlms?|mllms?|visual tokens?|video llms?|image tokens?|"
    r"large vision|vision tokens?|video-llms?)\b"
)
_MODALITY_HINTS = [
    ("video", re.compile(r"\b(video|videos|frames?|streaming video|long video)\b")),
    ("audio", re.compile(r"\b(audio|speech|spoken)\b")),
    ("multi-image", re.compile(r"\b(multi-image|multiple images|interleaved images)\b")),
    ("image", re.compile(r"\b(image|images|visual|vision|multi-?modal|vlms?|lvlms?|mllms?|high-resolution)\b")),
]
_TRAINING_FREE = re.compile(
    r"\b(training-free|train-free|without (any )?(re)?training|no (additional )?training|"
    r"plug-and-play|tuning-free)\b"
)


@dataclass
class Suggestion:
    """A suggested placement (techniques, cells, modality) with the keywords that matched and the relevance score."""

    techniques: list[str]
    cells: list[str]
    modality: list[str]
    training: str | None
    score: float  # best technique score (0 when no keyword matched)
    relevance: float
    matched: list[str] = field(default_factory=list)  # the keywords that matched, best first
    note: str = ""

    def placement(self) -> dict:
        """The entry's ``placement`` block: method curated, flagged for review."""
        return {
            "cells": self.cells,
            "techniques": self.techniques,
            "method": "curated",
            "needs_review": True,
            "note": self.note,
        }


def _stem(word: str) -> str:
    for suffix in ("ization", "ation", "ings", "ing", "ies", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def _words(text: str) -> list[str]:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    return [_stem(w) for w in re.findall(r"[a-z0-9]+", text)]


def _phrase_in(phrase: list[str], words: list[str]) -> bool:
    n = len(phrase)
    return n > 0 and any(words[i : i + n] == phrase for i in range(len(words) - n + 1))


def _keyword_score(keyword: str, title: list[str], abstract: list[str]) -> float:
    phrase = _words(keyword)
    if _phrase_in(phrase, title):
        return 2.0
    if _phrase_in(phrase, abstract):
        return 1.0
    content = [w for w in phrase if w not in STOPWORDS]
    if not content:
        return 0.0
    title_set, abstract_set = set(title), set(abstract)
    present = [w for w in content if w in title_set or w in abstract_set]
    share = len(present) / len(content)
    if share < PARTIAL_MATCH_SHARE or len(present) < 2:
        return 0.0
    in_title = sum(w in title_set for w in content) / len(content)
    return round(0.5 * share * (1 + in_title), 3)


def _best_cell(cells: list[str], text: str) -> str:
    counts = {stage: sum(text.count(hint) for hint in hints) for stage, hints in _STAGE_HINTS.items()}

    def rank(cell: str) -> tuple:
        stage = cell.split(".", 1)[0]
        order = _STAGE_ORDER.index(stage) if stage in _STAGE_ORDER else len(_STAGE_ORDER)
        return (-counts.get(stage, 0), order, cells.index(cell))

    return min(cells, key=rank)


def suggest_placement(title: str, abstract: str, taxonomy: Taxonomy) -> Suggestion:
    """The suggested placement, modality and training regime of a paper, from its title and abstract."""
    title_words, abstract_words = _words(title), _words(abstract)
    lowered = f"{title} {abstract}".lower()
    scored: list[tuple[float, str, list[str]]] = []
    for technique in taxonomy.techniques:
        hits = sorted(
            ((s, kw) for kw in technique.keywords if (s := _keyword_score(kw, title_words, abstract_words))),
            reverse=True,
        )
        if hits:
            score = hits[0][0] + 0.25 * sum(s for s, _ in hits[1:])
            scored.append((round(score, 3), technique.id, [kw for _, kw in hits]))
    scored.sort(key=lambda item: (-item[0], item[1]))
    notes = []
    if scored:
        best_score = scored[0][0]
        chosen = [scored[0]]
        if len(scored) > 1 and scored[1][0] >= SECOND_TECHNIQUE_SHARE * best_score:
            chosen.append(scored[1])
    else:
        best_score = 0.0
        chosen = [(0.0, _fallback_technique(title_words + abstract_words, taxonomy), [])]
        notes.append("no taxonomy keyword matched; placed by the words it shares with the technique names and keywords")
    techniques, cells, matched = [], [], []
    for _, tech_id, kws in chosen:
        cell = _best_cell(taxonomy.technique_by_id[tech_id].cells, lowered)
        candidate_cells = cells + ([cell] if cell not in cells else [])
        if taxonomy.placement_problems(techniques + [tech_id], candidate_cells):
            continue
        techniques.append(tech_id)
        cells = candidate_cells
        matched.extend(kw for kw in kws if kw not in matched)
    modality = [mod for mod, pattern in _MODALITY_HINTS if pattern.search(lowered)]
    if "multi-image" in modality or "video" in modality:
        modality = [m for m in modality if m != "image"] or modality
    modality = modality or ["text"]
    training = "training-free" if _TRAINING_FREE.search(lowered) else None
    relevance = round(best_score + (1.0 if _MULTIMODAL.search(lowered) else 0.0), 3)
    note = (
        "suggested by tools/arxiv/placement.py from taxonomy keywords"
        + (f" ({', '.join(repr(k) for k in matched[:3])})" if matched else "")
        + "; needs review"
    )
    if notes:
        note += "; " + "; ".join(notes)
    return Suggestion(
        techniques=techniques,
        cells=cells,
        modality=modality,
        training=training,
        score=best_score,
        relevance=relevance,
        matched=matched,
        note=note,
    )


def _fallback_technique(words: list[str], taxonomy: Taxonomy) -> str:
    """The technique whose name and keywords share the most telling words with the text.

    Each shared word counts log(1 + techniques / techniques using the word): "kv" or "merging" say more than "token".
    """
    vocab = {
        t.id: {w for w in _words(" ".join([t.name, *t.keywords])) if w not in STOPWORDS} for t in taxonomy.techniques
    }
    used_by: dict[str, int] = {}
    for words_of_technique in vocab.values():
        for w in words_of_technique:
            used_by[w] = used_by.get(w, 0) + 1
    present = set(words) - STOPWORDS

    def rank(technique) -> tuple:
        shared = vocab[technique.id] & present
        score = sum(math.log(1 + len(vocab) / used_by[w]) for w in shared)
        return (-score, taxonomy.techniques.index(technique))

    return min(taxonomy.techniques, key=rank).id
