"""Shared pytest configuration.

Must import neither pydantic nor torch at module level: the GPU machine runs
`PYTHONPATH=. python -m pytest -m gpu tests/reference_impls` with torch and triton only,
and the catalogue tests run without torch.
"""

import importlib.util

import pytest


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
