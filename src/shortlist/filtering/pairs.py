"""An exact set of (row, column) integer pairs, queried for whole candidate matrices at once.

Pairs are stored as sorted 64-bit keys `row << 32 | column` (the entries of a CSR matrix in
its own order), so one `np.searchsorted` answers any number of membership questions, and new
pairs can be added without knowing the matrix's shape in advance.
"""

from __future__ import annotations

import threading

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

from shortlist.errors import DataError

MAX_ID = 2**32 - 1  # rows and columns each fit in 32 bits of the key


def pair_keys(rows: ArrayLike, cols: ArrayLike, what: str = "pairs") -> np.ndarray:
    """uint64 keys `row << 32 | col`; ids must lie in [0, 2**32)."""
    r = np.asarray(rows)
    c = np.asarray(cols)
    r, c = np.broadcast_arrays(r, c)
    for name, a in (("row", r), ("column", c)):
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise DataError(f"{what}: {name} ids must be integers, got {a.dtype}")
        if a.size and (a.min() < 0 or a.max() > MAX_ID):
            raise DataError(f"{what}: {name} ids must lie in [0, 2**32), got {a.min()}..{a.max()}")
    return (r.astype(np.uint64) << np.uint64(32)) | c.astype(np.uint64)


def sorted_unique(keys: np.ndarray) -> np.ndarray:
    """The distinct keys, ascending: a sort, then repeats dropped (numpy 2.4's np.unique took
    about 18x as long on 3 M uint64 keys)."""
    out = np.sort(np.asarray(keys, np.uint64).ravel())
    if len(out) > 1:
        out = out[np.concatenate(([True], out[1:] != out[:-1]))]
    return out


class PairSet:
    """Exact membership of (row, column) pairs, e.g. (user, item) purchases or (item, region)
    availability. `add` keeps new pairs in a small sorted delta merged into the main array
    when it grows past a fraction of it, so a real-time event does not copy the whole set."""

    def __init__(self, keys: np.ndarray | None = None):
        base = sorted_unique(np.asarray(keys if keys is not None else [], np.uint64))
        # (main, delta), both sorted; replaced as one tuple so readers never see half an add
        self._arrays: tuple[np.ndarray, np.ndarray] = (base, np.empty(0, np.uint64))
        self._lock = threading.Lock()

    @classmethod
    def from_pairs(cls, rows: ArrayLike, cols: ArrayLike) -> PairSet:
        """From parallel arrays, e.g. the user and item columns of interactions; duplicates
        are fine."""
        return cls(pair_keys(rows, cols))

    @classmethod
    def from_csr(cls, matrix: sp.sparray | sp.spmatrix) -> PairSet:
        """From a sparse matrix: its explicitly stored non-zero entries are the pairs."""
        coo = sp.coo_array(matrix)
        nonzero = coo.data != 0
        return cls(pair_keys(coo.row[nonzero], coo.col[nonzero]))

    def state(self) -> dict[str, np.ndarray]:
        main, delta = self._arrays
        return {"keys": sorted_unique(np.concatenate((main, delta))) if len(delta) else main}

    @classmethod
    def restore(cls, state: dict[str, np.ndarray]) -> PairSet:
        """The set `state` describes, over its sorted keys as given (not copied)."""
        pairs = cls()
        pairs._arrays = (state["keys"], np.empty(0, np.uint64))
        return pairs

    def __len__(self) -> int:
        main, delta = self._arrays
        return len(main) + len(delta)

    def add(self, rows: ArrayLike, cols: ArrayLike) -> None:
        new = pair_keys(rows, cols).ravel()
        with self._lock:
            main, delta = self._arrays
            delta = sorted_unique(np.concatenate((delta, new[~self._contains_keys(new)])))
            if len(delta) > 4096 + len(main) // 16:
                self._arrays = (
                    sorted_unique(np.concatenate((main, delta))),
                    np.empty(0, np.uint64),
                )
            else:
                self._arrays = (main, delta)

    def contains(self, rows: ArrayLike, cols: ArrayLike) -> np.ndarray:
        """bool, shaped like the broadcast of `rows` and `cols`."""
        return self._contains_keys(pair_keys(rows, cols))

    def _contains_keys(self, keys: np.ndarray) -> np.ndarray:
        found = np.zeros(keys.shape, bool)
        for sorted_keys in self._arrays:
            if len(sorted_keys):
                pos = np.searchsorted(sorted_keys, keys)
                found |= sorted_keys[np.minimum(pos, len(sorted_keys) - 1)] == keys
        return found
