"""Run pretrain.py's main under test hooks, in a plain process or under torchrun (tests/test_engine_processes.py).

    python tests/engine_worker.py MODE OUT_DIR STOP_AT -- [pretrain.py arguments]

MODE: ``record`` writes every sample index this rank trained on to OUT_DIR/indices_rank<r>.json, and
(STOP_AT > 0) rank 0 sends itself SIGTERM after optimizer step STOP_AT, with a host check every step;
``broken_rank1``: rank 1's images are all unreadable (the others' are fine).
"""

import json
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import engine.logger  # noqa: E402
import engine.loop  # noqa: E402
import pretrain  # noqa: E402
from data.pretrain_dataset import PretrainDataset  # noqa: E402
from tasks.pretrain import PretrainTask  # noqa: E402


def main() -> int:
    mode, out, stop_at = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    args = sys.argv[sys.argv.index("--") + 1:]
    rank = int(os.environ.get("RANK", "0"))
    if mode == "record":
        seen: list[int] = []
        real_forward = PretrainTask.forward

        def forward(self, model, batch, ctx):
            seen.extend(batch["index"].tolist())
            (out / f"indices_rank{rank}.json").write_text(json.dumps(seen))
            return real_forward(self, model, batch, ctx)

        PretrainTask.forward = forward
        if stop_at > 0:
            engine.loop.CHECK_EVERY = 1
            real_log_step = engine.logger.TrainLogger.log_step

            def log_step(self, *a, **k):
                real_log_step(self, *a, **k)
                if rank == 0 and self.global_step == stop_at:
                    signal.raise_signal(signal.SIGTERM)

            engine.logger.TrainLogger.log_step = log_step
    elif mode == "broken_rank1":
        real_load = PretrainDataset._load

        def load(self, index):
            if rank == 1:
                from data.image_io import ImageError

                raise ImageError("missing", f"{self.image_path(index)}: no such file (test)")
            return real_load(self, index)

        PretrainDataset._load = load
    return pretrain.main(args)


if __name__ == "__main__":
    sys.exit(main())
