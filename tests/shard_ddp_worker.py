"""Run under torchrun by tests/test_shards_ddp.py: one epoch from shards and from JSON on each rank, plus a resume.

Writes ``rank<r>.json``: the indices this rank read per source, and the indices of an interrupted
(2 batches) then resumed pass, to be compared with the uninterrupted one.
"""

import json
import sys
from pathlib import Path

from data.pretrain_dataset import PretrainDataset, build_pretrain_loader
from data.shards.dataset import ShardDataset, ShardTrainingData
from data.shards.manifest import Manifest
from data.shards.order import StreamOrder
from data.transforms import build_image_transform
from engine.distributed import destroy_distributed, get_rank, init_distributed


def shard_data(manifest, workers):
    ds = ShardDataset([Manifest.load(manifest)], build_image_transform("test", 16), seed=5)
    return ShardTrainingData(ds, StreamOrder(ds.source_specs(), seed=5, lanes=4, shuffle_buffer=3),
                             batch_size=2, num_workers=workers)


def main() -> None:
    ann, manifest, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    init_distributed("cpu")
    rank = get_rank()
    result = {}
    data = shard_data(manifest, workers=1)
    data.set_epoch(0)
    result["shards"] = [i for batch in data for i in batch["index"].tolist()]

    json_ds = PretrainDataset(ann, build_image_transform("test", 16))
    loader = build_pretrain_loader(json_ds, batch_size=2, num_workers=0, seed=5)
    loader.set_epoch(0)
    result["json"] = [i for batch in loader for i in batch["index"].tolist()]

    first = shard_data(manifest, workers=0)
    first.set_epoch(0)
    it = iter(first)
    head = [i for _ in range(2) for i in next(it)["index"].tolist()]
    state = first.state_dict(consumed=4)
    resumed = shard_data(manifest, workers=0)
    resumed.load_state_dict(state)
    resumed.set_epoch(0)
    result["resumed"] = head + [i for batch in resumed for i in batch["index"].tolist()]
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    destroy_distributed()


if __name__ == "__main__":
    main()
