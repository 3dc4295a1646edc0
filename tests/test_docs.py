"""The docs cannot drift: Args sections match the constructors, citations of the method reference
resolve, the README's "Add your own method" example runs as written, the README stays a short front door
whose API names exist, every link of the docs resolves, every measured table in docs/ has the command
that makes it, and no text narrates the project's history."""

from __future__ import annotations

import importlib
import inspect
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import load_script

import snnprune
from snnprune.methods import Pruner, ScheduledThresholdPruner, method_kwargs, unregister_method

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
    "cls",
    [Pruner, ScheduledThresholdPruner, *map(snnprune.get_method, snnprune.list_methods())],
    ids=lambda c: c.__name__,
)
def test_args_sections_match_the_constructor(cls):
    documented = _args_section(cls.__doc__ or "")
    accepted = method_kwargs(cls)
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
    names_before = set(snnprune.list_methods())
    try:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
        (new,) = set(snnprune.list_methods()) - names_before
        assert new in snnprune.list_methods() and snnprune.get_method(new).__name__ == "ExponentialThreshold"
        # the registered method trains through the SNN training script, like any built-in one
        sew = load_script("train_sew")
        res = sew.main(
            ["--method", new, "--final-threshold", "0.05", "--width", "8", "--epochs", "1", "--batch-size", "16",
             "--limit-train-batches", "2", "--limit-test-batches", "1", "--analyze-batches", "1", "--T", "2",
             "--quiet", "--output-dir", str(tmp_path)]
        )  # fmt: skip
        assert res["threshold"] == pytest.approx(0.05) and res["sparsity"] > 0
    finally:
        for name in set(snnprune.list_methods()) - names_before:
            unregister_method(name)


# ------------------------------------------------------------------------------------------ the README walk
# Every fenced block of the README, in order, as a newcomer pastes it: in a folder that stands for a fresh
# checkout (its scripts/ is the checkout's; runs/ and figures/ are its own), each Python block in a fresh
# interpreter, each shell command with a suffix that shortens the training. Not run: the install (the suite
# runs in the installed environment), `ruff` and `python -m pytest` (the suite itself).
SHORT_RUN = "--epochs 1 --limit-train-batches 1 --limit-test-batches 1 --analyze-batches 1"
SHORT_STOP = SHORT_RUN.replace("--epochs 1", "--epochs 5")  # a run stopped after epoch 3, then resumed
SHORT_SWEEP = (
    "--kinds snn ann --methods dense --epochs 1 --limit-train-batches 1 "
    "--extra='--limit-test-batches 1 --analyze-batches 1'"
)
NOT_RUN = re.compile(r"^(python3 -m venv|\. \.venv|pip install|ruff|python -m pytest)")


def _readme_blocks() -> list[tuple[int, str, str]]:
    """(line, language, text) of every fenced bash/python block of the README, in order."""
    text = (ROOT / "README.md").read_text()
    return [
        (text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2))
        for m in re.finditer(r"^```(bash|python)\n(.*?)^```", text, flags=re.S | re.M)
    ]


def _commands(block: str) -> list[str]:
    """The shell commands of a bash block: continuation lines joined, comments dropped, ``&&`` chains split,
    the install and lint steps left out; each training command with its shortening suffix."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        for part in re.sub(r"\s+#\s.*$", "", line).split(" && "):
            part = part.strip()
            if not part or NOT_RUN.match(part):
                continue
            suffix = SHORT_SWEEP if "sweep.py" in part else "" if "make_figures.py" in part else SHORT_RUN
            if "--stop-after-epoch" in part or "--resume" in part:
                suffix = SHORT_STOP
            commands.append(f"{shlex.quote(sys.executable)} {part.removeprefix('python ')} {suffix}".strip())
    return commands


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that stands for a fresh checkout: the repository's scripts/, nothing else yet."""
    folder = tmp_path_factory.mktemp("checkout")
    (folder / "scripts").symlink_to(ROOT / "scripts", target_is_directory=True)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(
    ("line", "language", "block"), _readme_blocks(), ids=[f"README.md:{n}" for n, _, _ in _readme_blocks()]
)
def test_readme_walk(checkout, line, language, block):
    """Each block exits 0; the ImageNet recipe (no data here) with the one-line refusal naming the data path."""
    if language == "python":
        name = "my_method.py" if "register_method" in block else f"readme_{line}.py"  # the README's name
        (checkout / name).write_text(block)
        commands = [f"{shlex.quote(sys.executable)} {name}"]
    else:
        commands = _commands(block)
    for command in commands:
        # exec: the shell becomes the command, so a timeout kills the command itself
        out = subprocess.run(
            f"exec {command}", shell=True, cwd=checkout, capture_output=True, text=True, timeout=600
        )
        where = f"README.md:{line}: {command}\n{out.stdout[-2000:]}{out.stderr[-3000:]}"
        if "/data/imagenet" in command:
            err = out.stderr.strip().splitlines()
            assert out.returncode == 2 and len(err) == 1 and err[0].startswith("error: "), where
            assert "--data-path: " in err[0] and "/data/imagenet" in err[0], where
            if not torch.cuda.is_available():  # the recipe's --amp fp16 too, in the same line
                assert "--amp: fp16 needs a CUDA device" in err[0], where
        else:
            assert out.returncode == 0, where


