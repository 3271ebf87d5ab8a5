"""Which 64-bit perceptual hashes lie within a few bits of each other, for tens of millions of hashes.

Comparing every record with every earlier one is quadratic; a per-record Python bucket search
(pigeonhole on ``distance + 1`` chunks) degrades too, because 13-bit chunks leave ~1,800 hashes
per bucket at 15M records. Here all pairs are found at once with numpy:

* **Multi-index hashing** (Norouzi et al., "Fast search in Hamming space with multi-index hashing",
  CVPR 2012): cut the 64 bits into ``m`` chunks; two hashes within ``d`` bits differ in at most
  ``d`` chunks, so they agree exactly on some ``m - d`` of them. For every choice of ``m - d``
  chunks, the hashes are sorted by those chunks and neighbours in the sorted order with equal
  keys become candidate pairs; the true distance is then checked. ``m`` grows with the number of
  hashes so that a key has about ``log2(n) + 6`` bits and buckets stay small (15M hashes, d = 4:
  8 chunks, 70 sorts of 32-bit keys).
* Identical hashes are merged first (``np.unique``), so a thousand blank images cost one entry,
  not half a million pairs.

The result is an adjacency table over the distinct hashes (:class:`HashNeighbours`); the cleaning
loop asks it, record by record, whether an earlier kept record is a near-copy.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = ["popcount64", "near_pairs", "chunk_count", "HashNeighbours"]

_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_MAX_KEYS = 100  # at most this many sorts (key choices) per search


def popcount64(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (a byte table: works on every numpy this project admits)."""
    values = np.ascontiguousarray(values, dtype=np.uint64)
    return _BYTE_BITS[values.view(np.uint8).reshape(-1, 8)].sum(axis=1, dtype=np.int64)


def chunk_count(n: int, distance: int) -> int:
    """Chunks ``m`` for ``n`` hashes: the fewest whose ``m - distance``-chunk keys have ~log2(n) + 6 bits."""
    wanted = math.ceil(math.log2(max(n, 2))) + 6
    best = distance + 1
    for m in range(distance + 1, 65):
        if math.comb(m, distance) > _MAX_KEYS:
            break
        best = m
        if 64 * (m - distance) // m >= wanted:
            break
    return best


def _bucket_pairs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) with equal ``keys``, each once: sorted, then equal runs compared at growing gaps."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    n = len(ordered)
    firsts, seconds = [], []
    active = np.nonzero(ordered[1:] == ordered[:-1])[0]
    gap = 1
    while len(active):
        firsts.append(order[active])
        seconds.append(order[active + gap])
        gap += 1
        active = active[active + gap < n]
        active = active[ordered[active + gap] == ordered[active]]
    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(firsts), np.concatenate(seconds)


def near_pairs(values: np.ndarray, distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Every index pair ``(i, j)``, ``i < j``, of ``values`` (uint64) at Hamming distance <= ``distance``."""
    if not 0 <= distance < 32:
        raise ValueError(f"hash distance must be in 0..31, got {distance}")
    values = np.asarray(values, dtype=np.uint64)
    n = len(values)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    m = chunk_count(n, distance)
    bounds = [round(64 * i / m) for i in range(m + 1)]
    chunks = [((values >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1), hi - lo)
              for lo, hi in zip(bounds, bounds[1:])]
    found = []
    for choice in itertools.combinations(range(m), m - distance):
        key = np.zeros(n, dtype=np.uint64)
        for c in choice:
            chunk, width = chunks[c]
            key = (key << np.uint64(width)) | chunk
        first, second = _bucket_pairs(key)
        close = popcount64(values[first] ^ values[second]) <= distance
        low, high = np.minimum(first[close], second[close]), np.maximum(first[close], second[close])
        found.append(low * n + high)  # a pair sharing several chunk choices is found several times
    codes = np.unique(np.concatenate(found))
    return codes // n, codes % n


class HashNeighbours:
    """The hashes of a collection (one per item, repeats allowed) and who is near whom.

    ``group[i]``: the distinct-hash id of item ``i``; ``near(g)``: the distinct-hash ids within
    ``distance`` bits of ``g``, ``g`` itself included.
    """

    def __init__(self, values: np.ndarray, distance: int):
        self.distinct, self.group = np.unique(np.asarray(values, dtype=np.uint64), return_inverse=True)
        self.group = self.group.reshape(-1)
        first, second = near_pairs(self.distinct, distance)
        k = len(self.distinct)
        own = np.arange(k, dtype=np.int64)
        rows = np.concatenate([own, first, second])
        cols = np.concatenate([own, second, first])
        order = np.argsort(rows, kind="stable")
        self._indices = cols[order]
        self._indptr = np.searchsorted(rows[order], np.arange(k + 1))
        self.pairs = len(first)  # distinct-hash pairs within the distance (identical hashes not counted)

    def near(self, group: int) -> np.ndarray:
        return self._indices[self._indptr[group]:self._indptr[group + 1]]

    def nearest_marked(self, marks: np.ndarray) -> np.ndarray:
        """Per distinct hash, the smallest ``marks`` value among its neighbours (``marks`` < 0: unmarked; -1 if none)."""
        big = np.iinfo(np.int64).max
        values = np.where(marks >= 0, marks, big).astype(np.int64)
        rows = np.repeat(np.arange(len(self.distinct)), np.diff(self._indptr))
        best = np.full(len(self.distinct), big, dtype=np.int64)
        np.minimum.at(best, rows, values[self._indices])
        return np.where(best == big, -1, best)
