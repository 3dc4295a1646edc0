"""Fixtures shared by the test modules: a hermetic working directory, the two training scripts, loaded
as modules, and a time limit for the tests that re-import NIR graphs."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from types import ModuleType

import pytest
from helpers import ROOT, load_script


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The README walk (``tests/test_docs.py``) runs first: its first block is the quick start, which a
    newcomer runs before the suite."""
    walk = [item for item in items if item.originalname == "test_readme_walk"]
    items[:] = walk + [item for item in items if item.originalname != "test_readme_walk"]


@pytest.fixture(scope="session", autouse=True)
def hermetic_workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test runs in an empty temporary folder: nothing a test writes by default (``./runs``) lands in
    the checkout, and nothing in the checkout's working directory is read. Subprocesses import this
    checkout (``PYTHONPATH``), as ``python -c`` did from the repository root."""
    cwd, pythonpath = os.getcwd(), os.environ.get("PYTHONPATH")
    os.chdir(tmp_path_factory.mktemp("workdir"))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), pythonpath) if p)
    try:
        yield
    finally:
        os.chdir(cwd)
        if pythonpath is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = pythonpath


@pytest.fixture(scope="module")
def sew() -> ModuleType:
    """``scripts/train_sew.py``."""
    return load_script("train_sew")


@pytest.fixture(scope="module")
def ann() -> ModuleType:
    """``scripts/train_ann.py``."""
    return load_script("train_ann")


#: Seconds a test that uses :func:`nir_time_limit` may run: three times the ~20 s of the slowest one (the slow
#: mark's bound; the others took up to 16 s on a loaded 2-core machine, 3 s or less on a shared one).
NIR_TEST_SECONDS = 60


@pytest.fixture
def nir_time_limit(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test after :data:`NIR_TEST_SECONDS`: a wiring bug can make an importer's graph walk
    (nirtorch's queue loops) spin forever. The failure is pytest's, a ``BaseException``, so the
    ``except Exception`` that turns a framework's error into a row of ``verify_nir`` cannot swallow it."""

    def expire(signum: int, frame: object) -> None:
        pytest.fail(f"{request.node.name} ran over {NIR_TEST_SECONDS} s: a NIR graph that never finishes")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, NIR_TEST_SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
