"""Hostile and careless inputs: loading a run runs no code, a run touches only the files it wrote, and every
bad file, folder or argument is one line (an exception naming it, or ``error: ...`` and exit 2).

A pickle payload here is ``os.mkdir(<marker>)``: each row checks that the marker folder was never made.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import stat
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
from helpers import expect_exit, load_script

import models  # (declares models.create_model, the builder the run's record names)
import snnprune
from snnprune import files
from snnprune.files import CorruptFileError, UnsafeFileError
from snnprune.training import CheckpointError, ConfigError, load_checkpoint
from snnprune.training.run_folder import LOCK_FILE, MANIFEST_FILE, METRICS_COLUMNS, RunFolder

TINY = ["--width", "4", "--epochs", "1", "--batch-size", "16", "--limit-train-batches", "1", "--T", "2",
        "--limit-test-batches", "1", "--analyze-batches", "1", "--quiet"]  # fmt: skip


class Payload:
    """Unpickling it calls ``os.mkdir(marker)``: the marker shows whether a load ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def run(sew, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile")
    return Path(sew.main(["--method", "lats", *TINY, "--output-dir", str(out), "--run-name", "r"])["run_dir"])


@pytest.fixture
def copy(run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


# ------------------------------------------------------------------------------------- load_run: config.json
def _config(folder: Path, change) -> Path:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))
    return folder


def _builder(**kw):
    return lambda c: c["model_builder"].update(kw)


def _victim(tmp: Path) -> Path:
    (tmp / "victim").mkdir(exist_ok=True)
    (tmp / "victim" / "keep.txt").write_text("mine")
    return tmp / "victim"


