"""Shared fixtures: an isolated JIT cache and small models built from the public DSL."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test session compiles into its own cache folder."""
    os.environ["NNCOMPILE_CACHE_DIR"] = str(tmp_path_factory.mktemp("nncompile-cache"))


@pytest.fixture
def python() -> str:
    return sys.executable
