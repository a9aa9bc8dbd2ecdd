"""`python -m tools import`: rows -> entries, idempotence, curated fields kept, disagreements, merges, bad input."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tools.importer import apply_import, id_candidates, normalise_venue, plan_import, short_name_of
from tools.paths import ROOT
from tools.problems import ProblemError
from tools.taxonomy import load_taxonomy
from tools.validate import paper_files, validate_catalogue

FIXTURES = Path(__file__).parent / "fixtures"
ROWS = FIXTURES / "import_rows.jsonl"
AUTHORS = FIXTURES / "import_authors.jsonl"
VERIFIED = FIXTURES / "import_verified.jsonl"
PLACEMENTS = FIXTURES / "import_placements.yaml"
BAD_ROWS = FIXTURES / "import_bad_rows.jsonl"
TODAY = dt.date(2026, 11, 21)


def run_import(papers: Path, rows=(ROWS,), authors=(AUTHORS,), verified=(VERIFIED,), placements=PLACEMENTS):
    report = plan_import(list(rows), authors=list(authors), verified=list(verified), curated_path=placements,
                         papers_dir=papers, today=TODAY, rejected_path=papers.parent / "rejected.yaml")
    apply_import(report)
    return report


def load(papers: Path, pid: str) -> dict:
    return yaml.safe_load((papers / f"{pid}.yaml").read_text(encoding="utf-8"))


def snapshot(papers: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(papers.glob("*.yaml"))}


@pytest.fixture()
def imported(tmp_path):
    papers = tmp_path / "papers"
    report = run_import(papers)
    return papers, report


# ------------------------------------------------------------------------------------------------ entries
def test_import_writes_valid_entries_one_per_paper(imported):
    papers, report = imported
    cat = validate_catalogue(paper_files(papers))
    assert cat.problems == []
    # 6 rows, two of them the same paper (same DOI), plus one paper only the verified file has
    assert sorted(cat.papers) == ["duplicated-method-2024", "fastv-2024", "gated-deltanet-2025", "h2o-2023",
                                  "kvquant-example-2024", "query-based-projector-paper-2023"]
    assert report.count("create") == 6


def test_second_run_changes_no_byte(imported):
    papers, _ = imported
    before = snapshot(papers)
    report = run_import(papers)
    assert report.count("unchanged") == 6 and report.count("update") == report.count("create") == 0
    assert snapshot(papers) == before


def test_verified_facts_win_and_differences_become_disagreements(imported):
    papers, report = imported
    fastv = load(papers, "fastv-2024")
    assert fastv["title"].startswith("An Image is Worth 1/2 Tokens After Layer 2")
    assert fastv["provenance"]["title"] == "https://arxiv.org/abs/2403.06764"
    assert fastv["authors"] == ["Liang Chen", "Haozhe Zhao", "Tianyu Liu"] and fastv["authors_status"] == "complete"
    assert fastv["venue"] == "ECCV 2024" and fastv["year"] == 2024
    assert fastv["first_version"] == dt.date(2024, 3, 11)
    assert fastv["code"] == [{"url": "https://github.com/pkunlp-icler/FastV", "official": True}]
    assert fastv["last_verified"] == dt.date(2026, 11, 20)
    titles = [d for d in fastv["disagreements"] if d["field"] == "title"]
    assert len(titles) == 1
    assert titles[0]["values"]["owner/list-a:README.md@abc1234"] == "FastV: An image is worth 1/2 tokens after layer 2"
    assert titles[0]["kept"] == fastv["title"]
    # the claim with an unknown metric is left out and reported; the good one is kept with its source
    assert [c["metric"] for c in fastv["claims"]] == ["flops_reduction"]
    assert any("claim 2 not used" in n for n in report.notes)
    assert fastv["placement"]["method"] == "survey"


def test_a_conference_in_a_list_is_not_replaced_by_an_unconfirmed_preprint(imported):
    papers, _ = imported
    h2o = load(papers, "h2o-2023")
    assert h2o["venue"] == "NeurIPS 2023"
    venue = next(d for d in h2o["disagreements"] if d["field"] == "venue")
    assert set(venue["values"].values()) == {"NeurIPS 2023", "arXiv"} and venue["kept"] == "NeurIPS 2023"
    # an unofficial repository found by the verifier does not replace the list's link; both are reported
    assert h2o["code"] == [{"url": "https://github.com/FMInference/H2O", "official": None}]  # the list's link: not verified either
    code = next(d for d in h2o["disagreements"] if d["field"] == "code")
    assert "https://github.com/someone-else/h2o-fork" in code["values"].values()
    # authors from the author list when the verified row has none
    assert h2o["authors"] == ["Zhenyu Zhang", "Ying Sheng"]
    assert h2o["provenance"]["authors"] == "https://arxiv.org/html/2306.14048v1"
    assert h2o["placement"] == {"cells": ["decode.memory"], "techniques": ["kv_eviction"], "method": "curated"}
    # decided from the abstract by a person, but no page is named for it: the placement is unsourced, not flagged
    assert "placement" not in h2o["provenance"]


def test_authors_no_source_gives_are_left_empty_and_marked_unknown(imported):
    papers, report = imported
    entry = load(papers, "query-based-projector-paper-2023")
    assert entry["authors"] == [] and entry["authors_status"] == "unknown"
    assert "authors" not in entry.get("provenance", {})
    authors_line = next(line for line in report.summary_lines() if line.startswith("authors:"))
    assert authors_line.endswith("3 unknown")  # this row, and the two rows (one paper) with no author list


def test_truncated_author_list_is_marked(tmp_path):
    papers = tmp_path / "papers"
    run_import(papers, verified=())
    assert load(papers, "fastv-2024")["authors_status"] == "truncated"


def test_rows_listing_one_paper_twice_are_merged_with_the_variant_recorded(imported):
    papers, report = imported
    entry = load(papers, "duplicated-method-2024")
    title = next(d for d in entry["disagreements"] if d["field"] == "title")
    assert set(title["values"].values()) == {"Duplicated Method: a paper listed twice by one list",
                                             "DupMethod: A Paper Listed Twice Under Another Title"}
    assert "listed twice" in title["why"]
    assert any(n.startswith("merged rows listing the same paper") for n in report.notes)
    # the two rows' venues disagree too: the conference outranks the stale arXiv listing
    assert entry["venue"] == "ICML 2024"


def test_new_paper_from_verified_file_needs_and_gets_a_curated_placement(imported):
    papers, _ = imported
    gdn = load(papers, "gated-deltanet-2025")
    assert gdn["short_name"] == "Gated DeltaNet" and gdn["venue"] == "ICLR 2025" and gdn["modality"] == ["text"]
    assert gdn["placement"]["method"] == "curated"


def test_verified_paper_without_placement_is_refused(tmp_path):
    with pytest.raises(ProblemError) as exc:
        plan_import([], verified=[VERIFIED], curated_path=tmp_path / "none.yaml", papers_dir=tmp_path / "papers",
                    today=TODAY)
    assert any("needs a placement decision" in p.message for p in exc.value.problems)
    assert not (tmp_path / "papers").exists()


# ------------------------------------------------------------------------------------------------ re-import rules
def test_reimport_upgrades_list_facts_with_verified_ones_and_keeps_the_id(tmp_path):
    papers = tmp_path / "papers"
    run_import(papers, verified=())
    first = load(papers, "fastv-2024")
    assert first["title"] == "FastV: An image is worth 1/2 tokens after layer 2"
    report = run_import(papers)
    assert not (papers / "an-image-worth-2024.yaml").exists()
    second = load(papers, "fastv-2024")
    assert second["title"].startswith("An Image is Worth") and second["authors_status"] == "complete"
    assert second["last_verified"] == dt.date(2026, 11, 20)
    assert {c.paper.id for c in report.changes if c.action == "update"} >= {"fastv-2024", "h2o-2023"}


def test_importing_in_two_steps_writes_the_same_files_as_importing_at_once(tmp_path):
    stepwise, at_once = tmp_path / "stepwise", tmp_path / "at_once"
    run_import(stepwise, verified=())
    run_import(stepwise)
    run_import(at_once)
    assert snapshot(stepwise) == snapshot(at_once)


def test_curated_fields_are_never_overwritten(imported):
    papers, _ = imported
    path = papers / "fastv-2024.yaml"
    entry = load(papers, "fastv-2024")
    entry["title"] = "An Image is Worth 1/2 Tokens After Layer 2 (hand-corrected)"
    entry["provenance"]["title"] = "https://openreview.net/forum?id=hand"
    entry["summary"] = "A summary written by a curator, different from the verified one."
    entry["code"] = [{"url": "https://github.com/pkunlp-icler/FastV", "official": False}]
    entry["provenance"]["code"] = "https://github.com/pkunlp-icler/FastV"
    entry["placement"] = {"cells": ["prefill.density"], "techniques": ["token_pruning", "token_merging"],
                          "method": "curated", "note": "merges as well"}
    entry["provenance"]["placement"] = "https://arxiv.org/pdf/2403.06764v3"
    entry["claims"] = entry["claims"][:0]
    from tools.yamlio import dump_entry

    path.write_text(dump_entry(entry), encoding="utf-8")
    edited = path.read_bytes()
    report = run_import(papers)
    after = load(papers, "fastv-2024")
    assert after["title"] == entry["title"] and after["summary"] == entry["summary"]
    assert after["code"] == entry["code"] and after["placement"] == entry["placement"]
    kept = next(c.kept for c in report.changes if c.paper.id == "fastv-2024")
    assert any(k.startswith("title: kept") for k in kept) and any(k.startswith("code: kept") for k in kept)
    # claims were emptied by hand, so the importer fills them again (fill-only field)
    assert [c["metric"] for c in after["claims"]] == ["flops_reduction"]
    assert path.read_bytes() != edited  # only because the claims were refilled
    # a second run changes nothing further
    before = path.read_bytes()
    run_import(papers)
    assert path.read_bytes() == before


def test_facts_from_a_verified_file_survive_a_reimport_without_it(imported):
    papers, _ = imported
    before = snapshot(papers)
    report = run_import(papers, verified=())
    # the paper only the verified file knows is not touched; the others keep their verified facts
    assert snapshot(papers) == before
    assert report.count("update") == 0
    kept = next(c.kept for c in report.changes if c.paper.id == "fastv-2024")
    assert any(k.startswith("title: kept") for k in kept)


def test_a_later_verified_file_corrects_field_by_field_and_the_old_value_is_reported(imported, tmp_path):
    papers, _ = imported
    correction = tmp_path / "corrections.jsonl"
    correction.write_text(json.dumps({
        "seed_title": None, "seed_arxiv_id": "2412.06464", "arxiv_id": "2412.06464", "venue": "ICML 2025",
        "venue_source": "https://example.org/corrected-venue", "sources": {}, "verified_on": "2026-11-22",
    }) + "\n", encoding="utf-8")
    run_import(papers, verified=(VERIFIED, correction))
    gdn = load(papers, "gated-deltanet-2025")
    assert gdn["venue"] == "ICML 2025" and gdn["provenance"]["venue"] == "https://example.org/corrected-venue"
    assert gdn["authors"] == ["Songlin Yang", "Jan Kautz", "Ali Hatamizadeh"]  # untouched by the correction
    venue = next(d for d in gdn["disagreements"] if d["field"] == "venue")
    assert venue["values"] == {"https://example.org/iclr2025/gdn": "ICLR 2025",
                               "https://example.org/corrected-venue": "ICML 2025"}


LIST = "October2001/Awesome-KV-Cache-Compression"  # a list whose category "Quantization" has a mapping


def test_a_second_verification_pass_finds_its_row_through_the_id_the_first_pass_found(tmp_path):
    """A row without an arXiv id in the list; the first pass finds the id, the second pass names only that id."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"arxiv_id": None, "title": "EAGLE: Lossless Acceleration of LLM Decoding",
                                "year": 2024, "paper_url": "https://example.org/eagle", "source_category": "Quantization",
                                "source": f"{LIST}:README.md@1234567"}) + "\n", encoding="utf-8")
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    page = "https://arxiv.org/abs/2401.15077"
    first.write_text(json.dumps({"seed_title": "EAGLE: Lossless Acceleration of LLM Decoding", "arxiv_id": "2401.15077",
                                 "title": "EAGLE: Speculative Sampling Requires Rethinking Feature Uncertainty",
                                 "sources": {"title": page}, "verified_on": "2026-11-20"}) + "\n", encoding="utf-8")
    second.write_text(json.dumps({"seed_title": "EAGLE: Speculative Sampling Requires Rethinking Feature Uncertainty",
                                  "seed_arxiv_id": "2401.15077", "arxiv_id": "2401.15077", "venue": "ICML 2024",
                                  "venue_source": "https://example.org/icml2024", "sources": {},
                                  "verified_on": "2026-11-21"}) + "\n", encoding="utf-8")
    papers = tmp_path / "papers"
    report = run_import(papers, rows=[rows], authors=(), verified=(first, second))
    assert [c.paper.id for c in report.changes] == ["eagle-2024"]
    entry = load(papers, "eagle-2024")
    assert entry["arxiv"] == "2401.15077" and entry["venue"] == "ICML 2024"
    assert entry["title"].startswith("EAGLE: Speculative Sampling")