# (id, make(copied run folder, tmp_path) -> what to pass to load_run, message fragment); each a ConfigError
CONFIG_CASES = [
    ("target os.system", lambda f, t: _config(f, _builder(_target_="os.system", command=f"mkdir {t / 'PWNED'}")), "'os.system' is not a declared model builder"),
    ("target subprocess.run", lambda f, t: _config(f, _builder(_target_="subprocess.run", args=["mkdir", str(t / "PWNED")])), "'subprocess.run' is not a declared"),
    ("target shutil.rmtree", lambda f, t: _config(f, _builder(_target_="shutil.rmtree", path=str(_victim(t)))), "'shutil.rmtree' is not a declared"),
    ("target builtins.eval", lambda f, t: _config(f, _builder(_target_="builtins.eval")), "'builtins.eval' is not a declared"),
    ("target a module", lambda f, t: _config(f, _builder(_target_="antigravity")), "'antigravity' is not a declared"),
    ("target the registry's own module path", lambda f, t: _config(f, _builder(_target_="models.registry.create_model")), "is not a declared"),
    ("target not a string", lambda f, t: _config(f, _builder(_target_=123)), "'_target_' 123 is not a declared"),
    ("record without target", lambda f, t: _config(f, lambda c: c["model_builder"].pop("_target_")), "has no '_target_'"),
    ("record a list", lambda f, t: _config(f, lambda c: c.update(model_builder=["models.create_model"])), "has no '_target_'"),
    ("record a string", lambda f, t: _config(f, lambda c: c.update(model_builder="os.system")), "has no '_target_'"),
    ("keyword it does not take", lambda f, t: _config(f, _builder(command="rm -rf /")), "unexpected keyword argument(s) 'command'"),
    ("width a string", lambda f, t: _config(f, _builder(width="abc")), "keyword argument 'width' must be int, got 'abc'"),
    ("width a bool", lambda f, t: _config(f, _builder(width=True)), "keyword argument 'width' must be int, got True"),
    ("T a float", lambda f, t: _config(f, _builder(T=2.5)), "keyword argument 'T' must be int, got 2.5"),
    ("neuron a list", lambda f, t: _config(f, _builder(neuron=["if"])), "keyword argument 'neuron' must be str"),
    ("unknown model name", lambda f, t: _config(f, _builder(name="nonesuch")), "unknown model 'nonesuch'"),
    ("model name a number", lambda f, t: _config(f, _builder(name=7)), "keyword argument 'name' must be str, got 7"),
    ("no method", lambda f, t: _config(f, lambda c: c.pop("method")), "names no method"),
    ("deeply nested config", lambda f, t: ((f / "config.json").write_text("[" * 100_000 + "]" * 100_000), f)[1], "nested too deeply"),
    ("config a JSON list", lambda f, t: ((f / "config.json").write_text("[1]"), f)[1], "is not a JSON object"),
    ("config not UTF-8", lambda f, t: ((f / "config.json").write_bytes(b"\xff\xfe{"), f)[1], "is damaged"),
    ("config a folder", lambda f, t: ((f / "config.json").unlink(), (f / "config.json").mkdir(), f)[-1], "has no config.json"),
    ("summary damaged", lambda f, t: ((f / "summary.json").write_text("{"), f)[1], "is damaged"),
    ("run folder a dangling symlink", lambda f, t: ((t / "link").symlink_to(t / "gone"), t / "link")[1], "does not exist"),
    ("run folder missing", lambda f, t: t / "nowhere", "does not exist"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "fragment"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_load_run_of_a_hostile_config_calls_nothing_and_is_one_line(copy, tmp_path, case, make, fragment):
    target = make(copy, tmp_path)
    with pytest.raises(ConfigError) as info:
        snnprune.load_run(target)
    assert fragment in _one_line(info.value) and str(info.value).startswith("load_run: ")
    assert not (tmp_path / "PWNED").exists()
    if (tmp_path / "victim").exists():
        assert (tmp_path / "victim" / "keep.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------- load_run: checkpoints
def _payload_checkpoint(folder: Path, tmp: Path, name: str = "checkpoint.pth", digest: bool = True) -> Path:
    state = torch.load(folder / name, weights_only=True)
    state["args"] = {"note": Payload(tmp / "PWNED")}
    if digest:
        files.save(state, folder / name)  # its .sha256 matches: intact bytes, still not safe
    else:
        torch.save(state, folder / name)
        files.digest_path(folder / name).unlink()
    return folder


def _digest(folder: Path, text: str | None) -> Path:
    d = folder / "checkpoint.pth.sha256"
    d.unlink()
    if text is None:
        d.mkdir()
    else:
        d.write_text(text)
    return folder


def _rng(folder: Path, key: str, value) -> Path:
    state = torch.load(folder / "checkpoint.pth", weights_only=True)
    state["rng"][key] = value
    files.save(state, folder / "checkpoint.pth")
    return folder


def _old_style(folder: Path) -> Path:
    """A checkpoint as written before RNG states were plain values (NumPy's state pickled)."""
    state = torch.load(folder / "checkpoint.pth", weights_only=True)
    state["rng"] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (the old form)
        "torch": torch.get_rng_state(),
    }
    files.save(state, folder / "checkpoint.pth")
    return folder


GOOD = "{}  checkpoint.pth\n"

# (id, make(copied run folder, tmp_path) -> what to pass to load_run, message fragment); each a CheckpointError
CHECKPOINT_CASES = [
    ("pickle payload, digest matches", lambda f, t: _payload_checkpoint(f, t), "needs pickle to load"),
    ("pickle payload, no digest", lambda f, t: _payload_checkpoint(f, t, digest=False), "needs pickle to load"),
    ("pickle payload in best.pth", lambda f, t: _payload_checkpoint(f, t, "best.pth") / "best.pth", "needs pickle to load"),
    ("an old checkpoint (pickled NumPy RNG)", lambda f, t: _old_style(f), "snnprune.upgrade_checkpoint(path)"),
    ("digest names /etc/passwd", lambda f, t: _digest(f, "0" * 64 + "  ../../etc/passwd\n"), "names another file ('../../etc/passwd'"),
    ("digest names best.pth", lambda f, t: _digest(f, (f / "best.pth.sha256").read_text().split()[0] + "  best.pth\n"), "names another file ('best.pth'"),
    ("digest a folder", lambda f, t: _digest(f, None), "is not a regular file"),
    ("digest empty", lambda f, t: _digest(f, ""), "damaged digest file"),
    ("digest two lines", lambda f, t: _digest(f, GOOD.format("0" * 64) * 2), "damaged digest file"),
    ("digest upper-case hex", lambda f, t: _digest(f, GOOD.format("A" * 64)), "damaged digest file"),
    ("digest of other bytes", lambda f, t: _digest(f, GOOD.format("0" * 64)), "its SHA-256 does not match"),
    ("checkpoint empty", lambda f, t: ((f / "checkpoint.pth").write_bytes(b""), f)[1], "is corrupt"),
    ("checkpoint a folder", lambda f, t: ((f / "checkpoint.pth").unlink(), (f / "checkpoint.pth").mkdir(), f)[-1], "does not exist"),
    ("checkpoint a dangling symlink", lambda f, t: ((f / "checkpoint.pth").unlink(), (f / "checkpoint.pth").symlink_to(t / "gone"), f)[-1], "does not exist"),
    ("rng python too short", lambda f, t: _rng(f, "python", [3, [1, 2], None]), "has a bad 'rng'"),
    ("rng python a string", lambda f, t: _rng(f, "python", "abc"), "has a bad 'rng'"),
    ("rng numpy another generator", lambda f, t: _rng(f, "numpy", ["PCG64", torch.zeros(624, dtype=torch.int64), 0, 0, 0.0]), "has a bad 'rng'"),
    ("rng torch a float tensor", lambda f, t: _rng(f, "torch", torch.zeros(5)), "has a bad 'rng'"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "fragment"), CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_load_run_of_a_hostile_checkpoint_runs_nothing_and_is_one_line(copy, tmp_path, case, make, fragment):
    target = make(copy, tmp_path)
    with pytest.raises(CheckpointError) as info:
        snnprune.load_run(target)
    assert fragment in _one_line(info.value) and str(info.value).startswith("load_run: ")
    assert not (tmp_path / "PWNED").exists()


def test_compact_model_with_a_payload_runs_nothing(copy, tmp_path):
    torch.save({"w": Payload(tmp_path / "PWNED")}, copy / "model_compact.pth")
    with pytest.raises(UnsafeFileError, match="needs pickle") as info:
        snnprune.load_run(copy, compact=True)
    assert str(copy / "model_compact.pth") in _one_line(info.value)
    assert not (tmp_path / "PWNED").exists()


def test_upgrade_checkpoint_is_the_one_step_for_an_old_checkpoint(copy, run):
    path = _old_style(copy) / "checkpoint.pth"
    snnprune.upgrade_checkpoint(path)
    old = load_checkpoint(path, name="test")["rng"]
    assert old["numpy"][0] == "MT19937" and torch.is_tensor(old["numpy"][1])
    reloaded = snnprune.load_run(copy)
    assert reloaded.pruner.step_count == snnprune.load_run(run).pruner.step_count


def test_upgrade_checkpoint_runs_no_payload(copy, tmp_path):
    """The upgrade loads with weights_only=True too (NumPy's array globals allowed, nothing else)."""
    path = _payload_checkpoint(copy, tmp_path) / "checkpoint.pth"
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="needs pickle to load") as info:
        snnprune.upgrade_checkpoint(path)
    _one_line(info.value)
    assert not (tmp_path / "PWNED").exists() and path.read_bytes() == before


def _as_if_saved_on_cuda(path: Path) -> None:
    """Rewrite a ``torch.save`` file so that every storage says it was saved on ``cuda:0``."""
    import io
    import zipfile

    with zipfile.ZipFile(path) as zin:
        items = [(info, zin.read(info.filename)) for info in zin.infolist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zout:
        for info, data in items:
            if info.filename.endswith("data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in data
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            zout.writestr(info, data)
    path.write_bytes(buf.getvalue())
    files.write_digest(path)


def test_a_checkpoint_saved_on_cuda_loads_on_the_cpu(copy, run):
    _as_if_saved_on_cuda(copy / "checkpoint.pth")
    if not torch.cuda.is_available():  # what a plain torch.load would do here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(copy / "checkpoint.pth", weights_only=True)
    loaded, original = snnprune.load_run(copy), snnprune.load_run(run)
    for (k, v), w in zip(
        loaded.model.state_dict().items(), original.model.state_dict().values(), strict=True
    ):
        assert v.device.type == "cpu" and torch.equal(v, w), k


# ------------------------------------------------------------------------------------- the scripts' load paths
def _argv(case: str, folder: Path) -> list[str]:
    ckpt = str(folder / "checkpoint.pth")
    return {
        "--resume PATH": ["--method", "lats", *TINY, "--resume", ckpt, "--output-dir", str(folder.parent / "o")],
        "--resume auto": ["--method", "lats", *TINY, "--resume", "auto", "--output-dir", str(folder.parent), "--run-name", folder.name],
        "--test-only": ["--method", "lats", *TINY, "--test-only", "--resume", ckpt],
    }[case]  # fmt: skip


@pytest.mark.parametrize("case", ["--resume PATH", "--resume auto", "--test-only"])
def test_training_script_refuses_a_payload_checkpoint(sew, copy, tmp_path, capsys, case):
    _payload_checkpoint(copy, tmp_path)
    code, err = expect_exit(sew, _argv(case, copy), capsys)
    assert code == 2 and err.startswith("error: --resume: checkpoint") and "needs pickle" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda f, t: _payload_checkpoint(f, t), "needs pickle"),
        (
            lambda f, t: _config(f, _builder(_target_="os.system", command=f"mkdir {t / 'PWNED'}")),
            "not a declared",
        ),
        (lambda f, t: _config(f, _builder(width="abc")), "must be int"),
    ],
    ids=["payload checkpoint", "os.system builder", "wrong keyword type"],
)
def test_export_script_refuses_a_hostile_run(copy, tmp_path, capsys, make, fragment):
    make(copy, tmp_path)
    code, err = expect_exit(load_script("export_nir"), [str(copy), "--images", "2"], capsys)
    assert code == 2 and err.startswith("error: load_run: ") and fragment in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "PWNED").exists()


