"""Fixtures shared by the test modules: the two training scripts, loaded as modules."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(f"_snnprune_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sew() -> ModuleType:
    """``scripts/train_sew.py``."""
    return load_script("train_sew")


@pytest.fixture(scope="module")
def ann() -> ModuleType:
    """``scripts/train_ann.py``."""
    return load_script("train_ann")
