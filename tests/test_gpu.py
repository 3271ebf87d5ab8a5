"""GPU paths, run on purpose where a CUDA device exists: ``pytest -m gpu`` (bench/gpu_check.sh runs them).

bf16 training with fused attention, fp32 ITC logits under CUDA autocast, the peak memory of a step,
the retrieval evaluation on the GPU against the CPU, and (with 2 GPUs) a 2-process NCCL run.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.pretrain_helpers import tiny_pretrain_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
ROOT = Path(__file__).resolve().parents[1]


def test_bf16_training_on_cuda_with_fused_attention(tmp_path, capsys):
    from models.med import MedSelfAttention
    from tasks.pretrain import run_pretraining

    torch.cuda.reset_peak_memory_stats()
    result = run_pretraining(tiny_pretrain_config(tmp_path, device="cuda", precision="bf16", max_epoch=1))
    assert result.global_step == 4
    attention = [m for m in result.model.modules() if isinstance(m, MedSelfAttention)]
    assert attention and all(m.attn_impl == "sdpa" and not m.save_attention for m in attention)
    line = [json.loads(l) for l in (Path(result.output_dir) / "log.txt").read_text().splitlines() if '"epoch"' in l][-1]
    assert all(torch.isfinite(torch.tensor(line[k])) for k in ("train_loss_ita", "train_loss_itm", "train_loss_lm"))
    peak = torch.cuda.max_memory_allocated() / 2**20
    print(f"peak CUDA memory of the tiny bf16 run: {peak:.1f} MiB")
    assert peak > 0


def test_itc_logits_fp32_under_cuda_bf16_autocast():
    from models.losses import similarity_logits

    feats = torch.nn.functional.normalize(torch.randn(8, 64, device="cuda"), dim=1)
    bank = torch.nn.functional.normalize(torch.randn(64, 500, device="cuda"), dim=0)
    temp = torch.tensor(0.07, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert (feats @ bank).dtype == torch.bfloat16
        logits = similarity_logits(feats, bank, temp)
    assert logits.dtype == torch.float32
    assert torch.allclose(logits, feats @ bank / temp, atol=1e-5)


def test_retrieval_evaluation_on_cuda_equals_cpu(tmp_path, tokenizer):
    from data.retrieval_dataset import RetrievalEvalDataset
    from data.transforms import build_image_transform
    from models import build_model
    from models.retrieval_eval import evaluate_retrieval
    from tests.conftest import tiny_model_config
    from tests.test_retrieval_eval import write_eval_set

    torch.manual_seed(0)
    model = build_model("retrieval", tiny_model_config(), tokenizer=tokenizer).eval()
    dataset = RetrievalEvalDataset(write_eval_set(tmp_path), build_image_transform("test", 32))
    cpu = evaluate_retrieval(model, dataset, k_test=10).metrics
    gpu = evaluate_retrieval(model.cuda(), dataset, k_test=10, device="cuda").metrics
    assert {k: round(v, 6) for k, v in cpu.items()} == {k: round(v, 6) for k, v in gpu.items()}


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_process_nccl_run(tmp_path):
    config = tiny_pretrain_config(tmp_path, device="cuda", precision="bf16", max_epoch=1, batch_size=2)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    torchrun = str(Path(sys.executable).parent / "torchrun")
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", str(ROOT / "pretrain.py"), "--config",
                           str(path)], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    saved = torch.load(Path(config["output_dir"]) / "checkpoint_last.pth", weights_only=True)
    assert len(saved["rng"]) == 2 and saved["epoch_finished"]