# ------------------------------------------------------------------------------------- files.load
LOAD_CASES = [
    ("payload with a matching digest", lambda p, t: files.save({"w": Payload(t / "PWNED")}, p), UnsafeFileError, "needs pickle to load"),
    ("payload without a digest", lambda p, t: torch.save({"w": Payload(t / "PWNED")}, p), UnsafeFileError, "needs pickle to load"),
    ("payload inside a list", lambda p, t: files.save([torch.ones(1), [Payload(t / "PWNED")]], p), UnsafeFileError, "nothing in it was run"),
    ("a NumPy array", lambda p, t: files.save({"a": np.zeros(3)}, p), UnsafeFileError, "needs pickle to load"),
    ("a plain text file", lambda p, t: p.write_text("hello"), CorruptFileError, "not a complete zip archive"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "write", "error", "fragment"), LOAD_CASES, ids=[c[0] for c in LOAD_CASES])
def test_files_load_runs_no_code(tmp_path, case, write, error, fragment):
    path = tmp_path / "f.pth"
    write(path, tmp_path)
    with pytest.raises(error) as info:
        files.load(path)
    assert fragment in _one_line(info.value) and str(path) in str(info.value)
    assert not (tmp_path / "PWNED").exists()


def test_files_load_takes_no_pickle_option_and_loads_plain_state(tmp_path):
    files.save({"w": torch.arange(3), "n": [1, "a", None, 2.5]}, tmp_path / "ok.pth")
    back = files.load(tmp_path / "ok.pth")
    assert torch.equal(back["w"], torch.arange(3)) and back["n"] == [1, "a", None, 2.5]
    for option in ({"weights_only": False}, {"pickle_module": __import__("pickle")}):  # not even a keyword
        with pytest.raises(TypeError, match="unexpected keyword argument"):
            files.load(tmp_path / "ok.pth", **option)


