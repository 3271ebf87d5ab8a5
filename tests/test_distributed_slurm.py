"""`srun python pretrain.py ...`: ranks come from SLURM's variables when torchrun's are absent.

Two plain processes get only what ``srun`` sets (SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID) plus the
MASTER_ADDR / MASTER_PORT a batch script exports, as in the README's SLURM example; they must form one
gloo group (an all-reduce sums their ranks). Without MASTER_ADDR the error says what to export.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RANK_SCRIPT = """
import json, torch, torch.distributed as dist
from engine.distributed import init_distributed, destroy_distributed
info = init_distributed("cpu", timeout_minutes=1)
total = torch.tensor([float(info.rank)])
dist.all_reduce(total)
print(json.dumps({"rank": info.rank, "world": info.world_size, "local": info.local_rank,
                  "backend": info.backend, "sum": total.item()}))
destroy_distributed()
"""


def _slurm_env(**values):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") and not k.startswith("SLURM_")}
    return dict(env, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **values)


def test_srun_variables_make_one_process_group():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=_slurm_env(SLURM_PROCID=str(r), SLURM_NTASKS="2", SLURM_LOCALID=str(r),
                                             MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
             for r in (0, 1)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert [(o["rank"], o["world"], o["local"], o["backend"]) for o in outputs] == [(0, 2, 0, "gloo"), (1, 2, 1, "gloo")]
    assert [o["sum"] for o in outputs] == [1.0, 1.0]  # 0 + 1 on both ranks: one group


def test_srun_without_master_address_names_what_to_export():
    proc = subprocess.run([sys.executable, "-c", RANK_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=_slurm_env(SLURM_PROCID="0", SLURM_NTASKS="2", SLURM_LOCALID="0"))
    assert proc.returncode != 0
    assert "MASTER_ADDR" in proc.stderr and "a SLURM script must export them" in proc.stderr


def test_one_slurm_task_is_a_plain_process():
    proc = subprocess.run([sys.executable, "-c", RANK_SCRIPT.replace("dist.all_reduce(total)", "")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env=_slurm_env(SLURM_PROCID="0", SLURM_NTASKS="1", SLURM_LOCALID="0"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["backend"] is None
