"""Loader worker processes: they ignore the job's stop signals, and are still ended, never waited for forever.

Workers ignore SIGTERM so that a SIGTERM to the whole process group (SLURM, scancel)
leaves the training process to finish its step and save. The other side of that:
Python's multiprocessing SIGTERMs live worker processes at exit and then joins them
without a timeout, so workers left alive at exit hung the process forever (seen in CI
as a train_retrieval.py run that printed its last line and never exited).
"""

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data.loader import ResumableLoader
from data.retrieval_dataset import RetrievalEvalDataset
from data.transforms import build_image_transform
from models.retrieval_eval import compute_features
from tasks.retrieval import RetrievalTask, run_retrieval
from tests.pretrain_helpers import raise_signal_after_step
from tests.test_retrieval_eval import model, write_eval_set  # noqa: F401  (fixture)
from tests.test_retrieval_task import tiny_retrieval_config

ROOT = Path(__file__).resolve().parents[1]

LOADER_SCRIPT = """
import os, signal, sys, weakref
# Any library may create a weakref.finalize before torch is imported; its exit hook then runs after
# torch's exit flag, too late to shut the workers down: the loader must not rely on it.
EARLY = weakref.finalize(signal, print, end="")
import torch
from data.loader import ResumableLoader

class Numbers(torch.utils.data.Dataset):
    def __len__(self):
        return 16
    def __getitem__(self, index_epoch):
        return torch.tensor(index_epoch[0])

def collate(items):
    return {"x": torch.stack(items), "skipped": []}

loader = ResumableLoader(Numbers(), batch_size=4, collate_fn=collate, num_workers=2)
for _ in loader:  # a whole epoch: the persistent workers now wait for the next one
    pass
next(iter(loader))  # and a second epoch begun
for pid in loader.loader._iterator._workers:
    os.kill(pid.pid, signal.SIGTERM)  # the job's SIGTERM reaching the workers: ignored
print("workers", *[w.pid for w in loader.loader._iterator._workers], flush=True)
if sys.argv[1] == "close":
    loader.close()
KEEP = loader  # alive until the interpreter exits
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize("how", ["close", "exit"])
def test_a_process_with_signalled_loader_workers_exits_promptly(how):
    """Closed explicitly, or left alive at interpreter exit: the process ends, and so do its workers."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", LOADER_SCRIPT, how], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)  # before the fix: a hang, here a TimeoutExpired
    assert done.returncode == 0, done.stderr
    pids = [int(p) for p in done.stdout.split()[1:]]
    assert len(pids) == 2 and not any(_alive(pid) for pid in pids)


def test_close_ends_the_workers_and_the_loader_still_iterates(tmp_path):
    class Numbers(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, index_epoch):
            return torch.tensor(index_epoch[0])

    loader = ResumableLoader(Numbers(), batch_size=4, num_workers=2,
                             collate_fn=lambda items: {"x": torch.stack(items), "skipped": []})
    first = sorted(torch.cat([b["x"] for b in loader]).tolist())
    workers = list(loader.loader._iterator._workers)
    loader.close()
    assert not any(w.is_alive() for w in workers)
    loader.close()  # twice is harmless
    assert sorted(torch.cat([b["x"] for b in loader]).tolist()) == first == list(range(8))
    loader.close()


@pytest.mark.parametrize("stop", [None, 2])
def test_a_training_run_leaves_no_loader_worker_behind(tmp_path, monkeypatch, stop):
    """Finished, or stopped by SIGTERM mid-epoch (the persistent workers then wait for more indices).

    The training data stays referenced (here by the test; in the CLI by whatever still holds the
    trainer at exit), so only the engine's close() can end the workers before the interpreter exits.
    """
    built = []
    real_build = RetrievalTask.build_train_data

    def build_and_keep(self, *args, **kwargs):
        built.append(real_build(self, *args, **kwargs))
        return built[-1]

    monkeypatch.setattr(RetrievalTask, "build_train_data", build_and_keep)
    before = set(multiprocessing.active_children())
    config = tiny_retrieval_config(tmp_path, max_epoch=2, k_test=3, num_workers=2)
    with raise_signal_after_step(stop) if stop else contextlib.nullcontext():
        result = run_retrieval(config)
    assert result.global_step == (stop or 16) and len(built) == 1
    assert set(multiprocessing.active_children()) <= before


class _SignalledOnce(torch.utils.data.Dataset):
    """An evaluation set whose loader worker gets a SIGTERM while loading, as a group signal would."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        if index == 0 and torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.dataset[index]


def test_evaluation_loader_workers_survive_the_jobs_sigterm(model, tmp_path):  # noqa: F811
    dataset = RetrievalEvalDataset(write_eval_set(tmp_path, n_images=6), build_image_transform("test", 32))
    wrapped = _SignalledOnce(dataset)
    wrapped.texts = dataset.texts
    features = compute_features(model, wrapped, batch_size=2, num_workers=2)
    reference = compute_features(model, dataset, batch_size=2)
    assert torch.allclose(features.image_feat, reference.image_feat, atol=1e-6)
