"""The results page: claimed vs measured (benchmarks/reproductions.yaml resolved against GPU result files; a CPU
smoke run refused) and the comparable settings built from the claims' settings (budgets parsed, baselines flagged)."""

from __future__ import annotations

import html
import json
import re

import pytest

from tests.tools.outputs._fixture_catalogue import fixture_papers
from tools.catalogue.paths import ROOT
from tools.catalogue.problems import ProblemError
from tools.outputs.site.measured import RESULTS_DIR, load_measurements
from tools.outputs.site.model import SiteModel
from tools.outputs.site.results import budget_share, comparable_settings, model_key

DATA = ROOT / "tests" / "tools" / "outputs" / "site" / "data"


def _text(page_html: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page_html)).split())


# ------------------------------------------------------------------------------------------------ claimed vs measured
def test_the_repository_table_resolves_against_the_gpu_campaign():
    """Every entry of benchmarks/reproductions.yaml names a claimed metric of its paper and exactly one row of a GPU
    result; the figures are the row's numbers (FastV: FLOPs saved from the FLOP-predicted speedup)."""
    from tools.catalogue.validate import load_catalogue

    papers = load_catalogue()
    found = load_measurements(papers)
    assert {m.paper for m in found} >= {"fastv-2024", "pyramiddrop-2025", "visionzip-2025", "pevlm-2025"}
    for m in found:
        assert any(c.metric == m.metric for c in papers[m.paper].claims)
        assert m.run.device == "NVIDIA H200" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", m.run.date)
        assert "torch 2.11" in m.run.versions and m.benchmark.startswith("benchmarks/bench_")
        assert (ROOT / m.benchmark).is_file() and (RESULTS_DIR / m.result).is_file()
    fastv = next(m for m in found if m.paper == "fastv-2024")
    rows = json.loads((RESULTS_DIR / fastv.result).read_text())["results"]
    row = next(r for r in rows if r["name"] == "fastv_K2_R0.5")
    figures = {f.label: f.value for f in fastv.figures}
    assert figures["prefill FLOPs saved (counted at these shapes)"] == pytest.approx(
        100 * (1 - 1 / row["predicted_speedup"])
    )
    assert figures["prefill speedup (measured)"] == row["measured_speedup"]


def _table(tmp_path, body: str):
    path = tmp_path / "reproductions.yaml"
    path.write_text(body, encoding="utf-8")
    return path


ENTRY = """reproductions:
  - paper: fastv-2024
    metric: flops_reduction
    result: {result}
    rows: results
    match: {{name: {name}}}
    setting: at fixture shapes
    figures:
      - {{field: {field}, label: "speedup", unit: x}}
"""


@pytest.mark.parametrize(
    "result, name, field, message",
    [
        ("prefill_cpu_smoke.json", "fastv_K2_R0.5", "measured_speedup", "is a smoke or CPU run"),
        ("gpu_fixture/prefill.json", "fastv_K9", "measured_speedup", "picks 0 rows"),
        ("gpu_fixture/prefill.json", "fastv_K2_R0.5", "no_such_field", "the row has no number 'no_such_field'"),
        ("gpu_fixture/missing.json", "fastv_K2_R0.5", "measured_speedup", "cannot read gpu_fixture/missing.json"),
        ("../../../etc/passwd.json", "fastv_K2_R0.5", "measured_speedup", "is not a JSON file name"),
    ],
)
def test_a_smoke_run_or_a_bad_entry_is_refused_with_file_and_line(tmp_path, result, name, field, message):
    table = _table(tmp_path, ENTRY.format(result=result, name=name, field=field))
    with pytest.raises(ProblemError) as caught:
        load_measurements(fixture_papers(), table, DATA)
    problems = caught.value.problems
    assert any(message in p.message for p in problems), problems
    assert all(p.file.endswith("reproductions.yaml") and p.line > 1 for p in problems)


def test_unknown_papers_metrics_and_keys_are_named(tmp_path):
    table = _table(
        tmp_path,
        """reproductions:
  - paper: no-such-paper
    metric: flops_reduction
    result: gpu_fixture/prefill.json
    rows: results
    match: {name: fastv_K2_R0.5}
    setting: x
    figures: [{field: measured_speedup, label: s, unit: x}]
  - paper: snapkv-2024
    metric: flops_reduction
    result: gpu_fixture/prefill.json
    rows: results
    match: {name: fastv_K2_R0.5}
    setting: x
    figures: [{field: measured_speedup, label: s, unit: parsecs}]
    colour: blue
  - just a string
""",
    )
    with pytest.raises(ProblemError) as caught:
        load_measurements(fixture_papers(), table, DATA)
    messages = [p.as_text() for p in caught.value.problems]
    assert any("no paper 'no-such-paper'" in m for m in messages)
    assert any("snapkv-2024 has no claim with metric 'flops_reduction'" in m for m in messages)
    assert any("colour: unknown key" in m for m in messages)
    assert any("unit 'parsecs'" in m for m in messages)
    assert any("each entry is a mapping" in m for m in messages)


def test_a_broken_table_is_one_clear_error_not_a_traceback(tmp_path, capsys):
    table = _table(tmp_path, "reproductions:\n  - paper: [unclosed\n")
    with pytest.raises(ProblemError) as caught:
        load_measurements(fixture_papers(), table, DATA)
    assert "YAML syntax error" in caught.value.problems[0].message