def test_the_title_spelling_that_carries_the_method_name_is_kept(tmp_path):
    rows = tmp_path / "rows.jsonl"
    base = {"year": 2022, "arxiv_id": "2205.14135", "source_category": "Quantization"}
    rows.write_text("\n".join(json.dumps({**base, **r}) for r in [
        {"title": "Fast and Memory-Efficient Exact Attention with IO-Awareness", "source": f"{LIST}:README.md@1234567"},
        {"title": "FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness",
         "source": f"{LIST}:other.md@89abcde"},
    ]) + "\n", encoding="utf-8")
    papers = tmp_path / "papers"
    run_import(papers, rows=[rows], authors=(), verified=())
    entry = load(papers, "flashattention-2022")
    assert entry["title"].startswith("FlashAttention: ") and "provenance" not in entry  # a list is no source
    assert set(entry["listed_in"]) == {f"{LIST}:README.md@1234567", f"{LIST}:other.md@89abcde"}
    assert "method's name" in entry["disagreements"][0]["why"]


def test_list_sources_become_listed_in_and_a_placement_from_a_category_is_flagged(imported):
    papers, _ = imported
    for path in paper_files(papers):
        entry = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert all(not v.startswith("owner/list") for v in entry.get("provenance", {}).values()), path.name
        if entry["placement"]["method"] in ("survey", "mapped"):
            assert entry["placement"]["needs_review"] is True, path.name
            assert entry["placement"]["note"].startswith("placed from a list's category only"), path.name
    fastv = load(papers, "fastv-2024")
    assert "owner/list-a:README.md@abc1234" in fastv["listed_in"]
    # the list that disagrees on the title is still named in the disagreement (who said what)
    assert "owner/list-a:README.md@abc1234" in fastv["disagreements"][0]["values"]


