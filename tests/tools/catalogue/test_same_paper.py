"""Duplicate detection (tools/catalogue/same_paper.py): the rules one by one, and its recall and false positives
measured on real data.

* ``fixtures/title_variants.tsv``: real title variants, the same paper under different titles: the spelling of
  paper lists (../shared/literature/papers_seed.jsonl, candidates.tsv), of author sources (papers_authors.jsonl), and
  the catalogue's own titles before verification, against ``canonical``, the title on the paper's arXiv page (from
  the verification records of December 2026; else the catalogue's title). ``id`` is the catalogue id, or
  ``arxiv:<id>`` for a candidate not catalogued then. ``kind``: ``case`` when only case, spacing or punctuation
  differ, ``wording`` otherwise, ``not_a_title`` for list entries reviewed by hand as descriptions (a sentence, a news
  line, a name followed by keywords), which the recall leaves out.
* ``fixtures/similar_distinct_pairs.tsv``: the 100 most similar pairs of distinct catalogued papers (fuzzy ratio of
  the normalised titles), a snapshot of the catalogue when it held 637 papers.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tools.catalogue.same_paper import Described, Vocabulary, duplicate_pairs, matches_for, same_paper
from tools.catalogue.titles import TitleParts
from tools.catalogue.validate import validate_catalogue

FIXTURES = Path(__file__).parent.parent / "fixtures"
RECALL_FLOOR = 0.85


def rows(name: str) -> list[dict]:
    with open(FIXTURES / name, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def judge(title_a: str, title_b: str, a: dict | None = None, b: dict | None = None) -> str | None:
    return same_paper(Described("a", title_a, **(a or {})), Described("b", title_b, **(b or {})))


# ------------------------------------------------------------------------------------------------ the rules
@pytest.mark.parametrize(
    "a, b",
    [
        ("FastV: An Image is Worth 1/2 Tokens After Layer 2", "An image is worth 1/2 tokens after layer 2"),
        (
            "Efficient LLM Inference with I/O-Aware KV Cache Partial Recomputation",
            "KVPR: Efficient Large Language Model Inference with I/O-Aware Partial KV-Cache Recomputation",
        ),
        (
            "Frame-Voyager: Learning to Query Frames for Video Large Language Models",
            "Frame-Voyager: Learning to query frames for video LLMs",
        ),
        (
            "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language Models",
            "H$_2$O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language Models",
        ),
        (
            "MMInference: Accelerating Pre-filling for Long-Context VLMs via Modality-Aware Permutation Sparse "
            "Attention",
            "MMInference: Modality-Aware Permutation Sparse Attention",
        ),
        ("NexusQuant: Training-Free KV Cache Compression via E8 Lattice Quantization", "NexusQuant"),
        (
            "Why and When Visual Token Pruning Fails? A Study on Relevant Visual Information Shift",
            "DSTP: Why and When Visual Token Pruning Fails?",
        ),
        (
            "AdaCM$^2$: On Understanding Extremely Long-Term Video with Adaptive Cross-Modality Memory Reduction",
            "AdaCM2: Adaptive Cross\u2011Modality Memory Reduction",
        ),
    ],
)
def test_variants_of_one_title_are_the_same_paper(a, b):
    assert judge(a, b) and judge(b, a)


@pytest.mark.parametrize(
    "a, b",
    [
        ("Qwen2.5-VL Technical Report", "Qwen3-VL Technical Report"),
        ("Qwen2-VL Technical Report", "Qwen2.5-VL Technical Report"),
        (
            "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language Models",
            "SmoothQuant+: Accurate and Efficient Post-Training Quantization for Large Language Models",
        ),
        (
            "EAGLE: Speculative Sampling Requires Rethinking Feature Uncertainty",
            "EAGLE-2: Speculative Sampling Requires Rethinking Feature Uncertainty",
        ),
        ("FastV: An Image is Worth 1/2 Tokens After Layer 2", "SparseV: An Image is Worth 1/2 Tokens After Layer 2"),
        ("QuIP: 2-Bit Quantization of Large Language Models", "QuIP#: 2-Bit Quantization of Large Language Models"),
    ],
)
def test_other_methods_and_versions_are_not(a, b):
    assert judge(a, b) is None


def test_authors_decide_between_reused_method_names():
    a = "SpecVLM: Fast Speculative Decoding in Vision-Language Models"
    b = "SpecVLM: Enhancing Speculative Decoding of Video LLMs via Verifier-Guided Token Pruning"
    assert judge(a, b, a={"authors": ("Haiduo Huang", "Dong Li")}, b={"authors": ("Yicheng Ji", "Huan Li")}) is None
    # the same authors and the same name: a renamed version of one paper
    renamed = "SpecVLM: Verifier-Guided Token Pruning for Video Speculative Decoding"
    people = ("Yicheng Ji", "Jun Zhang", "Huan Li")
    assert judge(b, renamed, a={"authors": people}, b={"authors": people})
    # initials match the full name; a shared family name alone does not make the same people
    close = ("Token pruning for video LLMs with attention", "Token pruning for video LLMs via attention")
    assert judge(*close, a={"authors": ("H. Kobayashi", "L. Brandt")}, b={"authors": ("Hana Kobayashi",)})
    assert judge(*close, a={"authors": ("Wei Liu", "Jian Li")}, b={"authors": ("Yexin Liu", "Dong Li")}) is None
    # author lists with no family name in common rule out even a close title
    assert (
        judge(
            "Token pruning for video LLMs with attention",
            "Token pruning for video LLMs via attention",
            a={"authors": ("Ada Lovelace",)},
            b={"authors": ("Alan Turing",)},
        )
        is None
    )


def test_identifiers_decide_whatever_the_titles():
    assert judge("One title", "Another title altogether", a={"arxiv": "2401.00001"}, b={"arxiv": "2401.00001"})
    assert judge("One title", "Another title", a={"doi": "10.1/ABC"}, b={"doi": "10.1/abc"}) == "the same DOI 10.1/ABC"


def test_titles_sharing_only_common_words_are_not_the_same_paper():
    catalogue = [
        Described(f"p{i}", f"Speculative decoding for multimodal large language models, part {w}")
        for i, w in enumerate("abcdefghij")
    ]
    new = Described("new", "On Speculative Decoding for Multimodal Large Language Models")
    known = Described("known", "Speculative Decoding Reimagined for Multimodal Large Language Models")
    assert matches_for(new, [*catalogue, known]) == []


def test_duplicate_pairs_does_not_depend_on_keys_or_order():
    titles = [
        "FastV: An Image is Worth 1/2 Tokens After Layer 2",
        "Sparse attention for long videos",
        "An image is worth 1/2 tokens after layer 2",
        "KV cache quantization to two bits",
    ]
    for keys in (["a", "b", "c", "d"], ["z", "y", "x", "w"], ["m", "a", "z", "b"]):
        found = duplicate_pairs(Described(k, t) for k, t in zip(keys, titles))
        assert [{m.a, m.b} for m in found] == [{keys[0], keys[2]}]


# ------------------------------------------------------------------------------------------------ measured on real data
def test_recall_on_real_title_variants(catalogue_papers):
    """Each variant, checked title-only (no id, no authors) against the catalogue, finds its paper."""
    variants = [r for r in rows("title_variants.tsv") if r["kind"] != "not_a_title"]
    canonical = {r["id"]: r["canonical"] for r in variants}
    pool = [
        Described(pid, canonical.get(pid, p.title), tuple(p.authors), p.arxiv, p.doi)
        for pid, p in catalogue_papers.items()
    ]
    # candidates verified on their own pages, not catalogued when the data was built: their official titles join
    # the catalogue (once catalogued under their own id, their arXiv id says so and the pseudo-id is left out)
    catalogued = {p.arxiv for p in catalogue_papers.values() if p.arxiv}
    pool += [
        Described(pid, title)
        for pid, title in canonical.items()
        if pid.startswith("arxiv:") and pid[len("arxiv:") :] not in catalogued
    ]
    keys = {d.key for d in pool}
    by_arxiv = {p.arxiv: pid for pid, p in catalogue_papers.items() if p.arxiv}
    present = []
    for r in variants:
        target = r["id"] if r["id"] in keys else by_arxiv.get(r["arxiv"])
        if target:
            present.append((r, target))
    assert len(present) >= 0.9 * len(variants)  # the labelled papers are still in the pool
    found = [(r, t) for r, t in present if any(m.b == t for m in matches_for(Described("\0new", r["variant"]), pool))]
    recall = len(found) / len(present)
    wording = [(r, t) for r, t in present if r["kind"] == "wording"]
    print(
        f"recall {len(found)}/{len(present)} = {recall:.1%}; variants that differ in wording: "
        f"{sum(x in found for x in wording)}/{len(wording)}"
    )
    assert recall >= RECALL_FLOOR


def test_no_false_positive_on_the_most_similar_distinct_pairs(catalogue_papers):
    pairs = rows("similar_distinct_pairs.tsv")
    assert len(pairs) == 100
    vocabulary = Vocabulary(TitleParts(p.title) for p in catalogue_papers.values())
    flagged = [
        (r["id_a"], r["id_b"])
        for r in pairs
        if same_paper(Described("a", r["title_a"]), Described("b", r["title_b"]), vocabulary)
    ]
    assert flagged == []  # title-only: authors and ids would only rule more out


@pytest.fixture(scope="module")
def catalogue_papers():
    return validate_catalogue().papers
