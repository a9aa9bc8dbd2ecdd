"""A problem found in the catalogue, and how it is printed (plain, or as GitHub annotations)."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    line: int
    field: str
    message: str

    def as_text(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def as_github(self) -> str:
        # Annotation syntax: ::error file=...,line=...,title=...::message (newlines must be escaped).
        msg = self.as_text().replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        title = (self.field or "catalogue").replace(",", "%2C").replace(":", "%3A")
        return f"::error file={self.file},line={self.line},title={title}::{msg}"


def in_github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


class ProblemError(Exception):
    """Raised by loaders for input that cannot be read at all; carries the problems found."""

    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(p.as_text() for p in problems))
        self.problems = problems
