"""What the two training scripts share: the model builder record, and the exit codes (library errors become
one ``error: ...`` line, no traceback)."""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Callable
from typing import Any

import models
from snnprune.files import CorruptFileError, DiskFullError
from snnprune.training import CheckpointError, ConfigError, DataError, Interrupted, NonFiniteLossError
from snnprune.training import distributed as D

__all__ = [
    "EMBEDDED_DEFAULTS",
    "EXIT_DIVERGED",
    "EXIT_SIGINT",
    "EXIT_SIGTERM",
    "EXIT_USAGE",
    "exit_on_error",
    "model_record",
]

#: The default run of both training scripts on the embedded MNIST subset, where it differs from the options'
#: declared defaults (the scripts add their model, and the method by ``base_defaults``): width 16, small
#: stem, 8 epochs of batches of 64 (SGD 0.1, cosine schedule: the declared defaults), D = 0.1 (>= 80 %
#: sparsity in about 3 minutes on 2 CPU cores; see README), and the method keywords whose signature default
#: does not suit a run this short: ``s_init`` -5 (-3200: sigmoid and slope 0, nothing pruned before a long
#: run), ``l0_coeff`` 1e-3 (1 prunes 99.9 % of the default model within ten steps).
EMBEDDED_DEFAULTS: dict[str, Any] = {"stem": "small", "width": 16, "epochs": 8, "batch_size": 64,
                                     "final_threshold": 0.1, "target_sparsity": 0.9, "beta": 0.1,
                                     "s_init": -5.0, "l0_coeff": 1e-3}  # fmt: skip

EXIT_USAGE = 2  # a bad input (option, config file, checkpoint, data path), a run folder in use, or a file that cannot be written
EXIT_DIVERGED = 3  # the loss or the weights became non-finite
EXIT_SIGINT = 128 + signal.SIGINT  # 130: stopped by SIGINT (Ctrl-C)
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143: stopped by SIGTERM


def model_record(args: Any, num_classes: int, in_channels: int) -> dict[str, Any]:
    """The builder record of ``args.model``: ``models.create_model`` with the dataset's classes and channels
    and every option the model takes that is set (None: the model's own default)."""
    kw = {k: v for k, v in vars(args).items() if k in models.model_kwargs(args.model) and v is not None}
    return {"_target_": "models.create_model", "name": args.model, "num_classes": num_classes,
            "in_channels": in_channels, **kw}  # fmt: skip


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` as one line (a DataLoader worker wraps it in a traceback: keep its last line)."""
    text = str(exc).strip()
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = re.sub(r"^[\w.]+(Error|Exception): ", "", last.strip())
    return " ".join(text.split())


def exit_on_error(main: Callable[[list[str] | None], Any], argv: list[str] | None) -> Any:
    """``main(argv)``; an input error (or a full disk, a folder without write permission) exits with code 2,
    a non-finite loss with code 3, SIGINT with 130 and SIGTERM with 143 (one line on stderr each, no
    traceback)."""
    try:
        return main(argv)
    except (DataError, CheckpointError, ConfigError, CorruptFileError, DiskFullError, PermissionError) as exc:
        D.cleanup()
        print(f"error: {_one_line(exc)}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USAGE) from None
    except NonFiniteLossError as exc:
        D.cleanup()
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_DIVERGED) from None
    except (Interrupted, KeyboardInterrupt) as exc:  # KeyboardInterrupt: Ctrl-C outside the training
        stop = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
        D.cleanup()
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every rank stopped at the same step
            print(stop, file=sys.stderr, flush=True)
        raise SystemExit(stop.exit_code) from None