def test_a_digest_with_the_binary_marker_naming_its_file_is_accepted(tmp_path):
    files.save({"w": torch.ones(2)}, tmp_path / "a.pth")
    hexdigest = files.digest_path(tmp_path / "a.pth").read_text().split()[0]
    files.digest_path(tmp_path / "a.pth").write_text(f"{hexdigest} *a.pth\n")  # sha256sum -b format
    assert files.verify_digest(tmp_path / "a.pth")


# ------------------------------------------------------------------------------------- stale temp files
DEAD = 999_999_999  # no process has this id

# (id, file name, how it is made, removed?)
TEMP_CASES = [
    ("a killed write of checkpoint.pth", f".checkpoint.pth.{DEAD}.0badc0de.tmp", "file", True),
    ("a killed write of the manifest", f".{MANIFEST_FILE}.{DEAD}.0badc0de.tmp", "file", True),
    ("a live process's write", f".checkpoint.pth.{os.getpid()}.0badc0de.tmp", "file", False),
    ("a user's file without a pid", ".checkpoint.pth.0badc0de.tmp", "file", False),
    ("a user's temp file of another name", f".notes.txt.{DEAD}.0badc0de.tmp", "file", False),
    ("upper-case hex", f".checkpoint.pth.{DEAD}.0BADC0DE.tmp", "file", False),
    ("no leading dot", f"checkpoint.pth.{DEAD}.0badc0de.tmp", "file", False),
    ("seven hex digits", f".checkpoint.pth.{DEAD}.0badc0d.tmp", "file", False),
    ("a suffix after .tmp", f".checkpoint.pth.{DEAD}.0badc0de.tmp.bak", "file", False),
    ("a prefix before the dot", f"old.checkpoint.pth.{DEAD}.0badc0de.tmp", "file", False),
    ("a symlink with the name", f".checkpoint.pth.{DEAD}.0badc0de.tmp", "symlink", False),
    ("a folder with the name", f".checkpoint.pth.{DEAD}.0badc0de.tmp", "folder", False),
]  # fmt: skip


