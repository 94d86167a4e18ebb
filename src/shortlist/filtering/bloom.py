"""A Bloom filter over (user, item) pairs in numpy: a compact "bought before" check.

An exact purchase set at H&M scale holds 8 bytes per distinct purchase; a Bloom filter at a 1 %
false-positive rate needs about 1.2 bytes, never misses a real purchase, and wrongly reports
a small, bounded share of unbought items as bought (which only hides those candidates).

Sizing for n expected pairs at false-positive rate p (the standard formulas):
    m = ceil(-n ln p / (ln 2)^2) bits,   k = round(m / n * ln 2) hash functions.
Positions come from two 64-bit hashes of the pair key by double hashing:
    g_i = (h1 + i * h2) mod m,  i = 0..k-1   (Kirsch and Mitzenmacher, 2006).
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numpy.typing import ArrayLike

from shortlist.errors import ConfigError
from shortlist.filtering.pairs import pair_keys, sorted_unique

_SEED1 = np.uint64(0x9E3779B97F4A7C15)
_SEED2 = np.uint64(0xD1B54A32D192ED03)


def bloom_size(capacity: int, fp_rate: float) -> tuple[int, int]:
    """(m bits, k hashes) for `capacity` members at false-positive rate `fp_rate`."""
    if not (isinstance(capacity, int | np.integer) and capacity >= 1):
        raise ConfigError(f"must be a positive integer, got {capacity!r}", key="bloom.capacity")
    if not (isinstance(fp_rate, float | int) and 0.0 < fp_rate < 1.0):
        raise ConfigError(
            f"must lie strictly between 0 and 1, got {fp_rate!r}", key="bloom.fp_rate"
        )
    m = math.ceil(-capacity * math.log(fp_rate) / math.log(2) ** 2)
    k = max(1, round(m / capacity * math.log(2)))
    return m, k


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a fast 64-bit hash with good avalanche (wraps mod 2**64)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class BloomFilter:
    """Set membership of (user, item) pairs with no false negatives and false positives at
    about `fp_rate` while at most `capacity` distinct pairs are added. Past capacity the rate
    grows; `estimated_fp_rate` reports the current rate from the share of bits set."""

    def __init__(self, capacity: int, fp_rate: float = 0.01):
        self.capacity = int(capacity)
        self.fp_rate = float(fp_rate)
        self.n_bits, self.n_hashes = bloom_size(capacity, fp_rate)
        self.bits = np.zeros((self.n_bits + 7) // 8, np.uint8)
        self._lock = threading.Lock()  # adds read-modify-write bytes

    @classmethod
    def from_pairs(
        cls,
        users: ArrayLike,
        items: ArrayLike,
        *,
        fp_rate: float = 0.01,
        capacity: int | None = None,
    ) -> BloomFilter:
        """Sized for `capacity` pairs (default: twice the distinct pairs given, room for the
        purchases to come), holding the given pairs."""
        keys = sorted_unique(pair_keys(users, items, "purchases"))
        bloom = cls(capacity if capacity is not None else max(1, 2 * len(keys)), fp_rate)
        bloom._add_keys(keys)
        return bloom

    def state(self) -> dict[str, np.ndarray]:
        return {
            "bits": self.bits,
            "sizes": np.asarray([self.capacity, self.n_bits, self.n_hashes], np.int64),
            "fp_rate": np.asarray([self.fp_rate]),
        }

    @classmethod
    def restore(cls, state: dict[str, np.ndarray]) -> BloomFilter:
        """The filter `state` describes, over its bit array as given (a copy-on-write mapping
        stays shared until `add` writes to it)."""
        bloom = cls.__new__(cls)
        bloom.capacity, bloom.n_bits, bloom.n_hashes = (int(x) for x in state["sizes"])
        bloom.fp_rate = float(state["fp_rate"][0])
        bloom.bits = state["bits"]
        bloom._lock = threading.Lock()
        return bloom

    @property
    def nbytes(self) -> int:
        return self.bits.nbytes

    @property
    def estimated_fp_rate(self) -> float:
        """The chance that a pair never added tests positive: (share of bits set) ** k."""
        ones = int(np.unpackbits(self.bits, count=self.n_bits).sum())
        return (ones / self.n_bits) ** self.n_hashes

    def add(self, users: ArrayLike, items: ArrayLike) -> None:
        """Adds pairs (e.g. purchases from a real-time event)."""
        self._add_keys(pair_keys(users, items, "purchases").ravel())

    def contains(self, users: ArrayLike, items: ArrayLike) -> np.ndarray:
        """bool shaped like the broadcast of `users` and `items`: True for every added pair,
        and for a share of about `fp_rate` of the others."""
        keys = pair_keys(users, items, "purchases")
        found = np.ones(keys.shape, bool)
        for positions in self._positions(keys.ravel()):
            bit = (
                self.bits[positions >> np.uint64(3)] >> (positions & np.uint64(7)).astype(np.uint8)
            ) & 1
            found &= bit.reshape(keys.shape).astype(bool)
        return found

    def _add_keys(self, keys: np.ndarray) -> None:
        with self._lock:
            for positions in self._positions(keys):
                byte = positions >> np.uint64(3)
                mask = np.left_shift(1, (positions & np.uint64(7)).astype(np.uint8), dtype=np.uint8)
                np.bitwise_or.at(self.bits, byte, mask)

    def _positions(self, keys: np.ndarray):
        """The k bit positions of each key, one (len(keys),) uint64 array per hash function."""
        m = np.uint64(self.n_bits)
        h1 = _mix(keys ^ _SEED1) % m
        # h2 in [1, m): a zero step would put all k positions on one bit
        h2 = _mix(keys ^ _SEED2) % np.uint64(max(self.n_bits - 1, 1)) + np.uint64(1)
        position = h1
        for _ in range(self.n_hashes):
            yield position
            position = (position + h2) % m  # both terms < m < 2**63: no overflow