def test_readme_walk_runs_every_block():
    """The walk sees every block: the quick start first; every other training command names its own run
    (a resumed one its stopped run's), so no example collides with the quick start or another."""
    blocks = _readme_blocks()
    commands = [c for _, language, b in blocks if language == "bash" for c in _commands(b)]
    assert commands[0].endswith("scripts/train_sew.py --method lats " + SHORT_RUN)
    training = [c for c in commands if "scripts/train_" in c or "train_sew import main" in c]
    assert len(training) == 10 and "--run-name" not in training[0]
    names = [re.search(r"--run-name (\S+)", c).group(1) for c in training[1:]]
    resumed = [c for c in training if "--resume auto" in c]
    assert len(set(names)) == len(names) - len(resumed) and "sew_resnet18_lats_D0.1" not in names
    assert [language for _, language, _ in blocks].count("python") == 4


# ----------------------------------------------------------------------------------------- the front door
README_SECTIONS = (
    "Quick start", "The core API", "Add your own method", "Training", "Analytics: `snnprune.analyze`",
    "Structured pruning", "Spiking neurons and the CuPy backend", "Deployment (NIR)", "Figures: ANN vs SNN",
)  # fmt: skip


def test_readme_is_a_short_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300, "measured tables and details belong in docs/"
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    for title in README_SECTIONS:
        assert title in headings, f"README lacks the section {title!r}"
    # the results live in docs/: the README links each section's detail
    for target in ("docs/results.md", "docs/benchmarks.md", "snnprune/docs/methods.md"):
        assert f"]({target}" in text, f"README does not link {target}"


def _resolve(chain: str) -> object:
    obj: object = snnprune
    for part in chain.split(".")[1:]:
        if hasattr(obj, part):
            obj = getattr(obj, part)
        else:
            obj = importlib.import_module(f"{obj.__name__}.{part}")  # type: ignore[attr-defined]
    return obj


def test_readme_and_docs_name_only_existing_api():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for chain in sorted(set(re.findall(r"snnprune(?:\.[A-Za-z_]\w*)+", path.read_text()))):
            try:
                _resolve(chain)
            except (AttributeError, ImportError) as err:
                pytest.fail(f"{path.relative_to(ROOT)} names {chain}, which does not exist ({err})")


def _markdown_files() -> list[Path]:
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "snnprune" / "docs").glob("*.md")),
        *sorted((ROOT / "benchmarks").glob("*/README.md")),
    ]


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_relative_links_resolve():
    checked = 0
    for path in _markdown_files():
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(ROOT)} links {target!r}"
            assert dest.exists(), f"{where}: no such file"
            if anchor and dest.suffix == ".md":
                anchors = {_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", dest.read_text(), flags=re.M)}
                assert anchor in anchors, f"{where}: no such heading"
            checked += 1
    assert checked > 20


@pytest.mark.parametrize("name", ["results.md", "benchmarks.md"])
def test_every_measured_table_has_its_command(name):
    """Each table of docs/results.md and docs/benchmarks.md has the command that makes it above it (in its
    section, after the previous table)."""
    lines = (ROOT / "docs" / name).read_text().splitlines()
    tables = [i for i, line in enumerate(lines) if line.startswith("|") and not lines[i - 1].startswith("|")]
    assert tables
    for i in tables:
        start = i
        while start > 0 and not lines[start - 1].startswith(("#", "|")):
            start -= 1
        above = "\n".join(lines[start:i])
        assert re.search(r"(python|torchrun) \S+", above), f"docs/{name}:{i + 1}: a table without its command"


# Text that narrates the project's own history rather than describing it as it is. References to other
# projects' issue trackers (a source, e.g. "Yanqi-Chen/LATS issue #1") are not narration.
NARRATION = re.compile(
    r"\bissues?\s\d+,?\sitems?\b|\(issues?\s\d+\b|\bitems?\s\d+\s\+\s\d+|now\sfixed|this\srelease|"
    r"the\sissue'?s?\b|previous\ssession|earlier\ssession|same\ssession|arrives?\swith",
    flags=re.I,
)


def test_no_text_narrates_the_project_history():
    hits = []
    for path in _tracked_files():
        if path.suffix not in (".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".csv", ".sh", ".cfg"):
            continue
        if path == Path(__file__).resolve():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if NARRATION.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "history narration:\n" + "\n".join(hits)
