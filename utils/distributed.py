"""The one distributed helper: works the same in one plain process and under torchrun/SLURM.

BLIP crashed outside ``torch.distributed``; here every collective degrades to
the identity when no process group is initialised, so models, samplers and
training loops call these functions unconditionally.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "init_distributed",
    "destroy_distributed",
    "is_dist",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "barrier",
    "concat_all_gather",
    "all_gather_with_grad",
    "all_reduce_sum",
    "broadcast_object",
    "all_gather_object",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None: no process group (single process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(*names: str) -> int | None:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return None


def init_distributed(device: str | None = None, timeout_minutes: float = 30.0) -> DistInfo:
    """Initialise the process group from torchrun or SLURM variables, if any.

    * torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT.
    * ``srun python pretrain.py`` sets SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID;
      MASTER_ADDR and MASTER_PORT must be exported by the batch script.
    * Neither (or a world size of 1): no process group, rank 0 of 1.

    ``device``: "cuda", "cpu" or None (CUDA when available). The backend is
    NCCL for CUDA and gloo for CPU.
    """
    rank = _env_int("RANK", "SLURM_PROCID")
    world_size = _env_int("WORLD_SIZE", "SLURM_NTASKS")
    local_rank = _env_int("LOCAL_RANK", "SLURM_LOCALID") or 0
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA device is available")

    if use_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")

    if rank is None or world_size is None or world_size <= 1:
        return DistInfo(rank=0, world_size=1, local_rank=0, device=dev, backend=None)

    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise RuntimeError(
            f"distributed launch (rank {rank} of {world_size}) needs {', '.join(missing)} in the "
            "environment; torchrun sets them, a SLURM script must export them"
        )
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(minutes=timeout_minutes),
            device_id=dev if use_cuda else None,
        )
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, backend=backend)


def destroy_distributed() -> None:
    if is_dist():
        dist.destroy_process_group()


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (same shape on every rank) along dim 0; no gradient."""
    if not is_dist():
        return tensor
    world = dist.get_world_size()
    out = torch.empty((world * tensor.shape[0], *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    dist.all_gather_into_tensor(out, tensor.contiguous())
    return out


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate along dim 0 keeping the autograd graph (gradients flow back to each rank)."""
    if not is_dist():
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (returns the tensor for chaining)."""
    if is_dist():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: object, src: int = 0) -> object:
    """Send a picklable object from ``src`` to every rank."""
    if not is_dist():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_object(obj: object) -> list[object]:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` without a process group).

    For small, rare exchanges (epoch-end skip reports, RNG states at save time).
    """
    if not is_dist():
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
