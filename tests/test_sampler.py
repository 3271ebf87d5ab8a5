"""Resumable distributed sampler: same shards as torch's DistributedSampler, exact mid-epoch resume."""

import pytest
from torch.utils.data import DistributedSampler

from data.sampler import ResumableDistributedSampler


@pytest.mark.parametrize("n, world, drop_last", [(10, 3, True), (10, 3, False), (12, 4, True), (7, 2, False)])
def test_offset_zero_equals_torch_distributed_sampler(n, world, drop_last):
    data = list(range(n))
    for epoch in (0, 1, 5):
        for rank in range(world):
            ours = ResumableDistributedSampler(data, num_replicas=world, rank=rank, seed=7, drop_last=drop_last)
            ref = DistributedSampler(data, num_replicas=world, rank=rank, seed=7, drop_last=drop_last)
            ours.set_epoch(epoch)
            ref.set_epoch(epoch)
            assert list(ours) == list(ref)
            assert len(ours) == len(ref)


def test_shards_are_disjoint_equal_and_change_per_epoch():
    shards = {}
    for epoch in (0, 1):
        parts = []
        for rank in range(4):
            s = ResumableDistributedSampler(103, num_replicas=4, rank=rank, seed=1)
            s.set_epoch(epoch)
            parts.append(list(s))
        assert len({len(p) for p in parts}) == 1 and len(parts[0]) == 25
        flat = [i for p in parts for i in p]
        assert len(set(flat)) == len(flat) == 100
        shards[epoch] = parts
    assert shards[0] != shards[1]


def test_single_process_defaults_without_process_group():
    s = ResumableDistributedSampler(5, seed=0, shuffle=False)
    assert (s.num_replicas, s.rank) == (1, 0)
    assert list(s) == [0, 1, 2, 3, 4]


def test_resume_mid_epoch_yields_exactly_the_rest():
    world, batch = 2, 3
    full = {}
    for rank in range(world):
        s = ResumableDistributedSampler(40, num_replicas=world, rank=rank, seed=3)
        s.set_epoch(2)
        full[rank] = list(s)
    consumed = 4 * batch  # 4 batches done on each rank
    for rank in range(world):
        s = ResumableDistributedSampler(40, num_replicas=world, rank=rank, seed=3)
        s.set_epoch(2)
        state = s.state_dict(consumed=consumed)
        assert state["offset"] == consumed * world
        fresh = ResumableDistributedSampler(40, num_replicas=world, rank=rank, seed=3)
        fresh.load_state_dict(state)
        fresh.set_epoch(2)  # the loop's own call at the top of the epoch keeps the resume point
        assert list(fresh) == full[rank][consumed:]
        assert len(fresh) == len(full[rank]) - consumed
        # a second resume inside the resumed pass counts from the resume point
        again = fresh.state_dict(consumed=2 * batch)
        assert again["offset"] == (consumed + 2 * batch) * world
        # the next epoch starts from 0 again
        fresh.set_epoch(3)
        ref = ResumableDistributedSampler(40, num_replicas=world, rank=rank, seed=3)
        ref.set_epoch(3)
        assert list(fresh) == list(ref)


def test_resume_on_a_different_world_size_continues_the_same_permutation():
    before = []
    for rank in range(2):
        s = ResumableDistributedSampler(31, num_replicas=2, rank=rank, seed=9)
        s.set_epoch(0)
        before.append(list(s)[:5])
    state = s.state_dict(consumed=5)
    after = []
    for rank in range(3):
        s = ResumableDistributedSampler(31, num_replicas=3, rank=rank, seed=9)
        s.load_state_dict(state)
        s.set_epoch(0)
        after.append(list(s))
    seen = {i for p in before for i in p} | {i for p in after for i in p}
    # 10 consumed on 2 ranks, the other 21 shared by 3: every sample exactly once in the epoch
    assert seen == set(range(31))
    assert sum(map(len, before)) + sum(map(len, after)) == 31


def test_state_is_plain_and_mismatch_is_reported():
    s = ResumableDistributedSampler(10, seed=1)
    state = s.state_dict(consumed=3)
    assert all(isinstance(v, (int, bool)) for v in state.values())
    other = ResumableDistributedSampler(11, seed=1)
    with pytest.raises(ValueError, match="dataset length 10 -> 11"):
        other.load_state_dict(state)
    other.load_state_dict(state, strict=False)
    other.set_epoch(0)
    assert len(list(other)) == 11
    with pytest.raises(ValueError):
        s.state_dict(consumed=-1)
    with pytest.raises(ValueError):
        ResumableDistributedSampler(0)
    with pytest.raises(ValueError):
        ResumableDistributedSampler(5, num_replicas=2, rank=2)


def test_with_epoch_yields_pairs():
    s = ResumableDistributedSampler(4, shuffle=False, with_epoch=True)
    s.set_epoch(6)
    assert list(s) == [(0, 6), (1, 6), (2, 6), (3, 6)]
