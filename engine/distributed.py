"""The one distributed helper: works the same in one plain process and under torchrun/SLURM.

BLIP crashed outside ``torch.distributed``; here every collective degrades to
the identity when no process group is initialised, so models, samplers and
training loops call these functions unconditionally.
"""

from __future__ import annotations

import datetime
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "init_distributed",
    "destroy_distributed",
    "launch_rank",
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
    "unwrap_model",
    "PeerFailureWatch",
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


def launch_rank() -> int:
    """This process's rank as the launcher set it (0 for a plain process); valid without a process group."""
    return _env_int("RANK", "SLURM_PROCID") or 0


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


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP / ``torch.compile`` wrappers (the one place that knows them)."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


class PeerFailureWatch:
    """When one rank fails, every other rank stops within seconds instead of hanging.

    Without it, a rank that raises (unreadable data, out of memory) leaves the
    others waiting inside their next collective until the process-group timeout
    (30 minutes here, hours with some launchers): the job looks alive and burns
    its allocation. On entry each rank starts a daemon thread that polls one key
    in the process group's rendezvous store; a rank leaving the block with an
    exception writes its message there, and the others print one line naming it
    and exit with status 1. Works the same under torchrun and SLURM's srun, with
    gloo and NCCL. Without a process group it does nothing.
    """

    def __init__(self, poll_seconds: float = 1.0):
        self.poll_seconds = poll_seconds
        self._store: Any = None
        self._key = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeerFailureWatch":
        if not is_dist():
            return self
        try:
            from torch.distributed.distributed_c10d import _get_default_store

            self._store = _get_default_store()
        except (ImportError, RuntimeError, ValueError):  # private API moved: fall back to the timeout
            return self
        generation = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        token = broadcast_object(os.urandom(8).hex())  # one key per job, not per store
        self._key = f"medvlp/failed/{generation}/{token}"
        self._thread = threading.Thread(target=self._poll, name="medvlp-peer-failure-watch", daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                if not self._store.check([self._key]):
                    continue
                failed_rank, _, message = self._store.get(self._key).decode("utf-8", "replace").partition("\t")
            except Exception:  # the store went away: the job is ending anyway
                return
            if self._stop.is_set():
                return
            sys.stdout.flush()
            print(f"rank {get_rank()}: stopping because rank {failed_rank} failed: {message}",
                  file=sys.stderr, flush=True)
            os._exit(1)

    def report(self, message: str) -> None:
        """Tell the other ranks that this one failed (also called by ``__exit__`` on an exception)."""
        if self._store is None:
            return
        self._stop.set()  # this rank reports; it must not also exit through its own watcher
        try:
            self._store.set(self._key, f"{get_rank()}\t{message}")
        except Exception:
            return
        # Stay a moment before exiting: the others must read the key (they poll) before this
        # process's exit closes its connections and fails their collective with a bare gloo/NCCL error.
        time.sleep(2 * self.poll_seconds + 0.5)

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None and self._store is not None and not self._stop.is_set():
            first_line = (str(exc).strip().splitlines() or [exc_type.__name__])[0]
            self.report(f"{exc_type.__name__}: {first_line}"[:2000])
        self._stop.set()
