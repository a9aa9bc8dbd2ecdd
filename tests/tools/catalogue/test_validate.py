"""Accept and reject cases for every rule of the paper schema and the validator."""

from __future__ import annotations

import pytest

from tests.tools._entries import entry, write_entry, write_text
from tools.catalogue.taxonomy import load_taxonomy
from tools.catalogue.validate import validate_catalogue, validate_file

TAX = load_taxonomy()


def problems_of(tmp_path, data, name=None):
    path = write_entry(tmp_path / "papers", data, name)
    paper, _, problems = validate_file(path, TAX)
    return paper, problems


def only_problem(tmp_path, data, name=None):
    paper, problems = problems_of(tmp_path, data, name)
    assert paper is None or problems, "expected the entry to be rejected"
    assert len(problems) >= 1
    return problems[0]


def test_valid_entry_is_accepted(tmp_path):
    paper, problems = problems_of(tmp_path, entry())
    assert problems == []
    assert paper.id == "fastv-2024" and paper.first_version_year == 2024


def test_preprint_and_minimal_entry_are_accepted(tmp_path):
    data = entry(venue="arXiv", claims=..., code=..., summary=..., short_name=..., first_version=..., training=None)
    paper, problems = problems_of(tmp_path, data)
    assert problems == [] and paper.is_preprint


