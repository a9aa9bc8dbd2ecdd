"""The shape the catalogue tooling keeps (ARCHITECTURE.md): small modules and functions, and imports that only run
from a higher role to a lower one (cli -> commands -> arxiv / outputs -> catalogue)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = sorted((ROOT / "tools").rglob("*.py"))
#: role of each package of tools/, lowest first; a module may import its own role or a lower one
RANK = {"catalogue": 0, "arxiv": 1, "outputs": 1, "commands": 2, "cli": 3, "__main__": 3, "__init__": 0}


def _role(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(p for p in rel.parts if p != "__init__")


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tools"):
            yield node.module if node.module != "tools" else f"tools.{node.names[0].name}"
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("tools."))


@pytest.mark.parametrize("path", TOOLS, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_stay_small(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 500
    long = [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80
    ]
    assert long == []


def test_no_import_runs_upward():
    upward = []
    for path in TOOLS:
        here = _module(path)
        for target in _imports(path):
            if RANK[_role(target)] > RANK[_role(here)] or ({_role(here), _role(target)} == {"arxiv", "outputs"}):
                upward.append(f"{here} -> {target}")
    assert upward == []


def test_every_package_of_tools_has_a_role():
    roles = {_role(_module(p)) for p in TOOLS}
    assert roles <= set(RANK), roles - set(RANK)
