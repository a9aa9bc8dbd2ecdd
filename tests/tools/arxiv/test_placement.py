"""tools/arxiv/placement.py: keyword suggestions are valid placements, flagged for review, and sensible."""

from __future__ import annotations

import pytest

from tools.arxiv.placement import suggest_placement
from tools.catalogue.taxonomy import load_taxonomy


@pytest.fixture(scope="module")
def taxonomy():
    return load_taxonomy()


@pytest.mark.parametrize(
    "title, abstract, technique, cell",
    [
        (
            "Attention-Guided Visual Token Pruning for Large Vision-Language Models",
            "We prune visual tokens inside the LLM layers during prefill.",
            "token_pruning",
            "prefill.density",
        ),
        (
            "Merging Redundant Visual Tokens in the Vision Encoder",
            "Token merging in the vision encoder.",
            "token_merging",
            "encode.density",
        ),
        (
            "Heavy Hitter KV Cache Eviction for Long Generation",
            "KV cache eviction keeps heavy hitters during decoding.",
            "kv_eviction",
            "decode.memory",
        ),
        (
            "Speculative Decoding for Vision Language Models",
            "A draft model proposes tokens.",
            "speculative_decoding",
            "decode.memory",
        ),
        (
            "Low-Bit KV Cache Quantization",
            "We study KV cache quantization to 2 bits.",
            "kv_quantization",
            "decode.memory",
        ),
        (
            "Keyframe Selection for Long Video LLMs",
            "Frame selection for long video question answering.",
            "keyframe_selection",
            "encode.density",
        ),
    ],
)
def test_clear_papers_get_the_expected_technique_and_cell(taxonomy, title, abstract, technique, cell):
    s = suggest_placement(title, abstract, taxonomy)
    assert s.techniques[0] == technique
    assert cell in s.cells
    assert taxonomy.placement_problems(s.techniques, s.cells) == []
    placement = s.placement()
    assert placement["needs_review"] is True and placement["method"] == "curated"
    assert s.matched and s.score > 0


def test_modality_training_and_relevance(taxonomy):
    video = suggest_placement("Training-Free Token Pruning for Video LLMs", "Frames of long videos ...", taxonomy)
    assert video.modality == ["video"] and video.training == "training-free"
    text = suggest_placement("KV Cache Quantization for Long-Context Language Models", "Two-bit keys.", taxonomy)
    assert text.modality == ["text"] and text.training is None
    # The atlas is about vision-language models: the same match ranks higher when the text is about them.
    vlm = suggest_placement("KV Cache Quantization for Vision-Language Models", "Two-bit keys.", taxonomy)
    assert vlm.relevance == pytest.approx(text.relevance + 1.0)


def test_no_keyword_still_gives_a_valid_placement_with_a_note(taxonomy):
    s = suggest_placement(
        "Protein Backbone Generation with Equivariant Flow Matching", "We generate protein backbones.", taxonomy
    )
    assert s.score == 0 and s.relevance == 0 and s.matched == []
    assert len(s.techniques) == 1 and taxonomy.placement_problems(s.techniques, s.cells) == []
    assert "no taxonomy keyword matched" in s.note


def test_without_a_keyword_the_telling_words_decide(taxonomy):
    s = suggest_placement("Speculative Sampling with Draft Heads", "", taxonomy)
    assert s.matched == [] and s.techniques == ["speculative_decoding"]
    s = suggest_placement("Paged Memory for Serving", "", taxonomy)
    assert s.matched == [] and s.techniques == ["kv_cache_management"]


def test_every_technique_is_reachable_from_its_own_first_keyword(taxonomy):
    for technique in taxonomy.techniques:
        s = suggest_placement(technique.keywords[0].title(), "", taxonomy)
        assert technique.id in s.techniques, (technique.id, s.techniques)
        assert taxonomy.placement_problems(s.techniques, s.cells) == []
