"""Where things live in the repository (one place, so tools and tests agree)."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAPERS_DIR = ROOT / "papers"
TAXONOMY_PATH = ROOT / "taxonomy.yaml"
SCHEMA_PATH = ROOT / "schema" / "paper.schema.json"
REFERENCE_IMPLS_DIR = ROOT / "reference_impls"
SHARED_DIR = ROOT.parent / "shared"
# The schema comment every paper file starts with (relative to papers/).
SCHEMA_COMMENT = "# yaml-language-server: $schema=../schema/paper.schema.json"


_ROOT_PREFIX = str(ROOT) + os.sep


def display_path(path: Path) -> str:
    """A path as users see it in messages: relative to the repository root when inside it."""
    absolute = os.path.abspath(path)
    return absolute[len(_ROOT_PREFIX) :] if absolute.startswith(_ROOT_PREFIX) else str(path)
