"""Sparse weight files for unstructured pruning: values + bitmask, loading back to the same dense tensors.

A ``state_dict`` saved with ``torch.save`` stores every zero (4 bytes each in fp32). :func:`save_sparse`
stores each floating tensor whose zeros make it worthwhile (density below 31/32 for fp32) as its non-zero
values in row-major order plus a bitmask (1 bit per entry, packed in ``uint8``); every other tensor is
stored as is. :func:`load_sparse` rebuilds the dense tensors bit for bit.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["load_sparse", "pack_bits", "save_sparse", "unpack_bits"]

_FORMAT = "snnprune-sparse-v1"
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
        path: output file (read back with :func:`load_sparse`).

    Returns:
        ``{"dense_bytes": size of torch.save(state_dict), "sparse_bytes": size of the written file}``.
    """
    data = _encode(state_dict)
    torch.save(data, path)
    dense = {k: v.detach().cpu() for k, v in state_dict.items()}
    return {"dense_bytes": _nbytes(dense), "sparse_bytes": Path(path).stat().st_size}


def load_sparse(path: str | Path) -> dict[str, Tensor]:
    """Read a file written by :func:`save_sparse` back into a dense ``state_dict``.

    Raises:
        ValueError: not a sparse file.
    """
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise ValueError(f"{path!s} is not a sparse weight file written by snnprune.structured.save_sparse")
    out: dict[str, Tensor] = {}
    for key, t in data["tensors"].items():
        if isinstance(t, dict):
            shape, values = t["shape"], t["values"]
            numel = 1
            for s in shape:
                numel *= s
            mask = unpack_bits(t["mask"], numel)
            dense = values.new_zeros(numel)
            dense[mask] = values
            out[key] = dense.view(shape)
        else:
            out[key] = t
    return out
