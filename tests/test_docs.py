"""The method docs cannot drift: Args sections match the constructors, citations of the method reference
resolve, and the README's "Add your own method" example runs as written."""

from __future__ import annotations

import inspect
import re
import subprocess
from pathlib import Path

import pytest
from helpers import load_script

import snnprune
from snnprune.methods import Pruner, ScheduledThresholdPruner
from snnprune.methods.base import _REGISTRY, _accepted_kwargs

ROOT = Path(__file__).resolve().parent.parent
METHODS_DOC = ROOT / "snnprune" / "docs" / "methods.md"


def _args_section(doc: str) -> list[str]:
    """Names documented in the ``Args:`` section of a Google-style docstring."""
    lines = inspect.cleandoc(doc).splitlines()
    if "Args:" not in lines:
        return []
    names = []
    for line in lines[lines.index("Args:") + 1 :]:
        if line and not line.startswith(" "):
            break  # next section (Raises:, Attributes:, ...)
        match = re.match(r"^    (\w+):", line)
        if match:
            names.append(match.group(1))
    return names


@pytest.mark.parametrize(
    "cls", [Pruner, ScheduledThresholdPruner, *_REGISTRY.values()], ids=lambda c: c.__name__
)
def test_args_sections_match_the_constructor(cls):
    documented = _args_section(cls.__doc__ or "")
    accepted = _accepted_kwargs(cls)
    assert len(documented) == len(set(documented)), f"{cls.__name__}: an option is documented twice"
    assert set(documented) == accepted, (
        f"{cls.__name__}: Args documents {sorted(documented)}, the constructor accepts {sorted(accepted)}"
    )


def _tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [ROOT / f for f in out.stdout.splitlines() if (ROOT / f).is_file()]


def test_method_reference_citations_resolve():
    headings = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\b", METHODS_DOC.read_text(), flags=re.M))
    cited = 0
    for path in _tracked_files():
        if path.suffix not in (".py", ".md", ".yaml", ".yml", ".toml", ".txt"):
            continue
        text = path.read_text(errors="replace")
        for match in re.finditer(r"(\S*)methods\.md", text):
            if path in (METHODS_DOC, Path(__file__).resolve()):
                continue
            assert match.group(1).endswith("snnprune/docs/"), (
                f"{path.relative_to(ROOT)} cites {match.group(0)!r}"
            )
            cited += 1
            section = re.match(r"\W*(?:sections?\s+|§)?(\d+(?:\.\d+)?)", text[match.end() : match.end() + 30])
            if section:
                assert section.group(1) in headings, (
                    f"{path.relative_to(ROOT)} cites methods.md {section.group(1)}, which is not a heading"
                )
    assert cited > 0


def _readme_block(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {title}", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_readme_add_your_own_method_runs_as_written(tmp_path):
    code = _readme_block("Add your own method")
    assert 20 <= len(code.strip().splitlines()) <= 45
    names_before = set(_REGISTRY)
    try:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
        (new,) = set(_REGISTRY) - names_before
        assert new in snnprune.list_methods()
        # the registered method trains through the SNN training script, like any built-in one
        sew = load_script("train_sew")
        res = sew.main(
            ["--method", new, "--final-threshold", "0.05", "--width", "8", "--epochs", "1", "--batch-size", "16",
             "--limit-train-batches", "2", "--limit-test-batches", "1", "--analyze-batches", "1", "--T", "2",
             "--quiet", "--output-dir", str(tmp_path)]
        )  # fmt: skip
        assert res["threshold"] == pytest.approx(0.05) and res["sparsity"] > 0
    finally:
        for name in set(_REGISTRY) - names_before:
            del _REGISTRY[name]