SEED = ROOT.parent / "shared" / "literature"


@pytest.mark.skipif(not (SEED / "papers_seed.jsonl").exists(), reason="the seed data is not checked out here")
def test_committed_catalogue_is_up_to_date_with_the_seed_and_tools_data():
    """Re-importing the seed with the committed data files changes no paper file (the verified files of the
    verification pass are not needed: their facts are in the entries, with their sources)."""
    report = plan_import([SEED / "papers_seed.jsonl"], authors=[SEED / "papers_authors.jsonl"],
                         verified=[ROOT / "tools" / "data" / "verified_extra.jsonl"])
    changed = [c.paper.id for c in report.changes if c.action != "unchanged"]
    assert changed == []
    assert len(report.changes) >= 630


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_rows_name_file_and_line_and_write_nothing(tmp_path):
    papers = tmp_path / "papers"
    with pytest.raises(ProblemError) as exc:
        plan_import([BAD_ROWS], curated_path=PLACEMENTS, papers_dir=papers, today=TODAY)
    lines = {p.line for p in exc.value.problems}
    assert lines == {2, 3, 4, 5}
    text = "\n".join(p.as_text() for p in exc.value.problems)
    assert "import_bad_rows.jsonl:2: arxiv_id: '203.05527' is not an arXiv id" in text
    assert "import_bad_rows.jsonl:3: venue: venue 'Imaginary Conf 2024' is not a known venue" in text
    assert "import_bad_rows.jsonl:4: not valid JSON" in text
    assert "import_bad_rows.jsonl:5: venu:" in text
    assert not papers.exists()


