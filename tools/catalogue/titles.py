"""The one title normaliser of the code base, and the parts of a title that duplicate detection compares.

:func:`title_words` folds a title to comparable words: ASCII, lower case, LaTeX markup dropped (``H$_2$O`` ->
``h2o``), version numbers kept whole (``Qwen2.5-VL`` -> ``qwen2.5 vl``), the field's abbreviations spelled out
(``LLMs`` -> ``large language models``, ``VLM`` -> ``vision language model``, ``QA`` -> ``question answering``),
"multi-modal" written as one word, and plural ``-s`` removed. :func:`normalise_title` joins the sorted words: two
titles that differ only in case, punctuation, word order, plurals or a spelled-out abbreviation normalise equally.

:class:`TitleParts` splits a title into its method name (the short head before a colon, ``FastV: ...``) and its
body, and keeps the word sets and joined strings that :mod:`tools.catalogue.same_paper` scores.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property

from tools.catalogue.citekeys import STOPWORDS, ascii_fold

# Abbreviation -> its spelled-out words (the singular; a plural abbreviation, "LLMs", expands the same way).
ABBREVIATIONS = {
    "llm": "large language model",
    "mllm": "multimodal large language model",
    "lvlm": "large vision language model",
    "vlm": "vision language model",
    "lmm": "large multimodal model",
    "videollm": "video large language model",
    "vit": "vision transformer",
    "qa": "question answering",
    "vqa": "visual question answering",
    "kv": "key value",
    "moe": "mixture of expert",
    "rag": "retrieval augmented generation",
}
# Word pairs that other titles spell differently ("multi-modal" = "multimodal", "visual language" = "vision language").
SPELLINGS = {
    ("multi", "modal"): ("multimodal",),
    ("pre", "filling"): ("prefilling",),
    ("pre", "fill"): ("prefill",),
    ("key", "frame"): ("keyframe",),
    ("visual", "language"): ("vision", "language"),
}
_LATEX = re.compile(r"[$_^{}\\]")
_WORD = re.compile(r"[a-z0-9]+(?:\.[0-9]+)*\+?")  # "qwen2.5", "1.5", "smoothquant+"
_NAME_MAX_WORDS = 3
_NAME_MAX_CHARS = 32


def _fold(text: str) -> str:
    """ASCII, lower case, LaTeX markup removed, every other punctuation mark or symbol a space (a non-breaking hyphen
    separates words like "-" does) except the '.', '+' and '#' that belong to names and versions."""
    text = _LATEX.sub("", text)
    text = "".join(" " if unicodedata.category(c)[0] in "PSZ" and c not in ".+#'" else c for c in text)
    return ascii_fold(text).lower()


def _singular(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")) and not word[-2].isdigit():
        return word[:-1]
    return word


def title_words(title: str) -> list[str]:
    """A title as comparable words, in order (see the module docstring)."""
    words: list[str] = []
    for word in _WORD.findall(_fold(title)):
        word = _singular(word.rstrip("+"))
        words.extend(ABBREVIATIONS[word].split() if word in ABBREVIATIONS else [word])
    out: list[str] = []
    for word in words:
        if out and (out[-1], word) in SPELLINGS:
            out.extend(SPELLINGS[(out.pop(), word)])
        else:
            out.append(word)
    return out


def normalise_title(title: str) -> str:
    """The sorted comparable words of a title, joined by spaces: equal for spellings of the same title."""
    return " ".join(sorted(title_words(title)))


def method_name(title: str) -> str | None:
    """The short head before the first colon ("FastV", "LLaVA-PruMerge", "LLM.int8()"), or None.

    A head of more than three words or 32 characters is a phrase, not a name ("Prolonged Reasoning Is Not All You
    Need: ..."), and so is a head of two words without a capital letter or a digit after its first character
    ("Prompt caching: ...") and a head of three words none of which has a capital or a digit inside it
    ("Similarity-Aware Token Pruning: ..."; "Video-XL Pro" and "LLaVA Next Interleave" are names)."""
    title = unicodedata.normalize("NFKC", title)  # a full-width colon is a colon
    if ":" not in title:
        return None
    head = title.split(":", 1)[0].strip()
    words = head.split()
    if not head or len(head) > _NAME_MAX_CHARS or len(words) > _NAME_MAX_WORDS or not re.search("[A-Za-z]", head):
        return None
    if len(words) == 2 and not re.search(r"[A-Z0-9]", head[1:]):
        return None
    if len(words) == 3 and not any(re.search(r"(?<=[A-Za-z0-9])[A-Z0-9]", w) for w in words):
        return None
    return head


def compact_name(name: str) -> str:
    """A method name as one comparable string: letters, digits, '+' and '#' ("SmoothQuant+" is not "SmoothQuant",
    "QuIP#" is not "QuIP")."""
    return re.sub(r"[^a-z0-9+#]", "", _fold(name))


@dataclass(frozen=True)
class TitleParts:
    """What duplicate detection compares about one title (computed once, then cached)."""

    title: str

    @cached_property
    def name(self) -> str | None:
        """The method name as a compact string, or None."""
        head = method_name(self.title)
        return compact_name(head) if head else None

    @cached_property
    def words(self) -> tuple[str, ...]:
        """The title's normalised words, in order."""
        return tuple(title_words(self.title))

    @cached_property
    def body_words(self) -> tuple[str, ...]:
        """The words after the method name (the whole title when it has none)."""
        if method_name(self.title) is None:
            return self.words
        return tuple(title_words(unicodedata.normalize("NFKC", self.title).split(":", 1)[1]))

    @cached_property
    def body(self) -> str:
        """The words after a ``Name:`` prefix, joined."""
        return " ".join(self.body_words)

    @cached_property
    def sorted_body(self) -> str:
        """The body's words, sorted (word order does not count)."""
        return " ".join(sorted(self.body_words))

    @cached_property
    def compact_body(self) -> str:
        """The body as one string without spaces: robust to "Recipefor", "Pre-filling", "KV-Cache"."""
        return "".join(self.body_words)

    @cached_property
    def content_words(self) -> frozenset[str]:
        """The body's words that carry meaning (no stop words)."""
        return frozenset(w for w in self.body_words if w not in STOPWORDS)

    @cached_property
    def numbers(self) -> frozenset[str]:
        """Words with a digit, name included ("qwen2.5", "2", "w4a8"): a version or a setting of the method."""
        words = set(self.words)
        if self.name:
            words.add(self.name)
        return frozenset(w for w in words if any(c.isdigit() for c in w))

    @cached_property
    def is_only_a_name(self) -> bool:
        """The title is a bare method name ("NexusQuant"): one or two words and no colon."""
        return ":" not in self.title and len(self.title.split()) <= 2 and len(self.compact) >= 4

    @cached_property
    def compact(self) -> str:
        """All words joined without spaces (spacing and hyphenation do not count)."""
        return compact_name(self.title)
