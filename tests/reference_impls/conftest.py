"""Fixtures of the reference-implementation tests."""

import pytest


@pytest.fixture(scope="module")
def single_torch_thread():
    """``torch_threads(1)`` for a whole module; a module asks for it with
    ``pytestmark = pytest.mark.usefixtures("single_torch_thread")``."""
    from tests.reference_impls._utils import torch_threads

    with torch_threads(1):
        yield
