#!/usr/bin/env bash
# The GPU checks in one go, for a machine with a CUDA device: the `pytest -m gpu` tests, BLIP-base
# pretraining speed and memory per precision, and the retrieval re-ranking at COCO-test scale.
# Writes docs/benchmarks/gpu.md (plus gpu_pretrain.md and retrieval_eval_gpu.md beside it).
#   bash bench/gpu_check.sh            # PY=... to use another interpreter (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONUNBUFFERED=1
out=docs/benchmarks/gpu.md
test -d data/phantom_data || "$PY" -m data.phantom --out data/phantom_data --quiet
tests=$("$PY" -m pytest -m gpu -q -s -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -n 25)
"$PY" bench/bench_pretrain.py --gpu --steps 60 --log_every 10 >/dev/null
"$PY" bench/bench_retrieval_eval.py --synthetic 5000x25000 --k_test 256 --device cuda --dtype bf16 >/dev/null
{
  echo "# GPU checks"
  echo
  echo "\`bash bench/gpu_check.sh\` on $(date -u +%F):"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "NCCL", torch.cuda.nccl.version())'
  echo '```'
  echo
  echo "## pytest -m gpu"
  echo
  echo '```'
  echo "$tests"
  echo '```'
  echo
  sed 's/^# /## /' docs/benchmarks/gpu_pretrain.md
  echo
  sed 's/^# /## /' docs/benchmarks/retrieval_eval_gpu.md
} > "$out.tmp"
mv "$out.tmp" "$out"
cat "$out"