@pytest.mark.parametrize(("case", "name", "kind", "removed"), TEMP_CASES, ids=[c[0] for c in TEMP_CASES])
def test_only_the_runs_own_stale_temp_files_are_cleaned(tmp_path, case, name, kind, removed):
    folder = tmp_path / "r"
    folder.mkdir()
    (tmp_path / "target.txt").write_text("mine")
    path = folder / name
    {"file": lambda: path.write_text("x"), "symlink": lambda: path.symlink_to(tmp_path / "target.txt"),
     "folder": path.mkdir}[kind]()  # fmt: skip
    logged: list[str] = []
    RunFolder(folder).start({"method": "x"}, resumed=(0, 0), log=logged.append)
    assert os.path.lexists(path) is not removed and (tmp_path / "target.txt").read_text() == "mine"
    assert bool(logged and name in logged[0]) is removed
    RunFolder(folder).close()


# ------------------------------------------------------------------------------------- a run touches only its files
def _user_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _folder_with(tmp: Path, make) -> Path:
    folder = tmp / "out" / "r"
    folder.mkdir(parents=True)
    (tmp / "victim.txt").write_text("mine")
    make(folder, tmp)
    return folder


# (id, make(run folder, tmp_path), extra options, message fragment); each exit 2, no file changed
FOLDER_CASES = [
    ("lock a symlink to a user file", lambda f, t: (f / LOCK_FILE).symlink_to(t / "victim.txt"), [], "is not a regular file the run can lock"),
    ("lock a dangling symlink", lambda f, t: (f / LOCK_FILE).symlink_to(t / "gone.txt"), [], "is not a regular file the run can lock"),
    ("lock a folder", lambda f, t: (f / LOCK_FILE).mkdir(), [], "is not a regular file"),
    ("lock a FIFO", lambda f, t: os.mkfifo(f / LOCK_FILE), [], "is not a regular file"),
    ("--overwrite, user's config.json, no manifest", lambda f, t: (f / "config.json").write_text("my config"), ["--overwrite"], f"but no {MANIFEST_FILE}"),
    ("--overwrite, user's tb/, no manifest", lambda f, t: ((f / "tb").mkdir(), (f / "tb" / "mine.txt").write_text("x")), ["--overwrite"], f"but no {MANIFEST_FILE}"),
    ("--overwrite, manifest not JSON", lambda f, t: ((f / "config.json").write_text("{}"), (f / MANIFEST_FILE).write_text("{")), ["--overwrite"], "is damaged"),
    ("--overwrite, manifest names ../victim.txt", lambda f, t: ((f / "config.json").write_text("{}"), (f / MANIFEST_FILE).write_text(json.dumps({"files": {"../victim.txt": "0"}}))), ["--overwrite"], "is not a run manifest"),
    ("--overwrite, manifest names tb/../../victim.txt", lambda f, t: ((f / "config.json").write_text("{}"), (f / MANIFEST_FILE).write_text(json.dumps({"files": {"tb/../../victim.txt": "0"}}))), ["--overwrite"], "is not a run manifest"),
    ("--overwrite, manifest names a user's file", lambda f, t: ((f / "config.json").write_text("{}"), (f / MANIFEST_FILE).write_text(json.dumps({"files": {"notes.txt": "0"}}))), ["--overwrite"], "is not a run manifest"),
    ("--overwrite, manifest a folder", lambda f, t: ((f / "config.json").write_text("{}"), (f / MANIFEST_FILE).mkdir()), ["--overwrite"], "is damaged"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "make", "extra", "fragment"), FOLDER_CASES, ids=[c[0] for c in FOLDER_CASES]
)
def test_a_run_refuses_a_folder_it_did_not_write_and_changes_nothing(sew, tmp_path, capsys, case, make, extra, fragment):  # fmt: skip
    folder = _folder_with(tmp_path, make)
    before = _user_files(tmp_path)
    lock_kind = (
        stat.S_IFMT(os.lstat(folder / LOCK_FILE).st_mode) if os.path.lexists(folder / LOCK_FILE) else None
    )
    argv = ["--method", "lats", *TINY, *extra, "--output-dir", str(folder.parent), "--run-name", "r"]
    code, err = expect_exit(sew, argv, capsys)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
    assert _user_files(tmp_path) == before
    if lock_kind is not None:
        assert stat.S_IFMT(os.lstat(folder / LOCK_FILE).st_mode) == lock_kind


