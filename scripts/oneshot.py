"""One-shot post-training pruning of a dense run: magnitude or OSBC, no retraining, BN re-estimated.

``python scripts/oneshot.py --run runs/sew_resnet18_dense --target-sparsity 0.9`` writes
``runs/sew_resnet18_dense_oneshot_P0.9`` (``--method osbc``: ``..._oneshot_osbc_P0.9``) with the test top-1 before pruning, after it, and after the BN
re-estimation (:func:`snnprune.oneshot.oneshot_prune`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the top-level `models` package
sys.path.insert(0, str(Path(__file__).resolve().parent))

from entry import exit_on_error

from snnprune.oneshot import oneshot_prune
from snnprune.training import ConfigError

__all__ = ["get_parser", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # unknown or malformed arguments: one line, exit 2
        raise ConfigError(f"{message}; see --help for the options")


def get_parser() -> argparse.ArgumentParser:
    p = _Parser(description=__doc__.splitlines()[0], exit_on_error=False)
    p.add_argument("--run", required=True, metavar="DIR", help="a dense run folder (--method dense)")
    p.add_argument(
        "--target-sparsity", type=float, default=0.9, metavar="P", help="fraction of zeros per layer"
    )
    p.add_argument("--method", default="magnitude", metavar="magnitude|osbc", help="the pruning criterion")
    p.add_argument("--granularity", default="weight", metavar="weight|N:M", help="per-layer magnitude or N:M")
    p.add_argument("--calibration-batches", type=int, default=20, metavar="N", help="training batches for BN")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--prune-exclude", nargs="+", default=None, metavar="GLOB", help="layers kept dense")
    p.add_argument("--limit-test-batches", type=int, default=None, metavar="N", help="evaluate on N batches")
    p.add_argument("--output-dir", default="./runs", metavar="DIR", help="parent of the new run folder")
    p.add_argument("--run-name", default=None, help="default: <dense run>_oneshot_P<p>")
    p.add_argument("--overwrite", action="store_true", help="replace a folder that already holds a run")
    return p


def _main(argv: list[str] | None) -> dict[str, Any]:
    try:
        a = get_parser().parse_args(argv)
    except argparse.ArgumentError as exc:
        raise ConfigError(f"{exc}; see --help for the options") from None
    return oneshot_prune(
        a.run, a.output_dir, target_sparsity=a.target_sparsity, method=a.method, granularity=a.granularity,
        calibration_batches=a.calibration_batches, batch_size=a.batch_size, exclude=a.prune_exclude,
        limit_test_batches=a.limit_test_batches, run_name=a.run_name, overwrite=a.overwrite,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Prune a dense run in one shot; returns the summary dict."""
    return exit_on_error(_main, argv)


if __name__ == "__main__":
    main()