@pytest.mark.parametrize(
    "overrides, field, fragment",
    [
        ({"titel": "x"}, "titel", "unknown key"),
        ({"title": ...}, "title", "required field is missing"),
        ({"id": "FastV_2024"}, "id", "should match pattern"),
        ({"authors": [], "authors_status": "complete"}, "", "authors is empty"),
        ({"authors_status": "unknown"}, "", "authors_status is 'unknown' but authors are listed"),
        ({"authors": ["A B", "A B"]}, "", "listed twice"),
        (
            {"provenance": {"title": "https://x.org/a", "authors": "https://x.org/a", "colour": "https://x.org/a"}},
            "provenance",
            "unknown provenance field",
        ),
        ({"provenance": {"title": "/work/scratch/verified_B.jsonl:34"}}, "provenance.title", "a local path"),
        ({"provenance": {"authors": "../shared/seeds/002_5ffb40e2ad3d5c53.txt"}}, "provenance.authors", "a local path"),
        (
            {"provenance": {"placement": "curated from the title only (tools/data/curated_placements.yaml)"}},
            "provenance.placement",
            "not a public address",
        ),
        ({"provenance": {"venue": "http://arxiv.org/abs/2403.06764"}}, "provenance.venue", "write https://"),
        (
            {"provenance": {"title": "https://www.alphaxiv.org/abs/2403.06764"}},
            "provenance.title",
            "give https://arxiv.org/abs/2403.06764 and record the copy in read_via",
        ),
        (
            {"provenance": {"title": "https://web3.arxiv.org/abs/2403.06764?context=cs"}},
            "provenance.title",
            "a copy of the arXiv page",
        ),
        (
            {"provenance": {"title": "cokeshao/Awesome-Multimodal-Token-Compression:image-llm.md@c500934"}},
            "provenance.title",
            "a paper list",
        ),
        (
            {"read_via": {"https://arxiv.org/abs/2401.99999": "https://www.alphaxiv.org/abs/2401.99999"}},
            "read_via.https://arxiv.org/abs/2401.99999",
            "no fact cites",
        ),
        ({"listed_in": ["ZLKong/Awesome-Collection-Token-Reduction"]}, "listed_in.0", "not a list at a commit"),
        ({"listed_in": ["a/b@abcdef1", "a/b@abcdef1"]}, "", "listed_in lists a value twice"),
        (
            {
                "disagreements": [
                    {
                        "field": "title",
                        "values": {
                            "/work/scratch/verified_B.jsonl:30": "Old",
                            "https://arxiv.org/abs/2403.06764": "New",
                        },
                        "kept": "New",
                        "why": "the paper's page",
                    }
                ]
            },
            "disagreements.0.values./work/scratch/verified_B.jsonl:30",
            "a local path",
        ),
        ({"venue": "ECCV 2024", "venue_checked": True}, "", "name the proceedings page"),
        (
            {"venue": "arXiv", "venue_checked": True, "provenance": {"venue": "https://github.com/x/y"}},
            "",
            "only a published venue can be checked",
        ),
        ({"venue": "ECCV 2024", "venue_searched": "2026-12-05"}, "", "only a preprint carries the date of a search"),
        ({"closest_impl": ["reference_impls.prefill.fastv"]}, "", "closest_impl needs closest_impl_note"),
        (
            {"closest_impl": ["reference_impls.prefill.no_such_module"], "closest_impl_note": "a variant of FastV"},
            "closest_impl.0",
            "not in the reference implementation registry",
        ),
        (
            {
                "closest_impl": ["reference_impls.prefill.fastv"],
                "reference_impls": ["reference_impls.prefill.fastv"],
                "closest_impl_note": "a variant of FastV",
            },
            "",
            "not both",
        ),
        ({"arxiv": 2403.06764}, "arxiv", "quote it"),
        ({"arxiv": "2403.06764v2"}, "arxiv", "drop the version suffix"),
        ({"arxiv": "arXiv:2403.06764"}, "arxiv", "is not an arXiv id"),
        ({"doi": "doi.org/10.1/x"}, "doi", "should match pattern"),
        ({"venue": "Proceedings of CVPR 2025"}, "", "is not normalised"),
        ({"venue": "CVPR2025"}, "", "is not normalised"),
        ({"venue": "FOO 2025"}, "", "is not normalised"),
        ({"year": 1800}, "year", "greater than or equal"),
        ({"first_version": "2031-01-01"}, "", "later than the year"),
        ({"paper_url": "not a url"}, "paper_url", "should match pattern"),
        ({"code": [{"url": "https://github.com/x/y"}]}, "code.0.official", "required field is missing"),
        (
            {"placement": {"cells": ["prefill.density"], "techniques": ["token_pruneing"], "method": "survey"}},
            "placement",
            "unknown technique 'token_pruneing'",
        ),
        (
            {"placement": {"cells": ["decode.memory"], "techniques": ["token_pruning"], "method": "survey"}},
            "placement",
            "may occupy",
        ),
        (
            {
                "placement": {
                    "cells": ["prefill.density", "prefill.density"],
                    "techniques": ["token_pruning"],
                    "method": "survey",
                }
            },
            "placement",
            "lists a value twice",
        ),
        (
            {"placement": {"cells": ["prefill.speed"], "techniques": ["token_pruning"], "method": "survey"}},
            "placement",
            "unknown cell",
        ),
        (
            {"placement": {"cells": ["prefill.density"], "techniques": ["token_pruning"], "method": "guessed"}},
            "placement.method",
            "Input should be",
        ),
        ({"modality": ["hologram"]}, "", "unknown modality"),
        ({"modality": []}, "modality", "at least 1 item"),
        ({"training": "fine-tuned"}, "", "unknown training regime"),
        ({"frontiers": ["teleportation"]}, "", "unknown frontier"),
        (
            {
                "claims": [
                    {
                        "metric": "vibes",
                        "value": 1,
                        "unit": "x",
                        "where": "abstract",
                        "source": "https://arxiv.org/abs/2403.06764",
                    }
                ]
            },
            "claims.0",
            "unknown metric",
        ),
        (
            {
                "claims": [
                    {
                        "metric": "prefill_speedup",
                        "value": 2,
                        "unit": "%",
                        "where": "abstract",
                        "source": "https://arxiv.org/abs/2403.06764",
                    }
                ]
            },
            "claims.0",
            "takes units",
        ),
        (
            {
                "claims": [
                    {
                        "metric": "prefill_speedup",
                        "value": "2x",
                        "unit": "x",
                        "where": "abstract",
                        "source": "https://arxiv.org/abs/2403.06764",
                    }
                ]
            },
            "claims.0.value",
            "valid",
        ),
        (
            {
                "claims": [
                    {"metric": "prefill_speedup", "value": 2, "unit": "x", "source": "https://arxiv.org/abs/2403.06764"}
                ]
            },
            "claims.0.where",
            "missing",
        ),
        ({"summary": "One. Two. Three. Four."}, "summary", "has 4"),
        ({"reference_impls": ["reference_impls.prefill.no_such_module"]}, "reference_impls.0", "not in the reference"),
        ({"reference_impls": ["numpy.linalg"]}, "reference_impls.0", "should match pattern"),
        ({"distinct_from": ["fastv-2024"]}, "", "own id"),
        ({"arxiv": None, "doi": None, "paper_url": None}, "", "at least one of arxiv"),
        ({"last_verified": "yesterday"}, "last_verified", "valid date"),
        ({"title": True}, "title", "boolean"),
    ],
)
def test_each_rule_rejects_with_field_and_message(tmp_path, overrides, field, fragment):
    problem = only_problem(tmp_path, entry(**overrides))
    assert problem.field == field
    assert fragment in problem.message
    assert problem.file.endswith(".yaml")
    assert problem.line >= 1


