"""Reading and writing the catalogue's YAML safely.

Reading: only regular files (a symbolic link only when its target is one, inside the repository), at most the size
limit plus one byte, UTF-8 only, libyaml's C parser when present, duplicate keys, anchors and aliases rejected, and
the line of every node remembered so that errors name ``file:line: field``. Writing: one fixed layout, atomically
(temporary file + rename), so a failing tool never leaves a partial file; ``write_all_or_nothing`` does the same for
a set of files.
"""

from __future__ import annotations

import os
import signal
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any

import yaml

from tools.catalogue.paths import ROOT, SCHEMA_COMMENT, display_path
from tools.catalogue.problems import Problem, ProblemError

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
                    (k, v)
                    for k, v in pairs
                    if k.__class__ is yaml.ScalarNode
                    and k.tag == _STR_TAG
                    and not (k.value in seen or seen.add(k.value))
                ]
        return super().construct_mapping(node, deep=deep)


Path_ = tuple  # a path into the document: keys and list indices


def _hint_for(problem: str, line_text: str) -> str:
    if "\t" in line_text or "tab" in problem.lower():
        return " (this line contains a tab: YAML does not allow tabs for indentation, use spaces)"
    return ""


_FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a named pipe",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def read_regular_file(path: Path, limit: int | None = None) -> bytes:
    """The bytes of ``path``, at most ``limit``; raises ProblemError (one problem) for anything else.

    Only a regular file is read; a symbolic link is followed only to a regular file inside the repository (or, for
    a folder outside the repository, inside that folder). At most ``limit + 1`` bytes are read, and the file is
    opened without blocking, so a named pipe or a device can neither hang nor exhaust memory.
    """
    limit = MAX_FILE_BYTES if limit is None else limit
    shown = display_path(path)

    def problem(message: str) -> ProblemError:
        return ProblemError([Problem(shown, 1, "", message)])

    absolute = os.path.abspath(path)
    is_link = os.path.islink(absolute)
    if is_link:
        folder = os.path.realpath(os.path.dirname(absolute))
        home = str(ROOT) if _inside(folder, str(ROOT)) else folder
        target = os.path.realpath(absolute)
        if not os.path.exists(target):
            raise problem(f"a symbolic link to {os.readlink(absolute)}, which does not exist")
        if not _inside(target, home):
            where = "the repository" if home == str(ROOT) else display_path(home)
            raise problem(f"a symbolic link to {target}, outside {where}: only files inside it are read")
    try:
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        if not is_link:  # not one a moment ago: it must not have become one since
            flags |= getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(absolute, flags)
    except OSError as exc:
        raise problem(f"cannot read the file: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _FILE_KINDS.get(stat.S_IFMT(info.st_mode), "a special file")
            link = "a symbolic link to " if is_link else ""
            raise problem(f"{link}{kind}, not a regular file: only regular files are read")
        if info.st_size > limit:
            raise problem(f"file is {info.st_size} bytes; the limit is {limit}")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        raw = b"".join(chunks)
    except OSError as exc:
        raise problem(f"cannot read the file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(raw) > limit:
        raise problem(f"file is more than {limit} bytes; the limit is {limit}")
    return raw


def load_yaml_with_lines(path: Path, text: str | None = None) -> tuple[Any, "NodeLines | dict"]:
    """Load one YAML document; return (data, {path-into-document: 1-based line}).

    Raises ProblemError with a clear message for unreadable input: not a regular file, not UTF-8, too large, a syntax
    error, a control character, a duplicate key, an anchor or alias, or more than one document.
    """
    shown = display_path(path)
    if text is None:
        raw = read_regular_file(path)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise ProblemError(
                [Problem(shown, line, "", f"not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8")]
            ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    alias_line = _first_anchor_or_alias(text)
    if alias_line:
        line, what = alias_line
        raise ProblemError(
            [
                Problem(
                    shown,
                    line,
                    "",
                    f"YAML {what} are not allowed in the catalogue's files; write the value out in full",
                )
            ]
        )
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
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, other control characters)
        line = text.count("\n", 0, exc.position) + 1
        raise ProblemError(
            [
                Problem(
                    shown,
                    line,
                    "",
                    f"the character U+{exc.character:04X} is not allowed in YAML (a control character): remove it",
                )
            ]
        ) from None
    except yaml.YAMLError as exc:
        raise ProblemError([Problem(shown, 1, "", f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()
    return data, NodeLines(text)


def _first_anchor_or_alias(text: str) -> tuple[int, str] | None:
    """(line, "anchors (&name)" or "aliases (*name)") of the first anchor or alias in ``text``, else None.

    Aliases let a few hundred bytes expand into a tree too large for memory, so the catalogue allows neither. Only
    texts with a '&' or '*' are parsed for this (the events, not the tree); a syntax error is left to the loader.
    """
    if "&" not in text and "*" not in text:
        return None
    loader = _BaseLoader(text)
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.AliasEvent):
                return event.start_mark.line + 1, "aliases (*name)"
            if getattr(event, "anchor", None) is not None:
                return event.start_mark.line + 1, "anchors (&name)"
    except yaml.YAMLError:
        return None
    finally:
        loader.dispose()
    return None


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
            problems.append(
                (line, key_node.value, f"duplicate key (first defined on line {first_line[key_node.value]})")
            )
        else:
            first_line[key_node.value] = line
    return problems


class NodeLines:
    """{path into the document: 1-based line}, computed only when a line is asked for (errors are rare); also the
    source text of each scalar (``scalar_text``: ``2403.10`` as written, not the float 2403.1).

    Keeps the text, not the node tree: thousands of retained node trees make Python's garbage collector crawl.
    """

    def __init__(self, text: str):
        self._text = text
        self._lines = None
        self._scalars: dict = {}

    def scalar_text(self, path) -> str | None:
        """The source text of the scalar at ``path``, or None."""
        self._table()
        return self._scalars.get(tuple(path))

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
                if isinstance(node, yaml.ScalarNode):
                    self._scalars[path] = node.value
                elif isinstance(node, yaml.MappingNode):
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
        """The line of the node at ``path``, or ``default``."""
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
    def ignore_aliases(self, data):  # the reader rejects aliases: never write one
        return True

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
    """YAML text of ``data`` in the catalogue's style (strings quoted, short lists inline)."""
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


def write_all_or_nothing(files: list[tuple[Path, str]]) -> bool:
    """Write every ``(path, text)`` or none of them, even when Ctrl-C is pressed.

    Each text is first staged in a temporary file beside its target; a Ctrl-C (or any error) while staging removes
    the staged files and changes nothing. Then the staged files are renamed over their targets with Ctrl-C held
    back until the last rename. Returns True when a Ctrl-C arrived during the renames (every file was written).
    A power cut during the renames can still leave some files old and some new; each file is always whole.
    """
    staged: list[tuple[str, Path]] = []
    try:
        for path, text in files:
            path = Path(path)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((tmp, path))
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(text)
            os.chmod(tmp, 0o644)
    except BaseException:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        raise
    interrupted: list[int] = []
    hold_back = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if hold_back else None
    if hold_back:
        signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    renamed = 0
    try:
        for tmp, path in staged:
            os.replace(tmp, path)
            renamed += 1
    finally:
        for tmp, _ in staged[renamed:]:  # only after an error
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if hold_back:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    return bool(interrupted)
