"""Training-state checkpoints: BLIP-compatible, atomic, pruned, exact to resume.

Top level as BLIP's ``{'model', 'optimizer', 'config', 'epoch'}`` (so BLIP's
own scripts and ``models`` checkpoint IO read ours), plus what an exact resume
needs: global step, position inside the epoch, sampler offset, GradScaler
state, every rank's RNG states and the skip counters.

Everything is stored as tensors and plain Python types (RNG states of numpy and
``random`` converted), so resuming loads with ``torch.load(weights_only=True)``
and never unpickles arbitrary objects.

Files in ``output_dir``: ``checkpoint_step_<global step>.pth`` (the newest
``keep_checkpoints`` kept) and ``checkpoint_last.pth``, a hard link to the
newest one (a copy where links are not supported). Both are written under a
temporary name and renamed, so ``checkpoint_last.pth`` is always a complete
checkpoint even if the job is killed while saving.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from utils.atomic import atomic_open
from utils.errors import CheckpointError
from engine.distributed import all_gather_object, get_rank, unwrap_model

__all__ = [
    "CHECKPOINT_LAST",
    "CHECKPOINT_BEST",
    "capture_rng_state",
    "restore_rng_state",
    "gather_rng_states",
    "read_torch_file",
    "build_training_state",
    "save_training_state",
    "load_training_state",
    "list_checkpoints",
    "find_resume_checkpoint",
    "resume_position",
    "rng_state_for_this_rank",
]

CHECKPOINT_LAST = "checkpoint_last.pth"
CHECKPOINT_BEST = "checkpoint_best.pth"
FORMAT_VERSION = 1
_NUMBERED = re.compile(r"^checkpoint_step_(\d+)\.pth$")
RESUME_KEYS = ("model", "optimizer", "config", "epoch", "global_step", "step_in_epoch", "epoch_finished", "sampler")


# -- RNG state -----------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """This process's torch (CPU + initialised CUDA), numpy and ``random`` states, as tensors/plain types."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {"version": int(py_version), "internal": list(py_internal), "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states only when CUDA is in use here)."""
    torch.set_rng_state(state["torch"].cpu())
    npst = state["numpy"]
    keys = npst["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state((npst["name"], keys, npst["pos"], npst["has_gauss"], npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"]), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def gather_rng_states() -> list[dict[str, Any]]:
    """Every rank's RNG state in rank order (a collective: call on all ranks before rank 0 saves)."""
    return all_gather_object(capture_rng_state())


# -- building and saving ----------------------------------------------------------------


