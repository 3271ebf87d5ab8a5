"""The pipeline pieces under a real 2-process gloo group (CPU): shards, skip/metric reduction, RNG gathering."""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from data.pretrain_dataset import SkipCounter
    from data.sampler import ResumableDistributedSampler
    from engine.checkpoint import (build_training_state, gather_rng_states, load_training_state,
                                     rng_state_for_this_rank, save_training_state)
    from engine.distributed import all_gather_object, barrier, destroy_distributed, init_distributed
    from engine.logger import TrainLogger

    info = init_distributed(device="cpu", timeout_minutes=1)
    try:
        torch.manual_seed(100 + rank)  # per-rank model RNG, as BLIP seeds seed + rank
        sampler = ResumableDistributedSampler(11, seed=4)  # rank/world from the process group
        sampler.set_epoch(1)
        shards = all_gather_object(list(sampler))

        skips = SkipCounter()
        for i in range(rank + 1):
            skips.add("missing", f"/rank{rank}/img{i}.png")
        merged = skips.merged_across_ranks()

        logger = TrainLogger(out_dir, log_every=0, tensorboard=False)
        logger.start_epoch(0, steps_in_epoch=2)
        values = [1.0, 2.0] if rank == 0 else [3.0, 6.0]
        for v in values:
            logger.log_step({"loss": torch.tensor(v)}, lr=0.5, samples=4)
        stats = logger.end_epoch()
        logger.close()

        model = torch.nn.Linear(2, 2)
        opt = torch.optim.AdamW(model.parameters())
        rng = gather_rng_states()
        ckpt = build_training_state(model=model, optimizer=opt, config={}, epoch=0, global_step=2, step_in_epoch=2,
                                epoch_finished=True, sampler_state=sampler.state_dict(consumed=0),
                                rng_states=rng, skip_state=merged.state_dict())
        if rank == 0:
            save_training_state(ckpt, out_dir)
        barrier()
        loaded = load_training_state(os.path.join(out_dir, "checkpoint_last.pth"))
        mine = rng_state_for_this_rank(loaded)
        result = {
            "rank": info.rank, "world": info.world_size, "backend": info.backend, "shards": shards,
            "skip_counts": dict(merged.counts), "skip_examples": merged.examples, "stats": stats,
            "n_rng": len(loaded["rng"]), "own_rng": torch.equal(mine["torch"], torch.get_rng_state()),
        }
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
            json.dump(result, handle)
    finally:
        destroy_distributed()


@pytest.mark.timeout(120)
def test_two_rank_gloo_pipeline(tmp_path):
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True, start_method="fork")
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    for r, res in enumerate(results):
        assert (res["rank"], res["world"], res["backend"]) == (r, WORLD, "gloo")
        a, b = res["shards"]
        assert len(a) == len(b) == 5 and not set(a) & set(b)  # 11 samples, drop_last: 5 each, disjoint
        assert res["skip_counts"] == {"missing": 3}
        assert sorted(w for _, w in res["skip_examples"]) == [
            "/rank0/img0.png", "/rank1/img0.png", "/rank1/img1.png"]
        assert res["stats"]["train_loss"] == pytest.approx(3.0)  # (1 + 2 + 3 + 6) / 4 over both ranks
        assert res["n_rng"] == WORLD and res["own_rng"]  # each rank gets its own RNG state back
    assert results[0]["shards"] == results[1]["shards"]
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["train_loss"] == pytest.approx(3.0)  # written once, by rank 0