def test_unknown_key_suggests_the_close_field(tmp_path):
    problem = only_problem(tmp_path, entry(sumary="Short text that is long enough."))
    assert "did you mean 'summary'" in problem.message


def test_file_name_must_match_id(tmp_path):
    _, problems = problems_of(tmp_path, entry(), name="fastv")
    assert [p.field for p in problems] == ["id"]
    assert "fastv-2024.yaml" in problems[0].message


def test_error_names_the_line_of_the_yaml_node(tmp_path):
    text = (
        "# yaml-language-server: $schema=../schema/paper.schema.json\n"
        'id: "x-2024"\n'
        'title: "A title"\n'
        'authors: ["A B"]\n'
        'authors_status: "complete"\n'
        "year: 2024\n"
        'venue: "arXiv"\n'
        "arxiv: 2401.10\n"
        "placement:\n"
        '  cells: ["prefill.density"]\n'
        '  techniques: ["kv_eviction"]\n'
        '  method: "curated"\n'
        'modality: ["image"]\n'
        "training: null\n"
        'provenance: {title: "s", authors: "s"}\n'
        "last_verified: 2026-11-21\n"
    )
    path = write_text(tmp_path, "x-2024.yaml", text)
    _, _, problems = validate_file(path, TAX)
    by_field = {p.field: p for p in problems}
    assert by_field["arxiv"].line == 8 and "2401.1" in by_field["arxiv"].message
    assert by_field["placement"].line == 9 and "kv_eviction" in by_field["placement"].message
    assert by_field["arxiv"].as_text().startswith(f"{path}:8: arxiv: ")


# ----------------------------------------------------------------------------------------------------- YAML traps
@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ('id: "a"\nid: "b"\n', 2, "duplicate key (first defined on line 1)"),
        ('id: "a"\ntitle:\n\t"x"\n', 3, "tabs"),
        ('id: "a"\ntitle: [unclosed\n', 3, "YAML syntax error"),
        ("- just\n- a list\n", 1, "must be a YAML mapping, this one is a list"),
        ("", 1, "this one is empty"),
        ("<<: {a: 1}\n", 1, "merge keys"),
        ("1: x\n", 1, "keys must be strings"),
    ],
)
def test_yaml_traps_are_reported_with_line(tmp_path, text, line, fragment):
    path = write_text(tmp_path, "trap.yaml", text)
    paper, _, problems = validate_file(path, TAX)
    assert paper is None
    assert problems[0].line == line, problems
    assert fragment in problems[0].message


