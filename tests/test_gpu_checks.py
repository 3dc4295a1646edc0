"""scripts/gpu_checks.sh without a GPU: a stand-in for python shows the time limits and the results folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# the stand-in: the compaction benchmark never ends, every other command succeeds at once
FAKE_PYTHON = """#!/usr/bin/env bash
for a in "$@"; do [[ $a == *bench_compact.py ]] && exec sleep 100; done
exit 0
"""


@pytest.mark.skipif(shutil.which("timeout") is None, reason="needs coreutils' timeout")
def test_each_step_has_its_time_limit_and_the_results_are_written_after_every_step(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    dest = tmp_path / "results"
    env = {**os.environ, "PYTHON": str(fake), "DEST": str(dest), "TOTAL_S": "10", "MIN_STEP_S": "2",
           "STEPS": "sew compact neurons"}  # fmt: skip
    r = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_checks.sh")], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    steps = json.loads((dest / "steps.json").read_text())["steps"]
    assert [(s["step"], s["rc"], s["skipped"]) for s in steps] == [
        ("sew", 0, False),
        ("compact", 124, False),  # cut at its limit: what was left of the 10 s (less a 5 s reserve)
        ("neurons", None, True),  # less than MIN_STEP_S left
    ]
    assert steps[1]["limit_s"] <= 5 and steps[1]["seconds"] <= steps[1]["limit_s"] + 1
    readme = (dest / "README.md").read_text()
    assert "| compact |" in readme and "| sew |" in readme and "| neurons | - | skipped" in readme
    assert (dest / "compact.log").is_file() and (dest / "env.txt").is_file()