@pytest.mark.parametrize("which", ["--output-dir", "--run-name"])
def test_a_dangling_symlink_as_the_run_folder_is_one_line(sew, tmp_path, capsys, which):
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    out, name = (tmp_path / "link", "r") if which == "--output-dir" else (tmp_path, "link")
    code, err = expect_exit(
        sew, ["--method", "lats", *TINY, "--output-dir", str(out), "--run-name", name], capsys
    )
    assert code == 2 and err.startswith(f"error: {which}: ") and "dangling symlink" in err
    assert not (tmp_path / "gone").exists()


def test_overwrite_removes_exactly_the_manifest(sew, copy, tmp_path):
    manifest = json.loads((copy / MANIFEST_FILE).read_text())["files"]
    assert {"config.json", "checkpoint.pth", "checkpoint.pth.sha256", "summary.json"} <= set(manifest)
    assert any(n.startswith("tb/") for n in manifest)
    for name in ["checkpoint.pth", "config.json", "summary.json", "metrics.csv"]:  # each with its digest
        assert manifest[name] == hashlib.sha256((copy / name).read_bytes()).hexdigest(), name
    (copy / "tb" / "mine.txt").write_text("mine")  # the user's, in the run's tb/
    (copy / f".notes.{DEAD}.0badc0de.tmp").write_text("mine")
    (copy / "notes.txt").write_text("mine")
    (copy / "model_sparse.pth").write_text("mine")  # a run's name the run did not write: not in the manifest
    argv = ["--method", "lats", *TINY, "--output-dir", str(copy.parent), "--run-name", copy.name]
    sew.main([*argv, "--overwrite"])
    for name in ["tb/mine.txt", f".notes.{DEAD}.0badc0de.tmp", "notes.txt", "model_sparse.pth"]:
        assert (copy / name).read_text() == "mine", name
    old_events = {n for n in manifest if n.startswith("tb/")}
    assert not old_events & {f"tb/{p.name}" for p in (copy / "tb").iterdir()}  # the old run's events went


