"""Fixtures shared by the test modules: the two training scripts, loaded as modules."""

from __future__ import annotations

from types import ModuleType

import pytest
from helpers import load_script


@pytest.fixture(scope="module")
def sew() -> ModuleType:
    """``scripts/train_sew.py``."""
    return load_script("train_sew")


@pytest.fixture(scope="module")
def ann() -> ModuleType:
    """``scripts/train_ann.py``."""
    return load_script("train_ann")
