"""The triage queue shared by ``discover`` and ``triage`` (the rejected list is tools/catalogue/rejected.py).

``tools/data/triage_queue.yaml`` holds the candidates ``discover`` found, best first, each with what arXiv said about
it (so ``triage --accept`` creates the entry offline) and the suggested placement. Written atomically.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.arxiv.source import ArxivRecord
from tools.catalogue.paths import ROOT, display_path
from tools.catalogue.problems import Problem, ProblemError
from tools.catalogue.rejected import REJECTED_PATH
from tools.catalogue.schema import ARXIV_NEW, ARXIV_OLD
from tools.catalogue.yamlio import atomic_write, dump_yaml, line_of, load_yaml_with_lines

QUEUE_PATH = ROOT / "tools" / "data" / "triage_queue.yaml"

QUEUE_HEADER = (
    "# Candidates for the catalogue found on arXiv by `python -m tools discover`, most relevant first.\n"
    "# Review them with `python -m tools triage` (--accept ID / --reject ID --reason TEXT).\n"
)


@dataclass
class Candidate:
    """A paper ``discover`` found and ``triage`` decides on: its arXiv record, relevance and suggested placement."""

    record: ArxivRecord
    relevance: float
    discovered: dt.date
    matched: list[str] = field(default_factory=list)
    techniques: list[str] = field(default_factory=list)
    cells: list[str] = field(default_factory=list)
    modality: list[str] = field(default_factory=list)

    @property
    def arxiv(self) -> str:
        """The candidate's arXiv id."""
        return self.record.arxiv

    def to_data(self) -> dict[str, Any]:
        """The candidate as stored in the queue file."""
        return {
            "arxiv": self.record.arxiv,
            "title": self.record.title,
            "relevance": self.relevance,
            "discovered": _fresh(self.discovered),
            "url": self.record.url,
            "suggested": {"techniques": self.techniques, "cells": self.cells, "modality": self.modality},
            "matched_keywords": self.matched,
            "record": self.record.to_data(),
        }


def _fresh(day: dt.date) -> dt.date:
    """A new date object: the YAML dumper writes a repeated object as an anchor and aliases (&id001 / *id001)."""
    return dt.date(day.year, day.month, day.day)


def _load_list(path: Path, key: str) -> tuple[list, Any, str]:
    shown = display_path(path)
    if not Path(path).exists():
        return [], {}, shown
    data, lines = load_yaml_with_lines(path)
    if data is None:
        return [], lines, shown
    if not isinstance(data, dict) or not isinstance(data.get(key, []), list):
        raise ProblemError([Problem(shown, 1, key, f"the file must be a mapping with a list under {key!r}")])
    return data.get(key) or [], lines, shown


def _arxiv_id(value: Any, shown: str, line: int) -> str:
    if not isinstance(value, str) or not (ARXIV_NEW.match(value) or ARXIV_OLD.match(value)):
        raise ProblemError([Problem(shown, line, "arxiv", f"{value!r} is not an arXiv id (quote it)")])
    return value


def read_queue(path: Path = QUEUE_PATH) -> list[Candidate]:
    """The triage queue, best first; ProblemError (file:line: field) for a malformed file."""
    items, lines, shown = _load_list(path, "candidates")
    out = []
    for i, item in enumerate(items):
        line = line_of(lines, ("candidates", i))
        try:
            _arxiv_id(item.get("arxiv"), shown, line)
            suggested = item.get("suggested") or {}
            out.append(
                Candidate(
                    record=ArxivRecord.from_data(item["record"]),
                    relevance=float(item.get("relevance", 0)),
                    discovered=item.get("discovered") or dt.date.today(),
                    matched=list(item.get("matched_keywords") or []),
                    techniques=list(suggested.get("techniques") or []),
                    cells=list(suggested.get("cells") or []),
                    modality=list(suggested.get("modality") or []),
                )
            )
        except ProblemError:
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ProblemError([Problem(shown, line, f"candidates.{i}", f"unreadable candidate ({exc})")]) from None
    return out


def write_queue(candidates: list[Candidate], path: Path = QUEUE_PATH) -> None:
    """Write the queue atomically (a temporary file, then a rename)."""
    ordered = sorted(candidates, key=lambda c: (-c.relevance, c.arxiv))
    atomic_write(path, QUEUE_HEADER + dump_yaml({"candidates": [c.to_data() for c in ordered]}))


def add_state_options(parser) -> None:
    """The ``--queue``, ``--rejected`` and ``--papers-dir`` options of the commands that keep triage state."""
    parser.add_argument(
        "--queue", type=Path, default=QUEUE_PATH, help=f"the triage queue (default {display_path(QUEUE_PATH)})"
    )
    parser.add_argument(
        "--rejected",
        type=Path,
        default=REJECTED_PATH,
        help=f"the rejected papers (default {display_path(REJECTED_PATH)})",
    )
