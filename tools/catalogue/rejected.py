"""The rejected list (``tools/data/rejected.yaml``): papers that do not belong in the catalogue, each with why.

Written by ``triage --reject`` and by ``add --from`` (a verification record with ``decision: exclude``); read by
``discover``, ``triage``, ``add`` and ``new``, which never propose or add a rejected paper again. Each rejection names
the paper by arXiv id, or by the catalogue id it had when it was removed (or both), with its title, the reason
(``out_of_scope: ...``, ``wrong_id: ...``, ``duplicate_of: ...``, ``not_found: ...`` or free text from triage) and the
date. To admit a rejected paper after all, delete its rejection from the file.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.catalogue.paths import ROOT, display_path
from tools.catalogue.problems import Problem, ProblemError
from tools.catalogue.schema import ARXIV_NEW, ARXIV_OLD, ID_PATTERN
from tools.catalogue.yamlio import atomic_write, dump_yaml, line_of, load_yaml_with_lines

REJECTED_PATH = ROOT / "tools" / "data" / "rejected.yaml"
HEADER = (
    "# Papers that do not belong in the catalogue (out of scope, a wrong id in a list, a duplicate, not found), with\n"
    "# why: written by `python -m tools triage --reject` and `python -m tools add --from` (decision: exclude).\n"
    "# discover, triage, add and new never propose or add them again; delete a rejection to admit its paper.\n"
)


@dataclass
class Rejection:
    """A paper kept out of the catalogue: its arXiv id and former entry id, title, reason and date."""

    arxiv: str | None
    title: str
    date: dt.date
    reason: str | None = None
    id: str | None = None  # the catalogue id of a removed entry

    def to_data(self) -> dict[str, Any]:
        """The rejection as stored in the rejected list."""
        day = dt.date(self.date.year, self.date.month, self.date.day)  # a fresh object: no YAML anchors
        data = {"arxiv": self.arxiv, "id": self.id, "title": self.title, "date": day, "reason": self.reason}
        return {k: v for k, v in data.items() if v is not None}

    def describe(self) -> str:
        """One line naming the paper and why it was rejected."""
        return f"rejected on {self.date.isoformat()}" + (f" ({self.reason})" if self.reason else "")


class RejectedList:
    """The rejections, looked up by arXiv id or catalogue id."""

    def __init__(self, rejections: list[Rejection], path: Path = REJECTED_PATH):
        self.rejections = list(rejections)
        self.path = Path(path)

    def find(self, arxiv: str | None = None, paper_id: str | None = None) -> Rejection | None:
        """The rejection of the paper with this arXiv id or entry id, if any."""
        for r in self.rejections:
            if (arxiv and r.arxiv == arxiv) or (paper_id and r.id == paper_id):
                return r
        return None

    @property
    def arxiv_ids(self) -> set[str]:
        """The arXiv ids on the list."""
        return {r.arxiv for r in self.rejections if r.arxiv}

    def add(self, rejection: Rejection) -> bool:
        """Record a rejection unless the paper is already rejected; True when it was added."""
        if self.find(rejection.arxiv, rejection.id):
            return False
        self.rejections.append(rejection)
        return True

    def refusal(self, arxiv: str | None = None, paper_id: str | None = None) -> str | None:
        """Why the paper must not be added, or None."""
        found = self.find(arxiv, paper_id)
        if found is None:
            return None
        return f"{found.describe()}: delete its rejection from {display_path(self.path)} to add it"

    def write(self) -> None:
        """Write the list atomically."""
        atomic_write(self.path, HEADER + dump_yaml({"rejected": [r.to_data() for r in self.rejections]}))


def read_rejected(path: Path = REJECTED_PATH) -> RejectedList:
    """The rejected list (empty when the file does not exist); raises ProblemError naming file:line for bad items."""
    shown = display_path(path)
    if not Path(path).exists():
        return RejectedList([], path)
    data, lines = load_yaml_with_lines(path)
    if data is None:
        return RejectedList([], path)
    if not isinstance(data, dict) or not isinstance(data.get("rejected", []), list):
        raise ProblemError([Problem(shown, 1, "rejected", "the file must be a mapping with a list under 'rejected'")])
    out, problems = [], []
    for i, item in enumerate(data.get("rejected") or []):
        line = line_of(lines, ("rejected", i))
        if not isinstance(item, dict):
            problems.append(Problem(shown, line, f"rejected.{i}", "each rejection is a mapping"))
            continue
        arxiv, pid, day = item.get("arxiv"), item.get("id"), item.get("date")
        if arxiv is not None and not (isinstance(arxiv, str) and (ARXIV_NEW.match(arxiv) or ARXIV_OLD.match(arxiv))):
            problems.append(Problem(shown, line, f"rejected.{i}.arxiv", f"{arxiv!r} is not an arXiv id (quote it)"))
            continue
        if pid is not None and not (isinstance(pid, str) and re.match(ID_PATTERN, pid)):
            problems.append(Problem(shown, line, f"rejected.{i}.id", f"{pid!r} is not a paper id"))
            continue
        if arxiv is None and pid is None:
            problems.append(Problem(shown, line, f"rejected.{i}", "name the paper by arxiv or id"))
            continue
        if not isinstance(day, dt.date):
            problems.append(Problem(shown, line, f"rejected.{i}.date", "give the date as YYYY-MM-DD"))
            continue
        out.append(
            Rejection(arxiv=arxiv, id=pid, title=str(item.get("title", "")), date=day, reason=item.get("reason"))
        )
    if problems:
        raise ProblemError(problems)
    return RejectedList(out, path)
