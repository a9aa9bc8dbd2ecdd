"""The reference implementations the catalogue links (``reference_impls: [reference_impls.prefill.fastv, ...]``):
their docstrings (as plain text) and tests, read from the source without importing torch; and the benchmark result
files the site publishes.

:func:`implementations` is the one place the site asks which implementations a paper has."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from tools.catalogue.paths import REFERENCE_IMPLS_DIR, ROOT

TESTS_DIR = ROOT / "tests" / "reference_impls"
RESULTS_DIR = ROOT / "benchmarks" / "results"


def implementations(paper) -> list[str]:
    """The reference implementations of a paper, as ``module[:object]`` references."""
    return list(paper.reference_impls)


@dataclass
class RefImpl:
    """A reference implementation as the site describes it: module, object, docstring, tests."""

    module: str  # reference_impls.prefill.fastv
    obj: str | None  # an object inside the module, when the entry names one
    path: str | None  # repository-relative path of the source, None when missing
    summary: str  # first paragraph of the module docstring
    tests: list[str] = field(default_factory=list)  # repository-relative test files that import it

    @property
    def ref(self) -> str:
        """The link as papers write it."""
        return f"{self.module}:{self.obj}" if self.obj else self.module

    @property
    def import_line(self) -> str:
        """The import a reader copies."""
        parent, _, name = self.module.rpartition(".")
        return f"from {parent} import {name}" if not self.obj else f"from {self.module} import {self.obj}"

    @property
    def help_command(self) -> str:
        """A shell line that prints its documentation (the object's, when the entry names one)."""
        return f'PYTHONPATH=. python -c "{self.import_line}; help({self.obj or self.module.rpartition(".")[2]})"'

    @property
    def test_command(self) -> str:
        """The command that runs the implementation's tests."""
        targets = " ".join(self.tests) if self.tests else "tests/reference_impls"
        return f"python -m pytest -q {targets}"


def _source_path(module: str, root: Path) -> Path | None:
    rel = Path(*module.split(".")[1:])
    base = root / rel
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


_ROLE = re.compile(r":(?:[a-z]+:)?[a-z]+:`~?([^`]+)`")  # :func:`x`, :py:class:`~a.B`
_LITERAL = re.compile(r"``(.+?)``|`([^`]+)`", re.DOTALL)
_SOURCE_TAG = re.compile(r"\s*\[(?:paper|code|design|impl)(?:-[a-z]+)*\]")  # [paper-abs], [code]: source markers


def docstring_text(doc: str) -> str:
    """A docstring's first paragraph as plain text: reST roles and literals lose their markup (``x`` -> x), source
    markers such as ``[paper-abs]`` go, `` -- `` becomes a dash, whitespace collapses."""
    first = doc.strip().split("\n\n", 1)[0]
    text = _ROLE.sub(lambda m: m.group(1).rpartition(".")[2] if m.group(0).find("~") >= 0 else m.group(1), first)
    text = _LITERAL.sub(lambda m: m.group(1) or m.group(2), text)
    text = _SOURCE_TAG.sub("", text)
    return " ".join(text.replace(" -- ", " – ").split())


def _parse(path: Path | None) -> ast.Module | None:
    if path is None:
        return None
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


def _object_docstring(module: str, obj: str, root: Path, hops: int = 3) -> str | None:
    """The docstring of class or function ``obj`` of ``module``, following ``from .x import obj`` re-exports."""
    tree = _parse(_source_path(module, root))
    if tree is None:
        return None
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == obj:
            return ast.get_docstring(node)
    for node in tree.body:
        if hops and isinstance(node, ast.ImportFrom) and any(a.name == obj for a in node.names):
            package = (
                module if (_source_path(module, root) or Path()).name == "__init__.py" else module.rpartition(".")[0]
            )
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            source = f"{base}.{node.module}" if node.level else node.module
            return _object_docstring(source or base, obj, root, hops - 1)
    return None


def _docstring(module: str, obj: str | None, root: Path) -> str:
    """The first paragraph of the docstring of ``obj`` (a class or function the module defines or re-exports) when
    it has one, else of the module, as plain text."""
    doc = _object_docstring(module, obj, root) if obj else None
    tree = _parse(_source_path(module, root))
    return docstring_text(doc or (ast.get_docstring(tree) if tree else None) or "")


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
    """The description of a reference implementation link, read from its source (no import)."""
    module, _, obj = ref.partition(":")
    path = _source_path(module, root)
    shown = None
    if path is not None:
        shown = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    return RefImpl(module, obj or None, shown, _docstring(module, obj or None, root), _tests_for(module, tests_dir))


@dataclass
class BenchmarkResult:
    """A committed benchmark result file shown on the site."""

    name: str  # path under benchmarks/results/ ("prefill_cpu_smoke.json", "campaign_h200/prefill.json")
    device: str
    note: str
    smoke: bool  # a smoke run (tiny shapes, usually on a CPU): it checks that the script runs, it measures nothing
    date: str
    text: str  # the JSON as it is (copied to the site)


def benchmark_results(folder: Path = RESULTS_DIR) -> list[BenchmarkResult]:
    """Every JSON result under benchmarks/results/ and its sub-folders (one per GPU campaign), for the site to
    publish: GPU runs first, then smoke runs."""
    folder = Path(folder)
    out = []
    for path in sorted(folder.rglob("*.json")) if folder.is_dir() else []:
        name = path.relative_to(folder).as_posix()
        if not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?", name):
            continue  # a name the site would have to escape in a link
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            data = json.loads(text)
        except ValueError:
            continue
        info = data if isinstance(data, dict) else {}
        device = str(info.get("device") or info.get("gpu") or info.get("machine") or "")
        note = str(info.get("note") or info.get("benchmark") or "")
        run = info.get("run") if isinstance(info.get("run"), dict) else {}
        date = str(run.get("date") or info.get("date") or "")[:10]
        smoke = info.get("smoke") is True
        out.append(BenchmarkResult(name, device, note, smoke, date, text))
    return sorted(out, key=lambda r: (r.smoke, r.name))