def test_the_paper_page_shows_the_claim_beside_the_measurement(built_site):
    page = (built_site.site / "papers" / "fastv-2024.html").read_text(encoding="utf-8")
    section = page.split('id="claimed-vs-measured"', 1)[1].split("<h2", 1)[0]
    text = _text(section)
    assert "FLOPs reduction: 45% (model: LLaVA-1.5-13B)" in text  # the claim, with its setting
    assert "prefill FLOPs saved (counted): 50.0%" in text and "prefill speedup (measured): 1.25x" in text
    assert "NVIDIA H200 (fixture)" in text and "torch 2.11.0+cu130" in text and "2026-12-04" in text
    assert "benchmarks/bench_prefill.py" in text and "0123456789" in text  # the benchmark and the commit
    assert 'href="../data/results/gpu_fixture/prefill.json"' in section
    assert 'href="https://github.com/example-org/lvlm-atlas/blob/HEAD/benchmarks/bench_prefill.py"' in section
    assert (built_site.site / "data" / "results" / "gpu_fixture" / "prefill.json").is_file()
    other = (built_site.site / "papers" / "snapkv-2024.html").read_text(encoding="utf-8")
    assert 'id="claimed-vs-measured"' not in other


def test_the_results_page_lists_measurements_and_never_a_smoke_figure(built_site):
    page = (built_site.site / "results.html").read_text(encoding="utf-8")
    measured = page.split('id="claimed-vs-measured"', 1)[1].split('id="how-claims-are-matched', 1)[0]
    assert 'href="papers/fastv-2024.html"' in measured and "1.25x" in _text(measured)
    assert "9.9" not in _text(page)  # the smoke file's figure
    listing = _text((built_site.site / "reference-implementations.html").read_text(encoding="utf-8"))
    assert "prefill_cpu_smoke.json smoke run (not a measurement) cpu" in listing
    assert "gpu_fixture/prefill.json run NVIDIA H200 (fixture) 2026-12-04" in listing


# ------------------------------------------------------------------------------------------------ comparable settings
def test_budgets_and_models_are_read_from_the_claim_settings():
    assert budget_share("128 of 576 visual tokens", "tokens") == pytest.approx(22.222, abs=1e-3)
    assert budget_share("about 40 of 2,880 visual tokens (1.4%)", "tokens") == pytest.approx(1.389, abs=1e-3)
    assert budget_share("90.3% of video tokens pruned", "tokens") == pytest.approx(9.7)
    assert budget_share("11.1% of visual tokens", "tokens") == pytest.approx(11.1)
    assert budget_share("75% average visual token pruning", "tokens") == pytest.approx(25)
    assert budget_share("10% of KV cache retained", "kv") == pytest.approx(10)
    assert budget_share("10% of KV cache retained", "tokens") is None
    assert budget_share("same setting as the 95% FLOPs reduction", "tokens") is None
    assert model_key("LLaVA-v1.5-7B") == model_key("LLaVA-1.5-7B + TRIM") == "llava-1.5-7b"
    assert model_key("LLaVA-1.6 7B (T=0)") == model_key("LLaVA-NeXT-7B") == "llava-next-7b"
    assert model_key("LLaVA-OV-7B") == model_key("LLaVA-OneVision-7B")
    for many in ("various LVLMs", "LLaVA-1.5-7B/13B, LLaVA-NeXT-7B", "OPT-6.7B and OPT-30B", None, ""):
        assert model_key(many) is None


def test_settings_group_claims_on_one_model_and_flag_different_baselines():
    from tools.catalogue.taxonomy import load_taxonomy
    from tools.outputs.bibtex import catalogue_keys

    papers = fixture_papers()
    model = SiteModel(papers, load_taxonomy(), catalogue_keys(papers))
    settings = {s.id: s for s in comparable_settings(papers, model.ordered_ids)}
    setting = settings["tokens-performance-llava-1-5-7b"]
    assert setting.title == "Visual tokens kept vs performance retained on LLaVA-1.5-7B"
    rows = {r.paper: r for r in setting.rows}
    assert set(rows) == {"visionzip-2025", "fast-variant-2025"}
    assert rows["visionzip-2025"].budget == pytest.approx(100 * 64 / 576)
    assert rows["fast-variant-2025"].budget == pytest.approx(11.1)
    assert "61.9" in rows["visionzip-2025"].flag and "62" in rows["visionzip-2025"].flag
    assert "61.9" in rows["fast-variant-2025"].flag
    assert all(s.papers >= 2 for s in settings.values())  # a setting of one paper compares nothing


def test_the_results_page_has_a_sortable_table_and_a_plot_per_setting(built_site):
    page = (built_site.site / "results.html").read_text(encoding="utf-8")
    section = page.split('id="tokens-performance-llava-1-5-7b"', 1)[1].split("<h3", 1)[0]
    assert section.count('class="atlas-plot-svg"') == 1 and "VisionZip" in section and "FastVariant" in section
    table = section.split("<table", 1)[1]
    assert table.startswith(' class="atlas-sortable atlas-cards"')
    assert 'href="papers/visionzip-2025.html"' in table and 'href="https://arxiv.org/abs/2412.04467">Table 1<' in table
    assert table.count('class="atlas-flagged"') == 2 and "baseline differs" in _text(table)
