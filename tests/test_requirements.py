"""The lock in requirements/ matches pyproject.toml: every declared requirement is pinned to a version it allows,
site.txt agrees with all.txt, and no CUDA package is locked (the CPU build of torch is installed first).

Run `make lock` after changing a dependency; these tests catch a forgotten one without the network.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "requirements"


def pins(name: str) -> dict[str, str]:
    out = {}
    for line in (LOCKS / name).read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==(\S+)$", line.strip())
        if match:
            out[canonicalize_name(match[1])] = match[2]
    return out


def declared(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


ALL_EXTRAS = ("site", "kernels", "adapters", "dev")


@pytest.mark.parametrize("lock, extras", [("all.txt", ALL_EXTRAS), ("site.txt", ("site",))])
def test_every_declared_requirement_is_locked_within_its_range(lock, extras):
    locked = pins(lock)
    problems = []
    for req in declared(*extras):
        version = locked.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{req.name} is not in requirements/{lock}")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req.name}=={version} is outside {req}")
    assert problems == [], "run `make lock`: " + "; ".join(problems)


def test_site_lock_agrees_with_the_full_lock_and_has_no_torch():
    site, full = pins("site.txt"), pins("all.txt")
    assert {name: version for name, version in site.items() if full.get(name) != version} == {}
    assert "torch" not in site and "transformers" not in site


def test_no_cuda_package_is_locked():
    for lock in ("all.txt", "site.txt", "transformers-gpu.txt"):
        cuda = [name for name in pins(lock) if name.startswith(("nvidia-", "cuda-"))]
        assert cuda == [], f"requirements/{lock} locks CUDA packages {cuda}"


def test_the_gpu_transformers_release_is_within_the_declared_range():
    (adapters,) = [r for r in declared("adapters") if r.name == "transformers"]
    gpu = pins("transformers-gpu.txt")["transformers"]
    assert adapters.specifier.contains(gpu)
    assert pins("all.txt")["transformers"] != gpu  # a second release, else the second run tests nothing new
