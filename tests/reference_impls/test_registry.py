"""The registry (``reference_impls/registry.py``): every entry points at a technique that exists, carries the
taxonomy ids of ``taxonomy.yaml``, valid hosts and settings its class accepts; it imports without torch/pydantic."""

import dataclasses
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reference_impls import registry
from reference_impls.technique import Technique

ROOT = Path(__file__).resolve().parents[2]
TAXONOMY = yaml.safe_load((ROOT / "taxonomy.yaml").read_text(encoding="utf-8"))


def test_imports_without_torch_pydantic_or_the_catalogue_tooling():
    script = (
        "import sys\nfor name in ('torch', 'pydantic', 'tools', 'transformers'):\n    sys.modules[name] = None\n"
        "from reference_impls import registry\nprint(len(registry.ENTRIES))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(registry.ENTRIES)


@pytest.mark.parametrize("entry", registry.ENTRIES, ids=lambda e: e.name)
def test_entry_is_consistent(entry):
    techniques = {t["id"]: t for t in TAXONOMY["techniques"]}
    assert entry.technique in techniques, entry.technique
    assert entry.cell in techniques[entry.technique]["cells"], (entry.technique, entry.cell)
    assert all(h in registry.ALL_HOSTS for h in entry.hosts)
    assert all(a.count(".") == 1 and a.replace(".", "").isdigit() for a in entry.arxiv)
    assert entry.note or entry.hosts, "an entry without hosts says what it is"
    obj = registry.load(entry)
    for spec in entry.spec:
        module, _, name = spec.partition(":")
        assert callable(getattr(importlib.import_module(module), name)), spec
    if not entry.hosts:
        return
    assert isinstance(obj, type) and issubclass(obj, Technique) and dataclasses.is_dataclass(obj)
    assert obj.name == entry.name and obj.stage in ("decoder", "kv", "encoder", "weights", "decoding")
    for setting in (entry.identity, entry.compress):
        if setting is not None:
            assert isinstance(obj(**setting), obj)


def test_names_are_unique_and_links_resolve():
    assert len(registry.REGISTRY) == len(registry.ENTRIES)
    assert registry.for_link("reference_impls.prefill.fastv").name == "fastv"
    assert registry.for_link("reference_impls.prefill.fastv:FastV").name == "fastv"
    assert registry.for_link("reference_impls.prefill.fastv:naive_fastv_keep").name == "fastv"
    assert registry.for_link("reference_impls.prefill.fastv:Nothing") is None
    with pytest.raises(ValueError, match="unknown technique 'nope'; known: "):
        registry.get("nope")
