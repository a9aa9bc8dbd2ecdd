"""Claimed vs measured: paper claims that a GPU benchmark measures, with the measured figures read from the
benchmark's result file.

The mapping lives in one declarative table, ``benchmarks/reproductions.yaml`` (paper id + claim metric -> result
file + row selector + the row fields shown). :func:`load_measurements` resolves it against ``benchmarks/results/``
and refuses what would mislead: a result from a CPU smoke run (``"smoke": true`` or device ``cpu``) is never shown
as a measurement, and a selector must pick exactly one row. Every problem names the table's file and line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from tools.catalogue.paths import ROOT, display_path
from tools.catalogue.problems import Problem, ProblemError
from tools.catalogue.schema import Paper
from tools.catalogue.yamlio import line_of, load_yaml_with_lines

REPRODUCTIONS = ROOT / "benchmarks" / "reproductions.yaml"
RESULTS_DIR = ROOT / "benchmarks" / "results"
UNITS = ("x", "%", "ms")
_ENTRY_KEYS = {"paper", "metric", "result", "rows", "match", "setting", "figures"}
_FIGURE_KEYS = {"field", "label", "unit", "as_saving"}


@dataclass(frozen=True)
class Figure:
    """One measured number shown beside a claim."""

    label: str
    value: float
    unit: str

    @property
    def text(self) -> str:
        """The figure as shown."""
        return format_value(self.value, self.unit)


@dataclass(frozen=True)
class Run:
    """Where and when a result was measured, from the result file (``device``, ``versions``, ``run``)."""

    device: str
    versions: str  # "torch 2.11.0+cu130, triton 3.6.0, CUDA 13.0"
    date: str  # ISO date of the run
    commit: str  # the commit measured, abbreviated ("" when not recorded)


@dataclass(frozen=True)
class Measurement:
    """A claim of a paper and what the project measured for it, with the run it comes from."""

    paper: str
    metric: str
    result: str  # path under benchmarks/results/, e.g. campaign_h200/prefill.json
    benchmark: str  # the script that wrote it, e.g. benchmarks/bench_prefill.py
    setting: str
    figures: tuple[Figure, ...]
    run: Run


def format_value(value: float, unit: str) -> str:
    """A number with its unit, as the site shows it."""
    if unit == "%":
        return f"{value:.1f}%"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:.3g} {unit}"


def _run(data: dict) -> Run:
    versions = data.get("versions") if isinstance(data.get("versions"), dict) else {}
    run = data.get("run") if isinstance(data.get("run"), dict) else {}
    parts = [f"{name} {versions[name]}" for name in ("torch", "triton", "transformers") if versions.get(name)]
    if versions.get("cuda"):
        parts.append(f"CUDA {versions['cuda']}")
    driver = (run.get("gpu_clocks") or {}).get("driver_version") if isinstance(run.get("gpu_clocks"), dict) else None
    if driver:
        parts.append(f"driver {driver}")
    return Run(
        device=str(data.get("device") or ""),
        versions=", ".join(parts),
        date=str(run.get("date") or "")[:10],
        commit=str(run.get("commit") or "")[:10],
    )


def is_measurement(data) -> bool:
    """A result that may be shown as a measurement: not a smoke run, and not on a CPU."""
    return (
        isinstance(data, dict)
        and data.get("smoke") is False
        and str(data.get("device") or "").strip().lower() not in ("", "cpu")
    )


def _figures(entry: dict, row: dict, loc: tuple, bad) -> list:
    """The figures an entry shows from its row (``bad(loc, field, message)`` records each problem)."""
    figures = []
    for j, fig in enumerate(entry["figures"] if isinstance(entry["figures"], list) else []):
        floc = loc + ("figures", j)
        if not isinstance(fig, dict) or not {"field", "label", "unit"} <= set(fig) or set(fig) - _FIGURE_KEYS:
            bad(floc, "figures", "each figure has field, label, unit and optionally as_saving")
            continue
        value = row.get(fig["field"])
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            bad(floc + ("field",), "figures.field", f"the row has no number {fig['field']!r}")
            continue
        if fig["unit"] not in UNITS:
            bad(floc + ("unit",), "figures.unit", f"unit {fig['unit']!r} is not one of {', '.join(UNITS)}")
            continue
        if fig.get("as_saving"):
            if fig["unit"] != "%" or value <= 0:
                bad(floc, "figures.as_saving", "shows a positive ratio as a saving in %")
                continue
            value = 100.0 * (1.0 - 1.0 / value)
        figures.append(Figure(str(fig["label"]), float(value), fig["unit"]))
    return figures


def _read_result(result: str, results_dir: Path, cache: dict, loc: tuple, bad):
    """The benchmark result file an entry names, read once (``cache``), or None after recording why it cannot be
    used (not a file name under benchmarks/results/, unreadable, a smoke or CPU run)."""
    path = (Path(results_dir) / result).resolve()
    if not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*\.json", result) or ".." in result.split("/"):
        bad(loc + ("result",), "result", f"{result!r} is not a JSON file name under benchmarks/results/")
        return None
    if result not in cache:
        try:
            cache[result] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            cache[result] = exc
    found = cache[result]
    if isinstance(found, Exception):
        bad(loc + ("result",), "result", f"cannot read {result}: {found}")
        return None
    if not is_measurement(found):
        bad(
            loc + ("result",),
            "result",
            f"{result} is a smoke or CPU run (smoke={found.get('smoke')!r}, device={found.get('device')!r}), "
            "not a measurement"
            if isinstance(found, dict)
            else f"{result} is not a benchmark result",
        )
        return None
    return found


def load_measurements(
    papers: Mapping[str, Paper], table: Path = REPRODUCTIONS, results_dir: Path = RESULTS_DIR
) -> list[Measurement]:
    """Every entry of the table, resolved; raises :class:`ProblemError` listing every problem (file:line: field)."""
    if not Path(table).is_file():
        return []
    shown = display_path(table)
    data, lines = load_yaml_with_lines(table)
    problems: list[Problem] = []

    def bad(loc: tuple, field: str, message: str) -> None:
        problems.append(Problem(shown, line_of(lines, loc), field, message))

    entries = data.get("reproductions") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ProblemError([Problem(shown, 1, "reproductions", "expected a list under `reproductions:`")])
    out, cache = [], {}
    for i, entry in enumerate(entries):
        loc = ("reproductions", i)
        if not isinstance(entry, dict):
            bad(loc, "reproductions", "each entry is a mapping (paper, metric, result, rows, match, setting, figures)")
            continue
        for key in sorted(set(entry) - _ENTRY_KEYS):
            bad(loc + (key,), key, "unknown key")
        for key in sorted(_ENTRY_KEYS - set(entry)):
            bad(loc, key, "missing")
        if not _ENTRY_KEYS <= set(entry):
            continue
        paper = papers.get(str(entry["paper"]))
        if paper is None:
            bad(loc + ("paper",), "paper", f"no paper {entry['paper']!r} in the catalogue")
        elif not any(c.metric == entry["metric"] for c in paper.claims):
            bad(loc + ("metric",), "metric", f"{paper.id} has no claim with metric {entry['metric']!r}")
        result = str(entry["result"])
        found = _read_result(result, results_dir, cache, loc, bad)
        if found is None:
            continue
        rows = found.get(str(entry["rows"]))
        if not isinstance(rows, list):
            bad(loc + ("rows",), "rows", f"{result} has no list {entry['rows']!r}")
            continue
        match = entry["match"] if isinstance(entry["match"], dict) else {}
        picked = [r for r in rows if isinstance(r, dict) and all(r.get(k) == v for k, v in match.items())]
        if not match or len(picked) != 1:
            bad(loc + ("match",), "match", f"picks {len(picked)} rows of {result}:{entry['rows']}, not exactly one")
            continue
        figures = _figures(entry, picked[0], loc, bad)
        if not figures:
            bad(loc + ("figures",), "figures", "no figure to show")
            continue
        benchmark = f"benchmarks/bench_{found.get('benchmark')}.py"
        if not (ROOT / benchmark).is_file():
            benchmark = ""
        out.append(
            Measurement(
                str(entry["paper"]),
                str(entry["metric"]),
                result,
                benchmark,
                " ".join(str(entry["setting"]).split()),
                tuple(figures),
                _run(found),
            )
        )
    if problems:
        raise ProblemError(problems)
    return out
