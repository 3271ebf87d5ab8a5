"""Near-copy search of 64-bit hashes against brute force: every pair within the distance, no other."""

import numpy as np
import pytest

from data.hash_neighbours import HashNeighbours, chunk_count, near_pairs, popcount64


def _brute_force(values: np.ndarray, distance: int) -> set[tuple[int, int]]:
    ints = [int(v) for v in values]
    return {(i, j) for i in range(len(ints)) for j in range(i + 1, len(ints))
            if (ints[i] ^ ints[j]).bit_count() <= distance}


def _flip(value: int, bits) -> int:
    for b in bits:
        value ^= 1 << int(b)
    return value


def _planted(rng, n_base: int, distance: int) -> np.ndarray:
    """Random hashes, each with copies at 0..distance+2 flipped bits; plus skew: many share their high bits."""
    base = [int(x) for x in rng.integers(0, 2**63, n_base, dtype=np.int64)] + [2**64 - 1]
    values = list(base)
    for h in base:
        for flips in range(distance + 3):
            values.append(_flip(h, rng.choice(64, flips, replace=False)))
    common = int(rng.integers(0, 2**31)) << 33  # 300 hashes alike in their top 31 bits: big buckets
    values += [common | int(x) for x in rng.integers(0, 2**33, 300)]
    return np.asarray(values, dtype=np.uint64)


@pytest.mark.parametrize("distance", [0, 2, 4, 7])
def test_near_pairs_equal_brute_force(distance):
    values = np.unique(_planted(np.random.default_rng(distance), 120, distance))
    first, second = near_pairs(values, distance)
    found = set(zip(first.tolist(), second.tolist()))
    assert len(found) == len(first)  # each pair once
    assert found == _brute_force(values, distance)
    assert len(found) >= 120 * distance  # each base hash has planted copies at 1..distance flipped bits


def test_popcount_and_chunk_count():
    values = np.asarray([0, 1, 2**64 - 1, 0b1011 << 60], dtype=np.uint64)
    assert popcount64(values).tolist() == [0, 1, 64, 3]
    assert chunk_count(1000, 4) == 6  # 1000 hashes: keys of >= 16 bits (21 here, 15 sorts)
    m = chunk_count(15_000_000, 4)  # 15M: keys of >= 30 bits, at most 100 sorts
    assert 64 * (m - 4) // m >= 30 and m == 8
    with pytest.raises(ValueError, match="0..31"):
        near_pairs(values, 40)


def test_neighbour_table_groups_repeats_and_marks():
    far = 2**40 | 2**45 | 2**50
    values = np.asarray([5, 5, 5 ^ 0b11, far, 5, far ^ 1, 2**60], dtype=np.uint64)
    table = HashNeighbours(values, 2)
    assert table.group[0] == table.group[1] == table.group[4]  # repeats share one entry
    near_five = set(table.near(int(table.group[0])).tolist())
    assert near_five == {int(table.group[0]), int(table.group[2])}
    assert table.pairs == 2  # {5, 5^3} and {far, far^1}
    marks = np.full(len(table.distinct), -1)
    marks[table.group[5]] = 7
    nearest = table.nearest_marked(marks)
    assert nearest[table.group[3]] == 7 and nearest[table.group[5]] == 7
    assert nearest[table.group[0]] == -1 and nearest[table.group[6]] == -1