def test_yes_no_booleans_get_a_hint(tmp_path):
    data = entry()
    path = write_entry(tmp_path, data)
    path.write_text(path.read_text().replace('venue: "ECCV 2024"', "venue: yes"), encoding="utf-8")
    _, _, problems = validate_file(path, TAX)
    assert problems[0].field == "venue" and "yes/no/on/off" in problems[0].message


def test_non_utf8_file_is_reported(tmp_path):
    path = write_text(tmp_path, "bad.yaml", 'id: "a"\ntitle: "caf\xe9"\n'.encode("latin-1"))
    _, _, problems = validate_file(path, TAX)
    assert problems[0].line == 2 and "not valid UTF-8" in problems[0].message


def test_oversized_file_is_reported(tmp_path):
    path = write_text(tmp_path, "big.yaml", "title: " + "x" * 300_000 + "\n")
    _, _, problems = validate_file(path, TAX)
    assert "the limit is" in problems[0].message


# ----------------------------------------------------------------------------------------------------- cross-file
def test_cross_file_duplicates_are_errors(tmp_path):
    folder = tmp_path / "papers"
    a = write_entry(folder, entry())
    b = write_entry(folder, entry(id="other-2024", title="Completely different words here", doi=None))
    c = write_entry(
        folder, entry(id="third-2024", title="Yet another unrelated study", arxiv="2401.00001", doi="10.1000/ABC")
    )
    d = write_entry(
        folder, entry(id="fourth-2024", title="A fourth unrelated topic", arxiv="2401.00002", doi="10.1000/abc")
    )
    cat = validate_catalogue([a, b, c, d], TAX)
    messages = [p.as_text() for p in cat.problems]
    assert any("arXiv id '2403.06764' is also used by" in m for m in messages)
    assert any("DOI '10.1000/abc' is also used by" in m for m in messages)
    assert len(cat.problems) == 2


def test_near_duplicate_titles_are_errors_unless_declared_distinct(tmp_path):
    folder = tmp_path / "papers"
    a = write_entry(folder, entry())
    reworded = entry(
        id="fastv-copy-2024",
        arxiv="2401.00003",
        title="Plug-and-Play Inference Acceleration for Large Vision-Language Models: An Image is "
        "Worth 1/2 Tokens After Layer 2",
    )
    b = write_entry(folder, reworded)
    cat = validate_catalogue([a, b], TAX)
    assert len(cat.problems) == 1 and "the same paper as" in cat.problems[0].message
    assert "fastv-2024.yaml? (the same title)" in cat.problems[0].message
    assert cat.problems[0].field == "title"
    b = write_entry(folder, dict(reworded, distinct_from=["fastv-2024"]))
    assert validate_catalogue([a, b], TAX).problems == []


@pytest.mark.parametrize("copy_id", ["aaa-first-2024", "zzz-last-2024"])
def test_a_copy_is_caught_whatever_its_file_name(tmp_path, copy_id):
    """The duplicate search looks at both titles' rare words: which file sorts first does not matter."""
    folder = tmp_path / "papers"
    files = [write_entry(folder, entry())]
    for i, title in enumerate(
        [
            "Sparse attention kernels for long video understanding",
            "Speculative decoding with tree drafts for multimodal models",
            "KV cache quantization to two bits for vision-language models",
        ]
    ):
        files.append(write_entry(folder, entry(id=f"other-{i}-2024", arxiv=f"2401.0001{i}", title=title)))
    files.append(
        write_entry(
            folder, entry(id=copy_id, arxiv="2401.00020", title="FastV: An image is worth 1/2 tokens after layer 2")
        )
    )
    cat = validate_catalogue(files, TAX)
    assert [(p.file.rsplit("/", 1)[1], p.field) for p in cat.problems] == [
        (f"{max(copy_id, 'fastv-2024')}.yaml", "title")
    ]


def test_same_id_in_two_files_and_dangling_distinct_from(tmp_path):
    folder = tmp_path / "papers"
    a = write_entry(folder, entry())
    b = write_entry(folder / "sub", entry(arxiv="2401.00009", distinct_from=["nobody-2020"]))
    cat = validate_catalogue([a, b], TAX)
    messages = " | ".join(p.message for p in cat.problems)
    assert "id 'fastv-2024' is also used by" in messages


