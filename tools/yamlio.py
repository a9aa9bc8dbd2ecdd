"""Reading and writing the catalogue's YAML safely.

Reading: UTF-8 only, a size limit, libyaml's C parser when present, duplicate keys rejected, and the line of every
node remembered so that errors name ``file:line: field``. Writing: one fixed layout, atomically (temporary file +
rename), so a failing tool never leaves a partial file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tools.paths import SCHEMA_COMMENT, display_path
from tools.problems import Problem, ProblemError

try:  # libyaml's C loader is much faster; fall back to the pure-Python one.
    _BaseLoader = yaml.CSafeLoader  # type: ignore[attr-defined]
except AttributeError:  # pragma: no cover - depends on the PyYAML build
    _BaseLoader = yaml.SafeLoader

MAX_FILE_BYTES = 256 * 1024
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _CheckingLoader(_BaseLoader):
    """The safe loader, plus key checks done while mappings are constructed (no second walk over the tree):
    duplicate keys, merge keys (<<) and non-string keys are collected in ``key_problems`` as (line, key, message)."""

    def __init__(self, stream):
        super().__init__(stream)
        self.key_problems: list[tuple[int, str, str]] = []

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            pairs = node.value
            if any(k.__class__ is not yaml.ScalarNode or k.tag != _STR_TAG for k, _ in pairs) or len(
                {k.value for k, _ in pairs}
            ) != len(pairs):
                self.key_problems.extend(_bad_keys(node))
                # keep only well-formed, first-seen keys so construction can go on and report everything
                seen: set = set()
                node.value = [
                    (k, v) for k, v in pairs
                    if k.__class__ is yaml.ScalarNode and k.tag == _STR_TAG and not (k.value in seen or seen.add(k.value))
                ]
        return super().construct_mapping(node, deep=deep)

Path_ = tuple  # a path into the document: keys and list indices


def _hint_for(problem: str, line_text: str) -> str:
    if "\t" in line_text or "tab" in problem.lower():
        return " (this line contains a tab: YAML does not allow tabs for indentation, use spaces)"
    return ""


def load_yaml_with_lines(path: Path, text: str | None = None) -> tuple[Any, "NodeLines | dict"]:
    """Load one YAML document; return (data, {path-into-document: 1-based line}).

    Raises ProblemError with a clear message for unreadable input: not UTF-8, too large, a syntax error, a duplicate
    key, or more than one document.
    """
    shown = display_path(path)
    if text is None:
        raw = Path(path).read_bytes()
        if len(raw) > MAX_FILE_BYTES:
            raise ProblemError([Problem(shown, 1, "", f"file is {len(raw)} bytes; the limit is {MAX_FILE_BYTES}")])
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise ProblemError(
                [Problem(shown, line, "", f"not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8")]
            ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    loader = _CheckingLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        data = loader.construct_document(node)
        if loader.key_problems:
            raise ProblemError(sorted(Problem(shown, line, key, msg) for line, key, msg in loader.key_problems))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = exc.problem or str(exc)
        all_lines = text.splitlines()
        line_text = all_lines[line - 1] if 0 < line <= len(all_lines) else ""
        hint = _hint_for(problem, line_text)
        raise ProblemError([Problem(shown, line, "", f"YAML syntax error: {problem}{hint}")]) from None
    except yaml.YAMLError as exc:
        raise ProblemError([Problem(shown, 1, "", f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()
    return data, NodeLines(text)


def _bad_keys(node) -> list[tuple[int, str, str]]:
    problems = []
    first_line: dict[str, int] = {}
    for key_node, _ in node.value:
        line = key_node.start_mark.line + 1
        if key_node.tag == _MERGE_TAG:
            problems.append((line, "", "YAML merge keys (<<) are not allowed"))
        elif not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
            problems.append((line, str(getattr(key_node, "value", "")), "keys must be strings (quote this key)"))
        elif key_node.value in first_line:
            problems.append((line, key_node.value, f"duplicate key (first defined on line {first_line[key_node.value]})"))
        else:
            first_line[key_node.value] = line
    return problems


class NodeLines:
    """{path into the document: 1-based line}, computed only when a line is asked for (errors are rare).

    Keeps the text, not the node tree: thousands of retained node trees make Python's garbage collector crawl.
    """

    def __init__(self, text: str):
        self._text = text
        self._lines = None

    def _table(self) -> dict:
        if self._lines is None:
            lines: dict = {}
            loader = _BaseLoader(self._text)
            try:
                root = loader.get_single_node()
            finally:
                loader.dispose()
            stack = [((), root)]
            while stack:
                path, node = stack.pop()
                lines.setdefault(path, node.start_mark.line + 1)
                if isinstance(node, yaml.MappingNode):
                    for key_node, value_node in node.value:
                        key = key_node.value
                        lines[path + (key,)] = key_node.start_mark.line + 1
                        stack.append((path + (key,), value_node))
                elif isinstance(node, yaml.SequenceNode):
                    stack.extend((path + (i,), item) for i, item in enumerate(node.value))
            self._lines = lines
        return self._lines

    def __contains__(self, path) -> bool:
        return path in self._table()

    def __getitem__(self, path) -> int:
        return self._table()[path]

    def get(self, path, default=None):
        return self._table().get(path, default)


def line_of(lines: dict[Path_, int], loc: tuple) -> int:
    """The line of the deepest existing node on the path ``loc`` (1 if none)."""
    loc = tuple(loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get((), 1)


# ----------------------------------------------------------------------------------------------------------- writing
class _Dumper(yaml.SafeDumper):
    def represent_mapping(self, tag, mapping, flow_style=None):
        node = super().represent_mapping(tag, mapping, flow_style)
        for key_node, _ in node.value:  # keys stay plain
            key_node.style = None
        return node


def _str_representer(dumper, value: str):
    # Every string value is double-quoted (yamllint quoted-strings): no YAML type trap can touch it.
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')


_Dumper.add_representer(str, _str_representer)


def _flow_short_lists(dumper, value: list):
    flow = all(isinstance(v, (str, int, float)) for v in value) and sum(len(str(v)) for v in value) < 60
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


_Dumper.add_representer(list, _flow_short_lists)


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120, default_flow_style=False)


def dump_entry(data: dict) -> str:
    """The text of a paper file: the schema comment line, then the entry in its canonical key order."""
    return f"{SCHEMA_COMMENT}\n{dump_yaml(data)}"


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and a rename: all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
