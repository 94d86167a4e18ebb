"""`CandidateSet`: what retrieval hands the later stages, one row of candidates per user.

It lives here, below the stages, so that retrieval (which builds it), ranking (which turns it
into features) and the pipeline (which filters and reorders it) share it without importing
each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class CandidateSet:
    """Candidates for a batch of users: row i belongs to users[i]; -1 pads short rows.

    Every candidate keeps the rank and score it had in each source that proposed it, and
    `columns` holds further per-candidate values a source computed for every candidate of
    the row (the two-tower similarity of items other sources proposed): ranking features.
    """

    users: np.ndarray  # (n,) int
    items: np.ndarray  # (n, m) int32
    ranks: dict[str, np.ndarray]  # per source (n, m) int16, 1-based, 0 = not proposed
    scores: dict[str, np.ndarray]  # per source (n, m) float32, NaN = not proposed
    seconds: dict[str, float] = field(default_factory=dict)  # per source, for the trace
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # (n, m) float32, NaN at pads

    def __len__(self) -> int:
        return len(self.users)

    @property
    def sources(self) -> list[str]:
        return list(self.ranks)

    def select(self, keep: np.ndarray) -> CandidateSet:
        """Keep the masked candidates of every row, in order, moved to the front (-1 after)."""
        order = np.argsort(~keep, axis=1, kind="stable")
        return self.reorder(order, keep[np.arange(len(order))[:, None], order])

    def reorder(self, order: np.ndarray, kept: np.ndarray | None = None) -> CandidateSet:
        """Every row's candidates in `order`; where `kept` (in the new order) is False, padding.

        Plain fancy indexing with one row index: a request is one row, and take_along_axis
        costs more per call than the copy itself for the dozen arrays of a candidate set.
        """
        at = (np.arange(len(order))[:, None], order)

        def take(a: np.ndarray, pad: object) -> np.ndarray:
            return a[at] if kept is None else np.where(kept, a[at], pad)

        return CandidateSet(
            self.users,
            take(self.items, -1).astype(np.int32, copy=False),
            {n: take(r, 0).astype(np.int16, copy=False) for n, r in self.ranks.items()},
            {n: take(s, np.nan).astype(np.float32, copy=False) for n, s in self.scores.items()},
            self.seconds,
            {n: take(c, np.nan).astype(np.float32, copy=False) for n, c in self.columns.items()},
        )
