"""Property-based fuzzing: mutated entries either validate or give clear problems; no exception escapes."""
from __future__ import annotations

import copy
import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.catalogue.helpers import VALID
from tools.problems import Problem
from tools.schema import FIELD_ORDER
from tools.taxonomy import load_taxonomy
from tools.validate import validate_file
from tools.yamlio import dump_entry

TAX = load_taxonomy()
FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40), st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2200, 1, 1)),
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
    corrupted = text[:pos] + junk + text[pos + cut:]
    path = tmp_path_factory.mktemp("corrupt") / "fastv-2024.yaml"
    path.write_bytes(corrupted)
    paper, _, problems = validate_file(path, TAX)
    _check(problems, paper)
