"""The errors of the tooling: a problem found in the catalogue and how it is printed (plain, or as GitHub
annotations); a mistake in a command's input (:class:`UserError`)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One problem in an input file: where it is (file, line, field) and what is wrong."""

    file: str
    line: int
    field: str
    message: str

    def as_text(self) -> str:
        """``file:line: field: message`` (without the field when there is none)."""
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def as_github(self) -> str:
        """The problem as a GitHub Actions error annotation."""
        # Annotation syntax: ::error file=...,line=...,title=...::message (newlines must be escaped).
        msg = self.as_text().replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        title = (self.field or "catalogue").replace(",", "%2C").replace(":", "%3A")
        return f"::error file={self.file},line={self.line},title={title}::{msg}"


def in_github_actions() -> bool:
    """Whether the tooling runs inside GitHub Actions (problems are then printed as annotations)."""
    return os.environ.get("GITHUB_ACTIONS") == "true"


class ProblemError(Exception):
    """Raised by loaders for input that cannot be read at all; carries the problems found."""

    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(p.as_text() for p in problems))
        self.problems = problems


class UserError(Exception):
    """A mistake in the user's command or input: printed as one line, exit code 2."""


def print_problems(problems, stream=None) -> None:
    """Print each problem on one line (as GitHub annotations inside GitHub Actions)."""
    stream = stream or sys.stderr
    github = in_github_actions()
    for problem in problems:
        print(problem.as_github() if github else problem.as_text(), file=stream)
