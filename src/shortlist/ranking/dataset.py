"""The ranking training set: requests (a user in a past period) with their candidates as
feature rows, labelled by what the user bought in that period.

What the ranker learns from. Building it needs the retrieval stage, so the loop that builds
it lives in the pipeline (pipeline/training.py); here are the set itself, its labels and the
negative sampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shortlist.data.arrays import Targets

MIN_NEGATIVES = 20  # per request, whatever the row budget of `RankingSet.thin`


@dataclass(frozen=True)
class RankingSet:
    """Rows grouped by request (one user in one period), groups contiguous.

    A period is a week, or fewer days on a short history (see pipeline/training.py).
    """

    X: np.ndarray  # (rows, features) float32
    y: np.ndarray  # (rows,) float32, 1 = bought in that period
    group: np.ndarray  # (groups,) rows per group, in row order
    period: np.ndarray  # (groups,) 0 = the latest period before the cutoff, 1 = the one before
    names: list[str]
    categorical: list[str]
    user: np.ndarray | None = None  # (groups,) each request's user, where known

    def periods(self, keep: np.ndarray) -> RankingSet:
        """The groups whose period is in `keep`."""
        return self.groups(np.isin(self.period, keep))

    def groups(self, mask: np.ndarray) -> RankingSet:
        """The groups where `mask` (one bool per group) holds."""
        row_mask = np.repeat(mask, self.group)
        return RankingSet(
            self.X[row_mask],
            self.y[row_mask],
            self.group[mask],
            self.period[mask],
            self.names,
            self.categorical,
            self.user[mask] if self.user is not None else None,
        )

    def thin(self, max_rows: int, rng: np.random.Generator) -> RankingSet:
        """At most about `max_rows` rows: every positive kept, and as many random negatives per
        request as the budget allows (the same number for every request, at least
        MIN_NEGATIVES). LightGBM's time grows with the rows; past a few hundred thousand,
        more negatives of the same requests teach it little (docs/ranking.md has the figures).
        """
        if len(self.y) <= max_rows:
            return self
        negatives = max(MIN_NEGATIVES, (max_rows - self.positives) // max(1, len(self.group)))
        rows = np.repeat(np.arange(len(self.group)), self.group)
        X, y, group = sample_negatives(self.X, self.y, rows, negatives, rng)
        assert len(group) == len(self.group), "every request holds a positive"
        return RankingSet(X, y, group, self.period, self.names, self.categorical, self.user)

    def split(self, latest: int = 1) -> tuple[RankingSet, RankingSet]:
        """(older periods, the `latest` periods): what the ranker trains and validates on."""
        older = np.unique(self.period[self.period >= latest])
        return self.periods(older), self.periods(np.arange(latest))

    @classmethod
    def concat(cls, parts: list[RankingSet]) -> RankingSet:
        return cls(
            np.vstack([p.X for p in parts]),
            np.concatenate([p.y for p in parts]),
            np.concatenate([p.group for p in parts]),
            np.concatenate([p.period for p in parts]),
            parts[0].names,
            parts[0].categorical,
            (
                np.concatenate([p.user for p in parts])  # type: ignore[misc]
                if all(p.user is not None for p in parts)
                else None
            ),
        )

    @property
    def positives(self) -> int:
        return int(self.y.sum())


def labels(tg: Targets, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """1.0 where the candidate at (row, item) was bought by tg.users[row] in the window."""
    owner = np.repeat(np.arange(len(tg.users), dtype=np.int64), np.diff(tg.indptr))
    bought = (owner << 32) | tg.items.astype(np.int64)
    return np.isin((rows.astype(np.int64) << 32) | items.astype(np.int64), bought).astype(
        np.float32
    )


def sample_negatives(
    X: np.ndarray, y: np.ndarray, rows: np.ndarray, negatives: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Groups with a positive only; within them all positives and up to `negatives` random
    negatives (kept in their candidate order)."""
    pos_per_row = np.bincount(rows, weights=y)
    keep_group = pos_per_row[rows] > 0
    noise = rng.random(len(y))
    noise[y > 0] = -1.0  # positives first in the draw: always kept
    order = np.lexsort((noise, rows))
    sorted_rows = rows[order]
    starts = np.searchsorted(sorted_rows, sorted_rows, side="left")
    rank_in_row = np.arange(len(order)) - starts
    chosen = np.zeros(len(y), bool)
    chosen[order] = rank_in_row < negatives + pos_per_row[sorted_rows]
    keep = keep_group & chosen
    _, group = np.unique(rows[keep], return_counts=True)
    return X[keep], y[keep], group.astype(np.int64)
