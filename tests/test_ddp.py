"""torchrun --nproc_per_node=2 on CPU (gloo): ranks stay identical and both fill the queues."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.pretrain_helpers import tiny_pretrain_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_two_rank_gloo_run_keeps_ranks_identical(tmp_path):
    batch, world, steps = 4, 2, 2
    # 16 pairs / (4 x 2) = 2 steps; queue big enough that nothing wraps: 2 steps x 8 features
    config = tiny_pretrain_config(tmp_path, max_epoch=1, batch_size=batch, queue_size=40, num_workers=0)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    torchrun = str(Path(sys.executable).parent / "torchrun")
    if not Path(torchrun).exists():
        torchrun = shutil.which("torchrun")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", str(ROOT / "tests" / "ddp_worker.py"),
         str(config_path), str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]
    assert all(r["world"] == world and r["global_step"] == steps for r in ranks)
    assert ranks[0]["first_ids"] != ranks[1]["first_ids"]  # each rank had its own shard
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key  # weights, momentum copies, queues
    # both ranks' features went into the queue: the pointer moved by batch x world per step
    assert states[0]["queue_ptr"].item() == steps * batch * world
    initial = torch.load(Path(config["output_dir"]) / "checkpoint_last.pth", weights_only=True)["model"]
    filled = states[0]["image_queue"][:, : steps * batch * world]
    assert torch.allclose(filled.norm(dim=0), torch.ones(steps * batch * world), atol=1e-4)
    assert torch.equal(initial["image_queue"], states[0]["image_queue"])  # rank 0's checkpoint is the same state