def test_explicit_citation_keys_must_be_unique(tmp_path):
    folder = tmp_path / "papers"
    a = write_entry(folder, entry(bibtex_key="chen2024image"))
    b = write_entry(
        folder, entry(id="b-2024", arxiv="2401.00004", title="Unrelated words in a title", bibtex_key="chen2024image")
    )
    cat = validate_catalogue([a, b], TAX)
    assert [p.field for p in cat.problems] == ["bibtex_key"]


def test_distinct_from_must_exist(tmp_path):
    folder = tmp_path / "papers"
    a = write_entry(folder, entry(distinct_from=["missing-2020"]))
    cat = validate_catalogue([a], TAX)
    assert [p.field for p in cat.problems] == ["distinct_from.0"]


def test_complex_keys_are_reported_not_raised(tmp_path):
    path = write_text(tmp_path, "complex.yaml", '? [a, b]\n: 1\nid: "x"\n')
    paper, _, problems = validate_file(path, TAX)
    assert paper is None and "keys must be strings" in problems[0].message and problems[0].line == 1


def test_reference_impls_are_checked_against_the_registry(tmp_path):
    """Links name a registry entry (its module, ``module:object`` or a spec function) that follows this paper; the
    registry is plain data, so no torch is imported."""
    ok = entry(
        reference_impls=[
            "reference_impls.prefill.fastv",
            "reference_impls.prefill.fastv:FastV",
            "reference_impls.prefill.fastv:naive_fastv_keep",
        ]
    )
    assert problems_of(tmp_path, ok)[1] == []
    bad = entry(reference_impls=["reference_impls.prefill.fastv:NoSuchThing"])
    problem = only_problem(tmp_path, bad)
    assert problem.field == "reference_impls.0" and "not in the reference implementation registry" in problem.message
    other = entry(reference_impls=["reference_impls.decode.kv.snapkv"])  # SnapKV follows 2404.14469
    problem = only_problem(tmp_path, other)
    assert "registered as snapkv, which follows arXiv 2404.14469, not 2403.06764" in problem.message


def test_code_official_may_be_unknown_but_must_be_stated(tmp_path):
    assert problems_of(tmp_path, entry(code=[{"url": "https://github.com/x/y", "official": None}]))[1] == []
    problem = only_problem(tmp_path, entry(code=[{"url": "https://github.com/x/y"}]))
    assert problem.field == "code.0.official" and "missing" in problem.message


def test_coverage_counts_checked_venues_reviews_and_sourced_facts():
    from tools.catalogue.schema import Paper
    from tools.catalogue.validate import coverage

    checked = entry(
        venue_checked=True,
        provenance={
            "title": "https://arxiv.org/abs/2403.06764",
            "venue": "https://www.ecva.net/x",
            "summary": "https://x.org/a",
        },
        read_via={"https://x.org/a": "https://mirror.example/a"},
    )
    bare = entry(
        id="bare-2024",
        arxiv="2401.00001",
        authors=[],
        authors_status="unknown",
        summary=None,
        claims=[],
        provenance={},
        placement={
            "cells": ["prefill.density"],
            "techniques": ["token_pruning"],
            "method": "survey",
            "needs_review": True,
            "note": "placed from the title only: read the abstract",
        },
    )
    papers = {d["id"]: Paper.model_validate(d, context={"taxonomy": TAX}) for d in (checked, bare)}
    c = coverage(papers)
    assert (c["papers"], c["venue checked"], c["summary"], c["claims"], c["placement to review"]) == (2, 1, 1, 1, 1)
    assert c["no authors"] == 1
    # title, authors, venue, placement (+ summary when there is one): 5 + 4 facts, 3 of them with a page
    assert (c["facts with a source"], c["facts"], c["sources read on a copy"]) == (3, 9, 1)
