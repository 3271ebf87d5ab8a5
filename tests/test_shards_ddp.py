"""torchrun --nproc_per_node=2 (gloo, CPU): every sample read exactly once per epoch, from shards as from JSON."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from data.shards.writer import PrepareSettings, prepare_shards
from tests.shard_helpers import make_json_set

ROOT = Path(__file__).resolve().parents[1]


def _torchrun() -> str | None:
    candidate = Path(sys.executable).parent / "torchrun"
    return str(candidate) if candidate.exists() else shutil.which("torchrun")


@pytest.mark.skipif(_torchrun() is None, reason="torchrun not installed")
def test_two_ranks_read_every_sample_once_from_shards_and_json_and_resume_exactly(tmp_path):
    ann = make_json_set(tmp_path / "src", 20, bad=False)  # 20 samples / (2 ranks x batch 2) = 5 steps
    prepare_shards([ann], tmp_path / "shards", PrepareSettings(max_side=64, shard_samples=3))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [_torchrun(), "--standalone", "--nproc_per_node=2", str(ROOT / "tests" / "shard_ddp_worker.py"),
         str(ann), str(tmp_path / "shards"), str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for kind in ("shards", "json"):
        seen = ranks[0][kind] + ranks[1][kind]
        assert sorted(seen) == list(range(20)), kind  # each sample exactly once across the two ranks
        assert len(ranks[0][kind]) == len(ranks[1][kind]) == 10
    for rank in ranks:
        assert rank["resumed"] == rank["shards"]
