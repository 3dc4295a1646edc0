"""torchrun/DDP helpers: initialisation from the environment, rank queries, metric all-reduce."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["all_reduce_sum", "cleanup", "get_rank", "get_world_size", "init_distributed", "is_main_process"]


def init_distributed(device: torch.device) -> bool:
    """Initialise the default process group when launched by ``torchrun`` (``WORLD_SIZE > 1``): NCCL on
    CUDA, gloo on CPU; ``device`` is this process's training device. Returns whether running distributed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False
    if dist.is_initialized():
        return True
    if device.type == "cuda":
        torch.cuda.set_device(device if device.index is not None else int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def get_rank() -> int:
    """Global rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0: the only process that writes files."""
    return get_rank() == 0


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """The sums of ``values`` (local sums, e.g. loss, correct and sample counts) over all processes, as
    float64 on ``device`` (CUDA for NCCL); the values themselves when not distributed."""
    if get_world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def cleanup() -> None:
    """Destroy the process group if one was initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
