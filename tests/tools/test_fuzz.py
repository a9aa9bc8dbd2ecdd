"""Property-based fuzzing: mutated entries either validate or give clear problems; no exception escapes."""

from __future__ import annotations

import copy
import datetime as dt
import os
import re
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tools._entries import VALID
from tools.catalogue.problems import Problem
from tools.catalogue.schema import FIELD_ORDER
from tools.catalogue.taxonomy import load_taxonomy
from tools.catalogue.validate import paper_files, validate_catalogue, validate_file
from tools.catalogue.yamlio import dump_entry

TAX = load_taxonomy()
FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2200, 1, 1)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=8,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


ALL_PATHS = [p for p in _paths(VALID) if p]


@st.composite
def mutated_entries(draw):
    data = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(ALL_PATHS))
        parent = data
        try:
            for part in path[:-1]:
                parent = parent[part]
        except (KeyError, IndexError, TypeError):
            continue
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        last = path[-1]
        try:
            if action == "replace":
                parent[last] = draw(values)
            elif action == "delete":
                del parent[last]
            elif isinstance(parent, dict):
                parent[draw(st.sampled_from(FIELD_ORDER + ["extra", "Title", "authros"]))] = draw(values)
        except (KeyError, IndexError, TypeError):
            continue
    return data


def _check(problems, paper):
    assert (paper is None) == bool(problems) or (paper is not None and problems)
    for p in problems:
        assert isinstance(p, Problem) and p.line >= 1 and p.message and p.file


@FUZZ
@given(mutated_entries())
def test_mutated_entries_validate_or_fail_clearly(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "fastv-2024.yaml"
    path.write_text(dump_entry(data), encoding="utf-8")
    paper, _, problems = validate_file(path, TAX)
    _check(problems, paper)
    if paper is None:
        assert all(p.file.endswith("fastv-2024.yaml") for p in problems)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_corrupted_text_never_raises(tmp_path_factory, data):
    text = dump_entry(VALID).encode("utf-8")
    pos = data.draw(st.integers(0, len(text)))
    junk = data.draw(st.binary(min_size=1, max_size=8) | st.sampled_from([b"\t", b":", b"- ", b"\n  ", b'"', b"{"]))
    cut = data.draw(st.integers(0, 6))
    corrupted = text[:pos] + junk + text[pos + cut :]
    path = tmp_path_factory.mktemp("corrupt") / "fastv-2024.yaml"
    path.write_bytes(corrupted)
    paper, _, problems = validate_file(path, TAX)
    _check(problems, paper)


ANCHOR_MESSAGE = re.compile(r"^YAML (anchors \(&name\)|aliases \(\*name\)) are not allowed in the catalogue's files")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_anchors_and_aliases_anywhere_give_one_line_fast(tmp_path_factory, data):
    """An anchor on one value and aliases to it elsewhere (an alias bomb when nested): one problem, no expansion."""
    lines = dump_entry(VALID).splitlines()
    values = [i for i, line in enumerate(lines) if re.match(r"^\s*[a-z_]+: \S", line)]
    anchored = data.draw(st.sampled_from(values))
    lines[anchored] = re.sub(r": ", ": &v ", lines[anchored], count=1)
    for i in data.draw(st.lists(st.sampled_from(values), max_size=3)):
        if i != anchored:
            lines[i] = re.sub(r": .*$", ": *v", lines[i], count=1)
    depth, width = data.draw(st.integers(0, 12)), data.draw(st.integers(1, 12))
    bomb = [f"b{d}: &b{d} [{', '.join([f'*b{d - 1}' if d else '1'] * width)}]" for d in range(depth)]
    path = tmp_path_factory.mktemp("alias") / "fastv-2024.yaml"
    path.write_text("\n".join(lines + bomb) + "\n", encoding="utf-8")
    start = time.monotonic()
    paper, _, problems = validate_file(path, TAX)
    assert time.monotonic() - start < 2
    assert paper is None and len(problems) == 1 and problems[0].line >= 1
    assert ANCHOR_MESSAGE.match(problems[0].message), problems[0].message


DISTINCT_TITLES = [
    "Pruning visual tokens by attention",
    "Speculative decoding with draft trees",
    "Quantized key value caches for video",
    "Merging frames before the encoder",
    "Sparse attention kernels on long prompts",
    "Early exit in multimodal decoders",
]
SPECIAL_KINDS = ["valid", "fifo", "dangling", "outside", "directory", "zero", "yml", "bomb"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(SPECIAL_KINDS), min_size=1, max_size=6))
def test_any_mix_of_special_entries_gives_one_problem_each_and_loads_the_rest(tmp_path_factory, kinds):
    folder = tmp_path_factory.mktemp("papers")
    expected_valid = set()
    for i, kind in enumerate(kinds):
        path = folder / f"entry-{i}-2024.yaml"
        if kind == "valid":
            title = DISTINCT_TITLES[i]
            data = dict(copy.deepcopy(VALID), id=f"entry-{i}-2024", arxiv=f"2401.0000{i}", title=title, doi=None)
            path.write_text(dump_entry(data), encoding="utf-8")
            expected_valid.add(data["id"])
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "dangling":
            path.symlink_to(folder / "missing")
        elif kind == "outside":
            path.symlink_to("/etc/hostname" if os.path.exists("/etc/hostname") else "/etc/passwd")
        elif kind == "directory":
            path.mkdir()
        elif kind == "zero":
            path.symlink_to("/dev/zero")
        elif kind == "yml":
            path.with_suffix(".yml").write_text(dump_entry(VALID), encoding="utf-8")
        elif kind == "bomb":
            path.write_text('a: &a ["x","x"]\nb: [*a,*a,*a]\n', encoding="utf-8")
    start = time.monotonic()
    cat = validate_catalogue(paper_files(folder), TAX)
    assert time.monotonic() - start < 5
    assert set(cat.papers) == expected_valid
    special = len(kinds) - len(expected_valid)
    assert len(cat.problems) == special and len({p.file for p in cat.problems}) == special
    assert all(p.line == 1 and p.message for p in cat.problems)