def build_training_state(
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: Mapping[str, Any],
    epoch: int,
    global_step: int,
    step_in_epoch: int,
    epoch_finished: bool,
    sampler_state: Mapping[str, Any],
    scaler: Any | None = None,
    rng_states: list[dict[str, Any]] | None = None,
    skip_state: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict. ``model`` may be DDP-wrapped (the module inside is saved, BLIP's keys).

    ``epoch``: the epoch the checkpoint was taken in (BLIP: the epoch just finished);
    ``step_in_epoch``: optimizer steps done in it; ``epoch_finished``: True at the end of an
    epoch, so a resume starts the next one. ``rng_states``: from :func:`gather_rng_states`
    (defaults to this process's state only). ``extra``: more plain values (e.g. loss history).
    """
    module = unwrap_model(model)
    checkpoint = {
        "model": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "config": dict(config),
        "epoch": int(epoch),
        "global_step": int(global_step),
        "step_in_epoch": int(step_in_epoch),
        "epoch_finished": bool(epoch_finished),
        "sampler": dict(sampler_state),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng_states if rng_states is not None else [capture_rng_state()],
        "skips": dict(skip_state) if skip_state is not None else None,
        "format_version": FORMAT_VERSION,
        "torch_version": str(torch.__version__),  # TorchVersion is not weights_only-loadable
    }
    if extra:
        checkpoint.update(extra)
    return checkpoint


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Numbered checkpoints in ``output_dir``, oldest (lowest step) first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NUMBERED.match(p.name))]
    return [p for _, p in sorted(found)]


def _remove_stale_temporaries(folder: Path) -> None:
    # a save killed mid-write leaves its temporary file (checkpoint-sized) behind
    for path in folder.glob(".checkpoint*.tmp"):
        with contextlib.suppress(OSError):
            path.unlink()


def _link_or_copy_atomic(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.link.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(source, tmp)
    except OSError:
        with atomic_open(target, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, length=16 << 20)
        return
    os.replace(tmp, target)


def save_training_state(
    checkpoint: Mapping[str, Any],
    output_dir: str | Path,
    *,
    keep_checkpoints: int | None = 3,
) -> Path:
    """Write ``checkpoint`` atomically; update ``checkpoint_last.pth``; prune old numbered files.

    ``keep_checkpoints``: numbered files to keep (None: all; 0: only ``checkpoint_last.pth``).
    Call on rank 0 only. Returns the path written (the numbered one when kept).
    """
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(folder)
    last = folder / CHECKPOINT_LAST
    if keep_checkpoints == 0:
        with atomic_open(last, "wb") as handle:
            torch.save(dict(checkpoint), handle)
        for path in list_checkpoints(folder):
            path.unlink()
        return last
    numbered = folder / f"checkpoint_step_{int(checkpoint['global_step']):08d}.pth"
    with atomic_open(numbered, "wb") as handle:
        torch.save(dict(checkpoint), handle)
    _link_or_copy_atomic(numbered, last)
    if keep_checkpoints is not None:
        for path in list_checkpoints(folder)[:-keep_checkpoints]:
            if path != numbered:
                path.unlink()
    return numbered


# -- loading ------------------------------------------------------------------------------


def read_torch_file(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)``; any failure is a CheckpointError that names the file and why.

    The one reader of ``.pth`` files: training state here, model weights in ``models.checkpoint``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, zip errors...
        if not zipfile.is_zipfile(path):
            raise CheckpointError(
                f"{path}: not a torch checkpoint (no complete zip archive: truncated copy or another file type?)"
            ) from None
        raise CheckpointError(f"{path}: cannot load checkpoint: {_short_reason(exc)}") from None


def load_training_state(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint written by :func:`save_training_state`, checked for what a resume needs.

    A model-only file such as BLIP's ``model_base.pth`` is for ``pretrained=``, not ``--resume``:
    the error says so.
    """
    checkpoint = read_torch_file(path, map_location)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(checkpoint).__name__}")
    missing = [key for key in RESUME_KEYS if key not in checkpoint]
    if missing:
        hint = (
            " (it holds model weights only: start from it with pretrained=..., not --resume)"
            if "model" in checkpoint
            else ""
        )
        raise CheckpointError(f"{path}: not a training checkpoint, missing {', '.join(missing)}{hint}")
    return checkpoint


def _short_reason(exc: Exception) -> str:
    """The informative line of torch.load's long error messages."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("WeightsUnpickler error:"):
            return line + " (weights_only=True refuses arbitrary objects; only load files you trust otherwise)"
    return (lines[0] if lines else type(exc).__name__) + " (corrupt or partial file?)"


def find_resume_checkpoint(output_dir: str | Path) -> Path | None:
    """``checkpoint_last.pth`` in ``output_dir``, else the newest numbered checkpoint, else None."""
    folder = Path(output_dir)
    last = folder / CHECKPOINT_LAST
    if last.is_file():
        return last
    numbered = list_checkpoints(folder)
    return numbered[-1] if numbered else None


def resume_position(checkpoint: Mapping[str, Any]) -> tuple[int, int]:
    """(epoch, optimizer steps already done in it) to continue from."""
    if checkpoint["epoch_finished"]:
        return int(checkpoint["epoch"]) + 1, 0
    return int(checkpoint["epoch"]), int(checkpoint["step_in_epoch"])


def rng_state_for_this_rank(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The saved RNG state of this rank (None when the job ran on fewer ranks)."""
    states = checkpoint.get("rng") or []
    rank = get_rank()
    return states[rank] if rank < len(states) else None