def test_cli_bad_rows_exit_1_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tools", "import", str(BAD_ROWS), "--placements", str(PLACEMENTS),
         "--papers-dir", str(tmp_path / "papers")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "import_bad_rows.jsonl:2:" in result.stderr
    assert not (tmp_path / "papers").exists()


def test_cli_import_then_dry_run_reports_nothing_to_do(tmp_path):
    args = [sys.executable, "-m", "tools", "import", str(ROWS), "--authors", str(AUTHORS), "--verified",
            str(VERIFIED), "--placements", str(PLACEMENTS), "--papers-dir", str(tmp_path / "papers"),
            "--today", "2026-11-21"]
    first = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "6 created" in first.stdout
    second = subprocess.run(args + ["--dry-run"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "6 unchanged" in second.stdout and "dry run: nothing written" in second.stdout


# ------------------------------------------------------------------------------------------------ helpers
@pytest.mark.parametrize("raw, expected", [
    ("Arxiv 2024", "arXiv"),
    ("arXiv 2025", "arXiv"),
    ("EMNLP'23 Findings", "EMNLP 2023 Findings"),
    ("Findings of EMNLP 2024", "EMNLP 2024 Findings"),
    ("EMNLP Findings 2026", "EMNLP 2026 Findings"),
    ("ACL'24 Findings", "ACL 2024 Findings"),
    ("CVPR Highlight 2025", "CVPR 2025"),
    ("AAAI Oral 2025", "AAAI 2025"),
    ("ICML'23 Oral", "ICML 2023"),
    ("ECCV Oral 2024", "ECCV 2024"),
    ("ICML'23 ES FOMO", "ICML 2023 Workshop"),
    ("NeurIPS'24 ENLSP", "NeurIPS 2024 Workshop"),
    ("Trans. Mach. Learn. Res. 2025", "TMLR 2025"),
    ("ACM SIGCOMM 2024", "SIGCOMM 2024"),
    ("ACM MM 2025", "ACM MM 2025"),
    ("SIGMOD'25", "SIGMOD 2025"),
    ("IVUS'24", "IVUS 2024"),
    (None, None),
    ("", None),
])
def test_venue_normalisation(raw, expected):
    assert normalise_venue(raw, load_taxonomy()) == expected


@pytest.mark.parametrize("raw", ["Imaginary Conference 2024", "CVPR"])
def test_unknown_or_yearless_venue_is_an_error(raw):
    with pytest.raises(ValueError):
        normalise_venue(raw, load_taxonomy())


def test_ids_and_short_names():
    assert short_name_of("FastV: An image is worth 1/2 tokens") == "FastV"
    assert short_name_of("Beyond Text-Visual Attention: Exploiting Visual Cues") is None  # three words: a phrase
    assert id_candidates("Token Merging: Your ViT But Faster", "ToMe", 2023)[0] == "tome-2023"
    assert id_candidates("Efficient Streaming Language Models with Attention Sinks", None, 2024)[0] == \
        "efficient-streaming-language-2024"


def test_papers_that_would_share_an_id_both_get_a_longer_one(tmp_path):
    rows = tmp_path / "rows.jsonl"
    base = {"year": 2025, "venue": "arXiv 2025", "source_category": "Quantization",
            "source": "October2001/Awesome-KV-Cache-Compression:README.md@1cdb974"}
    rows.write_text("\n".join(json.dumps({**base, **r}) for r in [
        {"arxiv_id": "2508.16201", "title": "SpecX: Enhancing Speculative Decoding of Video LLMs"},
        {"arxiv_id": "2509.11815", "title": "SpecX: Fast Speculative Decoding in Vision-Language Models"},
    ]) + "\n", encoding="utf-8")
    papers = tmp_path / "papers"
    run_import(papers, rows=[rows], authors=(), verified=())
    assert sorted(p.stem for p in papers.glob("*.yaml")) == ["specx-enhancing-2025", "specx-fast-2025"]


def test_an_ambiguous_survey_category_gives_a_flagged_proposal_with_its_doubt(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({
        "arxiv_id": "2506.20066", "title": "ToSA: Token Merging with Spatial Awareness", "year": 2025,
        "source": "SuDIS-ZJU/Efficient-LVLMs-Inference:README.md@bd2bf45",
        "survey_placement": ["Encoding/Encoding-Oriented Token Compression/Attention-Aware"],
    }) + "\n", encoding="utf-8")
    papers = tmp_path / "papers"
    run_import(papers, rows=[rows], authors=(), verified=())
    placement = load(papers, "tosa-2025")["placement"]
    assert placement["method"] == "survey" and placement["needs_review"] is True
    assert placement["techniques"] == ["token_pruning"]  # the category's proposal, not a decision
    assert "pruning or merging (ToSA merges): read the abstract" in placement["note"]


def test_a_rejected_paper_is_not_imported_again(tmp_path):
    from tools.rejected import RejectedList, Rejection

    rejected = tmp_path / "rejected.yaml"
    RejectedList([Rejection("2403.06764", "FastV", dt.date(2026, 12, 4), "duplicate_of: test")], rejected).write()
    papers = tmp_path / "papers"
    report = plan_import([ROWS], authors=[AUTHORS], verified=[VERIFIED], curated_path=PLACEMENTS, papers_dir=papers,
                         today=TODAY, rejected_path=rejected)
    assert "fastv-2024" not in {c.paper.id for c in report.changes}
    assert any("arXiv 2403.06764 left out: rejected on 2026-12-04" in n for n in report.notes)
