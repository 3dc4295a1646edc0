"""Sparse weight files for unstructured pruning: values + bitmask, loading back to the same dense tensors.

A ``state_dict`` saved with ``torch.save`` stores every zero (4 bytes each in fp32). :func:`save_sparse`
stores each floating tensor whose zeros make it worthwhile (density below 31/32 for fp32) as its non-zero
values in row-major order plus a bitmask (1 bit per entry, packed in ``uint8``); every other tensor is
stored as is. :func:`load_sparse` rebuilds the dense tensors bit for bit.

The file is written by :func:`snnprune.files.save` (atomic, with a ``.sha256`` digest beside it) and read
by :func:`snnprune.files.load`, which refuses changed bytes; :func:`load_sparse` also checks the decoded
structure (format tag, shape, mask length, number of values), so a file without a digest is checked too.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from snnprune import files
from snnprune.files import CorruptFileError

__all__ = ["load_sparse", "pack_bits", "save_sparse", "unpack_bits"]

_FORMAT = "snnprune-sparse-v1"
_FIX = "restore it from a backup or export it again with snnprune.structured.save_sparse"
_SHIFTS = torch.tensor([7, 6, 5, 4, 3, 2, 1, 0], dtype=torch.uint8)


def pack_bits(mask: Tensor) -> Tensor:
    """Pack a bool tensor (flattened, row-major) into ``uint8``, 8 entries per byte, first entry in the MSB."""
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8) << _SHIFTS.to(flat.device)).sum(1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, numel: int) -> Tensor:
    """Inverse of :func:`pack_bits`: the first ``numel`` bits as a flat bool tensor."""
    bits = (packed.unsqueeze(1) >> _SHIFTS.to(packed.device)) & 1
    return bits.reshape(-1)[:numel].bool()


def _worth_it(t: Tensor) -> bool:
    if not t.is_floating_point() or t.numel() < 64:
        return False
    nnz = int(t.count_nonzero())
    return t.numel() / 8 + nnz * t.element_size() < t.numel() * t.element_size()


def _encode(state_dict: dict[str, Tensor]) -> dict[str, Any]:
    tensors: dict[str, Any] = {}
    for key, t in state_dict.items():
        t = t.detach().cpu()
        if _worth_it(t):
            mask = t.ne(0)
            tensors[key] = {"shape": list(t.shape), "mask": pack_bits(mask), "values": t[mask].clone()}
        else:
            tensors[key] = t.clone()
    return {"format": _FORMAT, "tensors": tensors}


def _nbytes(obj: object) -> int:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getbuffer().nbytes


def save_sparse(state_dict: dict[str, Tensor], path: str | Path) -> dict[str, int]:
    """Write ``state_dict`` (e.g. of a finalized model) in values + bitmask form.

    Args:
        state_dict: tensors to store (parameters and buffers).
        path: output file (read back with :func:`load_sparse`); ``<path>.sha256`` is written beside it.

    Returns:
        ``{"dense_bytes": size of torch.save(state_dict), "sparse_bytes": size of the written file}``.

    Raises:
        snnprune.files.DiskFullError: the disk is full (a previous file at ``path`` is unchanged).
        PermissionError: the folder is not writable.
    """
    data = _encode(state_dict)
    files.save(data, path)
    dense = {k: v.detach().cpu() for k, v in state_dict.items()}
    return {"dense_bytes": _nbytes(dense), "sparse_bytes": Path(path).stat().st_size}


def _decode(key: str, entry: Any, path: Path) -> Tensor:
    """The dense tensor of one values + bitmask ``entry``, after checking its structure."""

    def corrupt(problem: str) -> CorruptFileError:
        return CorruptFileError(path, f"is corrupt: tensor {key!r} {problem}", _FIX)

    if not isinstance(entry, dict) or set(entry) != {"shape", "mask", "values"}:
        raise corrupt("is neither a tensor nor a {shape, mask, values} entry")
    shape, mask, values = entry["shape"], entry["mask"], entry["values"]
    if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)):
        raise corrupt(f"has the shape {shape!r}, not a list of sizes")
    numel = math.prod(shape)
    if not (torch.is_tensor(mask) and mask.dtype == torch.uint8 and mask.dim() == 1):
        raise corrupt("has a mask that is not a 1-D uint8 tensor")
    if mask.numel() != (numel + 7) // 8:
        raise corrupt(f"has a mask of {mask.numel()} bytes for shape {shape} ({(numel + 7) // 8} expected)")
    if not (torch.is_tensor(values) and values.dim() == 1):
        raise corrupt("has values that are not a 1-D tensor")
    bits = unpack_bits(mask, numel)
    if int(bits.sum()) != values.numel():
        raise corrupt(f"has {values.numel()} values but {int(bits.sum())} set bits in its mask")
    dense = values.new_zeros(numel)
    dense[bits] = values
    return dense.view(shape)


def load_sparse(path: str | Path) -> dict[str, Tensor]:
    """Read a file written by :func:`save_sparse` back into a dense ``state_dict``.

    Args:
        path: the file (its ``.sha256`` digest, when present, is checked first).

    Returns:
        The dense tensors.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a sparse weight file (another torch file).
        snnprune.files.CorruptFileError: changed bytes (digest, zip CRC), or an entry whose shape, mask
            and values do not fit together.
    """
    path = Path(path)
    data = files.load(path)
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise ValueError(
            f"{path}: not a sparse weight file (no format tag {_FORMAT!r}); pass a file written by "
            "snnprune.structured.save_sparse"
        )
    if not isinstance(data.get("tensors"), dict):
        raise CorruptFileError(path, "is corrupt: it has no dict of tensors", _FIX)
    return {key: t if torch.is_tensor(t) else _decode(key, t, path) for key, t in data["tensors"].items()}
