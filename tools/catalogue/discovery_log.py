"""Which submission dates ``discover`` has searched: ``tools/data/discovery_log.yaml``, written by every run that
updates the triage queue, and shown on the website as "covered through <date>".

A run covers its window (``since`` .. ``until``) completely when it searched every technique's keywords in (at least)
the default categories and no query was cut at ``--max-per-technique`` results. The catalogue is *covered through* the
last day of the longest stretch of complete windows that reaches furthest: a gap or an incomplete run ends it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.catalogue.paths import ROOT, display_path
from tools.catalogue.problems import Problem, ProblemError
from tools.catalogue.yamlio import atomic_write, dump_yaml, line_of, load_yaml_with_lines

LOG_PATH = ROOT / "tools" / "data" / "discovery_log.yaml"
DEFAULT_CATEGORIES = ["cs.CV", "cs.CL", "cs.LG", "cs.AI"]  # what discover searches unless told otherwise
HEADER = (
    "# The submission dates `python -m tools discover` has searched, one run per item (written by discover; do not\n"
    "# edit). complete: every technique's keywords, the default categories, and no query cut at its result limit.\n"
)


@dataclass
class DiscoveryRun:
    """One ``discover`` run: the submission window, categories and techniques searched, and the queries cut at
    their limit."""

    since: dt.date
    until: dt.date
    ran_on: dt.date
    categories: list[str]
    techniques: str | list[str]  # "all", or the technique ids searched
    results: int
    truncated: list[str] = field(default_factory=list)  # techniques whose query returned its result limit

    def complete(self, default_categories: list[str]) -> bool:
        """Whether the run covered its window fully (every technique, the default categories, no query cut)."""
        return self.techniques == "all" and set(default_categories) <= set(self.categories) and not self.truncated

    def to_data(self) -> dict[str, Any]:
        """The run as stored in the log file."""
        fresh = lambda d: dt.date(d.year, d.month, d.day)  # noqa: E731  (no YAML anchors for shared date objects)
        data = {
            "since": fresh(self.since),
            "until": fresh(self.until),
            "ran_on": fresh(self.ran_on),
            "categories": list(self.categories),
            "techniques": self.techniques,
            "results": self.results,
        }
        if self.truncated:
            data["truncated"] = list(self.truncated)
        return data


def read_log(path: Path = LOG_PATH) -> list[DiscoveryRun]:
    """The runs recorded so far (empty when the log does not exist); ProblemError for a malformed file."""
    shown = display_path(path)
    if not Path(path).exists():
        return []
    data, lines = load_yaml_with_lines(path)
    if data is None:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("runs", []), list):
        raise ProblemError([Problem(shown, 1, "runs", "the file must be a mapping with a list under 'runs'")])
    runs, problems = [], []
    for i, item in enumerate(data.get("runs") or []):
        line = line_of(lines, ("runs", i))
        try:
            techniques = item["techniques"]
            if techniques != "all" and not (
                isinstance(techniques, list) and all(isinstance(t, str) for t in techniques)
            ):
                raise ValueError("techniques is 'all' or a list of ids")
            run = DiscoveryRun(
                since=item["since"],
                until=item["until"],
                ran_on=item["ran_on"],
                categories=[str(c) for c in item["categories"]],
                techniques=techniques,
                results=int(item.get("results", 0)),
                truncated=list(item.get("truncated") or []),
            )
            if not all(isinstance(d, dt.date) for d in (run.since, run.until, run.ran_on)) or run.since > run.until:
                raise ValueError("since, until and ran_on are dates (YYYY-MM-DD), since <= until")
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(Problem(shown, line, f"runs.{i}", f"unreadable run ({exc})"))
            continue
        runs.append(run)
    if problems:
        raise ProblemError(problems)
    return runs


def record_run(run: DiscoveryRun, path: Path = LOG_PATH) -> None:
    """Add a run to the log; a run of the same window, categories and techniques replaces the earlier one."""

    def same(r: DiscoveryRun) -> bool:
        key = (run.since, run.until, sorted(run.categories), run.techniques)
        return (r.since, r.until, sorted(r.categories), r.techniques) == key

    runs = [r for r in read_log(path) if not same(r)] + [run]
    runs.sort(key=lambda r: (r.since, r.until, r.ran_on))
    text = HEADER + dump_yaml({"runs": [r.to_data() for r in runs]})
    if not Path(path).exists() or Path(path).read_text(encoding="utf-8") != text:
        atomic_write(path, text)


def covered(
    runs: list[DiscoveryRun],
    default_categories: list[str] = DEFAULT_CATEGORIES,
) -> tuple[dt.date, dt.date] | None:
    """(first day, last day) of the stretch of complete windows that reaches furthest, or None."""
    windows = sorted((r.since, r.until) for r in runs if r.complete(default_categories))
    merged: list[list[dt.date]] = []
    for since, until in windows:
        if merged and since <= merged[-1][1] + dt.timedelta(days=1):
            merged[-1][1] = max(merged[-1][1], until)
        else:
            merged.append([since, until])
    if not merged:
        return None
    start, end = max(merged, key=lambda w: w[1])
    return start, end
