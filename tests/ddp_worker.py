"""Run under torchrun by tests/test_ddp.py: a few pretraining steps, then each rank saves its state."""

import json
import sys
from pathlib import Path

import torch

from engine.config import load_config
from tasks.pretrain import PRETRAIN_SCHEMA, run_pretraining


def main() -> None:
    config_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    config = load_config(config_path, schema=PRETRAIN_SCHEMA)
    import os

    rank = int(os.environ["RANK"])
    seen = {}
    from models.blip_pretrain import BlipPretrain

    real_forward = BlipPretrain.forward

    def forward(self, image, text_ids, text_atts, alpha, **kwargs):
        seen["world"] = torch.distributed.get_world_size()
        seen.setdefault("first_ids", text_ids[:, :4].tolist())
        return real_forward(self, image, text_ids, text_atts, alpha, **kwargs)

    BlipPretrain.forward = forward
    result = run_pretraining(config)
    torch.save({k: v.cpu() for k, v in result.model.state_dict().items()}, out / f"rank{rank}.pt")
    (out / f"rank{rank}.json").write_text(json.dumps({**seen, "global_step": result.global_step}))


if __name__ == "__main__":
    main()
