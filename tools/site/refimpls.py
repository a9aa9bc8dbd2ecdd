"""The reference implementations the catalogue links (``reference_impls: [reference_impls.prefill.fastv, ...]``):
their docstrings and tests, read from the source without importing torch."""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from tools.paths import REFERENCE_IMPLS_DIR, ROOT

TESTS_DIR = ROOT / "tests" / "reference_impls"
RESULTS_DIR = ROOT / "benchmarks" / "results"


@dataclass
class RefImpl:
    module: str  # reference_impls.prefill.fastv
    obj: str | None  # an object inside the module, when the entry names one
    path: str | None  # repository-relative path of the source, None when missing
    summary: str  # first paragraph of the module docstring
    tests: list[str] = field(default_factory=list)  # repository-relative test files that import it

    @property
    def ref(self) -> str:
        return f"{self.module}:{self.obj}" if self.obj else self.module

    @property
    def import_line(self) -> str:
        parent, _, name = self.module.rpartition(".")
        return f"from {parent} import {name}" if not self.obj else f"from {self.module} import {self.obj}"

    @property
    def help_command(self) -> str:
        """A shell line that prints its documentation (the object's, when the entry names one)."""
        return f'PYTHONPATH=. python -c "{self.import_line}; help({self.obj or self.module.rpartition(".")[2]})"'

    @property
    def test_command(self) -> str:
        targets = " ".join(self.tests) if self.tests else "tests/reference_impls"
        return f"python -m pytest -q {targets}"


def _source_path(module: str, root: Path) -> Path | None:
    rel = Path(*module.split(".")[1:])
    base = root / rel
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _docstring(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return ""
    doc = ast.get_docstring(tree) or ""
    return " ".join(doc.strip().split("\n\n", 1)[0].split())


_DOTTED = re.compile(r"\breference_impls(?:\.\w+)+")
_FROM_IMPORT = re.compile(r"from\s+(reference_impls(?:\.\w+)*)\s+import\s+([^\n]*)")


@lru_cache(maxsize=1)
def _test_index(tests_dir: str) -> dict[str, set[str]]:
    """Each test file (repository-relative) -> the reference_impls modules it names: dotted names and their
    parents, and ``parent.name`` for each word of a ``from parent import ...`` line."""
    folder = Path(tests_dir)
    if not folder.is_dir():
        return {}
    index = {}
    for path in sorted(folder.glob("test_*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        names = set()
        for dotted in _DOTTED.findall(text):
            parts = dotted.split(".")
            names.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
        for parent, imported in _FROM_IMPORT.findall(text):
            names.update(f"{parent}.{word}" for word in re.findall(r"\w+", imported))
        index[str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)] = names
    return index


def _tests_for(module: str, tests_dir: Path) -> list[str]:
    name = module.rpartition(".")[2]
    users = [path for path, names in _test_index(str(tests_dir)).items() if module in names]
    own = [path for path in users if re.search(rf"test_(?:\w+_)?{re.escape(name)}\.py$", path)]
    return own or users  # the module's own test file when it has one, else every test that imports it


def describe(ref: str, root: Path = REFERENCE_IMPLS_DIR, tests_dir: Path = TESTS_DIR) -> RefImpl:
    module, _, obj = ref.partition(":")
    path = _source_path(module, root)
    shown = None
    if path is not None:
        shown = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    return RefImpl(module, obj or None, shown, _docstring(path), _tests_for(module, tests_dir))


@dataclass
class BenchmarkResult:
    name: str  # file name
    device: str
    note: str
    text: str  # the JSON as it is (copied to the site)


def benchmark_results(folder: Path = RESULTS_DIR) -> list[BenchmarkResult]:
    """Every JSON result under benchmarks/results/ (CPU smoke runs and GPU runs alike), for the site to publish."""
    out = []
    for path in sorted(Path(folder).glob("*.json")) if Path(folder).is_dir() else []:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", path.name):
            continue  # a name the site would have to escape in a link
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            data = json.loads(text)
        except ValueError:
            continue
        info = data if isinstance(data, dict) else {}
        device = str(info.get("device") or info.get("gpu") or info.get("machine") or "")
        note = str(info.get("note") or info.get("benchmark") or "")
        out.append(BenchmarkResult(path.name, device, note, text))
    return out