def test_csv_that_is_a_symlink_is_refused_and_its_target_kept(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    (tmp_path / "victim.txt").write_text("mine")
    (folder / "metrics.csv").symlink_to(tmp_path / "victim.txt")
    row = dict.fromkeys(METRICS_COLUMNS, 1.0)
    with pytest.raises(ConfigError, match="not a regular file") as info:
        RunFolder(folder).write_epoch(row, [])
    _one_line(info.value)
    assert (tmp_path / "victim.txt").read_text() == "mine"


def test_tb_that_is_a_symlink_is_refused(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    (tmp_path / "mine").mkdir()
    (folder / "tb").symlink_to(tmp_path / "mine")
    with pytest.raises(ConfigError, match="is not a folder"):
        RunFolder(folder).start({"method": "x"}, resumed=None)
    assert list((tmp_path / "mine").iterdir()) == []


# ------------------------------------------------------------------------------------- export_nir / verify_nir
def _net(width: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return models.create_model(
        "sew_resnet18", num_classes=10, in_channels=1, T=2, width=width, stem="small"
    ).eval()


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nir") / "m.nir"
    snnprune.export_nir(_net(), torch.rand(2, 1, 28, 28), path)
    return path


def _nan(m: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        m.conv1.weight[0, 0, 0, 0] = float("nan")
    return m


def _inf_bn(m: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        m.bn1.running_var[0] = float("inf")
    return m


X = torch.rand(2, 1, 28, 28)

# (id, model change, input, path(tmp), keywords, message fragment); each a ValueError, no file written
EXPORT_CASES = [
    ("dt zero", None, X, None, {"dt": 0}, "dt must be a finite positive"),
    ("dt negative", None, X, None, {"dt": -1e-4}, "dt must be a finite positive"),
    ("dt inf", None, X, None, {"dt": math.inf}, "dt must be a finite positive"),
    ("dt nan", None, X, None, {"dt": math.nan}, "dt must be a finite positive"),
    ("dt a bool", None, X, None, {"dt": True}, "dt must be a finite positive"),
    ("dt a string", None, X, None, {"dt": "1e-4"}, "dt must be a finite positive"),
    ("T zero", None, X, None, {"T": 0}, "T must be an integer from 1 to 10,000"),
    ("T ten million", None, X, None, {"T": 10**7}, "T must be an integer from 1 to 10,000"),
    ("T a float", None, X, None, {"T": 2.0}, "T must be an integer"),
    ("T a bool", None, X, None, {"T": True}, "T must be an integer"),
    ("three input channels", None, torch.rand(2, 3, 28, 28), None, {}, "example_input: the model cannot run on a [2, 3, 28, 28] input"),
    ("time-first input", None, torch.rand(2, 2, 1, 28, 28), None, {}, "example_input: the model cannot run on a [2, 2, 1, 28, 28] input"),
    ("one-dimensional input", None, torch.rand(28), None, {}, "example_input must be one time step's input"),
    ("a NaN weight", _nan, X, None, {}, "'conv1.weight' holds non-finite values"),
    ("an inf BN statistic", _inf_bn, X, None, {}, "'bn1.running_var' holds non-finite values"),
    ("into a missing folder", None, X, lambda t: t / "missing" / "m.nir", {}, "does not exist"),
    ("onto a folder", None, X, lambda t: t, {}, "is a folder"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "change", "x", "path", "kw", "fragment"), EXPORT_CASES, ids=[c[0] for c in EXPORT_CASES]
)
def test_export_nir_refuses_bad_input_before_work(tmp_path, case, change, x, path, kw, fragment):
    model = _net() if change is None else change(_net())
    dest = tmp_path / "m.nir" if path is None else path(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ValueError) as info:
        snnprune.export_nir(model, x, dest, **kw)
    assert fragment in _one_line(info.value)
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_export_nir_into_a_read_only_folder(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="cannot be written"):
            snnprune.export_nir(_net(), X, tmp_path / "m.nir")
    finally:
        tmp_path.chmod(0o700)


def _damage(path: Path, tmp: Path, how: str, digest: bool) -> Path:
    dst = tmp / "m.nir"
    shutil.copy(path, dst)
    shutil.copy(files.digest_path(path), files.digest_path(dst))
    data = bytearray(dst.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "middle bit":
        data[len(data) // 2] ^= 0x01
    elif how == "header bit":
        data[0] ^= 0x01
    elif how == "text":
        data = bytearray(b"not HDF5")
    dst.write_bytes(bytes(data))
    if not digest:
        files.digest_path(dst).unlink()
    return dst


# (id, damage, digest kept, message fragment); each a ValueError before any framework runs
DAMAGED_CASES = [
    ("truncated, digest", "truncated", True, "its SHA-256 does not match"),
    ("middle bit flipped, digest", "middle bit", True, "its SHA-256 does not match"),
    ("header bit flipped, digest", "header bit", True, "its SHA-256 does not match"),
    ("truncated, no digest", "truncated", False, "is not a readable NIR file"),
    ("header bit flipped, no digest", "header bit", False, "is not a readable NIR file"),
    ("not HDF5, no digest", "text", False, "is not a readable NIR file"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "how", "digest", "fragment"), DAMAGED_CASES, ids=[c[0] for c in DAMAGED_CASES]
)
def test_verify_nir_of_a_damaged_file_is_one_line(graph_file, tmp_path, case, how, digest, fragment):
    path = _damage(graph_file, tmp_path, how, digest)
    with pytest.raises(ValueError) as info:
        snnprune.verify_nir(path, _net(), X, frameworks=())
    assert fragment in _one_line(info.value) and str(info.value).startswith("graph_or_path: ")


def _meta(graph_file: Path, **metadata):
    graph = nir.read(str(graph_file))
    graph.metadata.update(metadata)
    return graph


def _rewired(graph_file: Path, change):
    graph = nir.read(str(graph_file))
    graph.edges = change(list(graph.edges))
    return graph


def _rebuilt(graph_file: Path, drop: tuple[str, str]):
    """The graph without the edge ``drop``, built again as export_nir builds it: ``nir.NIRGraph`` gives a
    node that feeds nothing an output node of its own."""
    graph = nir.read(str(graph_file))
    edges = [e for e in graph.edges if e != drop]
    return nir.NIRGraph(nodes=dict(graph.nodes), edges=edges, metadata=dict(graph.metadata))


# (id, graph(graph_file, tmp_path), model, message fragment)
VERIFY_CASES = [
    ("missing file", lambda g, t: t / "missing.nir", _net, "is not a file"),
    ("a folder", lambda g, t: t, _net, "is not a file"),
    ("T ten million", lambda g, t: _meta(g, T=10**7), _net, "T must be an integer from 1 to 10,000"),
    ("T zero", lambda g, t: _meta(g, T=0), _net, "T must be an integer"),
    ("T a string", lambda g, t: _meta(g, T="2"), _net, "T must be an integer"),
    ("dt inf", lambda g, t: _meta(g, dt=math.inf), _net, "dt must be a finite positive"),
    ("dt negative", lambda g, t: _meta(g, dt=-1.0), _net, "dt must be a finite positive"),
    ("the graph of a wider model", lambda g, t: g, lambda: _net(width=8), "does not hold its"),
    ("an empty graph", lambda g, t: nir.NIRGraph(nodes={}, edges=[]), _net, "has no node for the model's neuron 'sn1'"),
    ("an edge dropped", lambda g, t: _rewired(g, lambda e: [x for x in e if x != ("conv1", "sn1")]), _net, "node 'sn1' has no input edge"),
    ("an edge into a sum dropped", lambda g, t: _rewired(g, lambda e: [x for x in e if x != ("layer4_1_sn2", "avgpool")]), _net, "node 'layer4_1_sn2' feeds no other node"),
    ("an edge into a sum dropped, the graph rebuilt", lambda g, t: _rebuilt(g, ("layer4_1_sn2", "avgpool")), _net, "node 'layer4_1_sn2' feeds no other node, only a second output 'output_layer4_1_sn2'"),
    ("an edge back to a layer", lambda g, t: _rewired(g, lambda e: [*e, ("layer1_0_sn1", "layer1_0_conv1")]), _net, "node 'layer1_0_conv1' is on a cycle of edges"),
    ("an edge to no node", lambda g, t: _rewired(g, lambda e: [*e, ("sn1", "nowhere")]), _net, "the edge ('sn1', 'nowhere') names a node the graph lacks"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "graph", "model", "fragment"), VERIFY_CASES, ids=[c[0] for c in VERIFY_CASES]
)
def test_verify_nir_refuses_a_graph_it_cannot_check(graph_file, tmp_path, case, graph, model, fragment):
    with pytest.raises(ValueError) as info:
        snnprune.verify_nir(graph(graph_file, tmp_path), model(), X, frameworks=())
    assert fragment in _one_line(info.value)


def test_verify_nir_accepts_its_own_graph(graph_file):
    (row,) = snnprune.verify_nir(graph_file, _net(), X, frameworks=())  # the checks refuse no good graph
    assert row["framework"] == "source model" and row["spike_mismatches"] is not None


# (id, argv(tmp_path), option named first)
SCRIPT_CASES = [
    ("--dt inf", lambda t: [str(t), "--dt", "inf"], "--dt"),
    ("--dt nan", lambda t: [str(t), "--dt", "nan"], "--dt"),
    ("--out in a missing folder", lambda t: [str(t), "--out", str(t / "missing" / "m.nir")], "--out"),
    ("--out a folder", lambda t: [str(t), "--out", str(t)], "--out"),
    ("--json a folder", lambda t: [str(t), "--json", str(t)], "--json"),
    ("--json in a missing folder", lambda t: [str(t), "--json", str(t / "missing" / "r.json")], "--json"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "argv", "option"), SCRIPT_CASES, ids=[c[0] for c in SCRIPT_CASES])
def test_export_script_bad_destination_is_one_line_exit_2(tmp_path, capsys, case, argv, option):
    code, err = expect_exit(load_script("export_nir"), argv(tmp_path), capsys)
    assert code == 2 and err.startswith(f"error: {option}") and len(err.strip().splitlines()) == 1
