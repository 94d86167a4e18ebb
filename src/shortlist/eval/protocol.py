"""The H&M competition's protocol: predict the week after a cutoff from everything before it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shortlist.data.arrays import US_PER_DAY, Interactions


@dataclass(frozen=True)
class Window:
    """Targets are purchases with cutoff <= time < end; methods see only time < cutoff."""

    cutoff: int  # microseconds since the epoch, a midnight UTC
    end: int


def windows(last_time: int, holdout_days: int, count: int) -> list[Window]:
    """`count` consecutive windows of `holdout_days`, the last ending at the end of the data.

    The data ends at the midnight after its last interaction, so with daily timestamps the
    final window covers the last `holdout_days` calendar days (H&M: 2020-09-16 to 2020-09-22).
    Oldest window first.
    """
    end = (last_time // US_PER_DAY + 1) * US_PER_DAY
    span = holdout_days * US_PER_DAY
    return [Window(end - (count - i) * span, end - (count - i - 1) * span) for i in range(count)]


@dataclass(frozen=True)
class Targets:
    """Users who bought in a window, and the distinct items each bought (CSR layout)."""

    users: np.ndarray  # int32, sorted
    indptr: np.ndarray  # items of users[i] are items[indptr[i]:indptr[i+1]]
    items: np.ndarray

    def of(self, i: int) -> np.ndarray:
        return self.items[self.indptr[i] : self.indptr[i + 1]]


def targets(inter: Interactions) -> Targets:
    """Distinct (user, item) pairs of the window, grouped by user."""
    pairs = np.unique(np.stack([inter.user.astype(np.int64), inter.item.astype(np.int64)]), axis=1)
    users, starts = np.unique(pairs[0], return_index=True)
    indptr = np.append(starts, pairs.shape[1])
    return Targets(users.astype(np.int32), indptr, pairs[1].astype(np.int32))
