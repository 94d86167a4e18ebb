"""Purchase histories by user, looked up as of any day without copying the interactions.

Interactions are sorted by (user, day) once; the history of a user as of day d is the run of
rows just before the first row of (user, d). Training rows and requests share this lookup, so
the model is trained on exactly the history it will see when serving.
"""

from __future__ import annotations

import numpy as np

from shortlist.data.arrays import US_PER_DAY, Interactions, State

_DAY_SPAN = 1_000_000  # key = user * span + day; days since 1970 stay far below it


class HistoryIndex:
    """Per-user purchase sequences sorted by day (rows of one day keep their order)."""

    def __init__(self, inter: Interactions):
        day = (inter.time // US_PER_DAY).astype(np.int64)
        order = np.lexsort((day, inter.user))
        self.user = inter.user[order]
        self.item = inter.item[order]
        self.day = day[order]
        self.key = self.user.astype(np.int64) * _DAY_SPAN + self.day

    def state(self) -> State:
        return {"user": self.user, "item": self.item, "day": self.day, "key": self.key}

    @classmethod
    def restore(cls, state: State) -> HistoryIndex:
        """The index `state` describes, over its arrays as given (mapped arrays stay mapped)."""
        index = cls.__new__(cls)
        index.user, index.item, index.day, index.key = (
            state["user"], state["item"], state["day"], state["key"]
        )  # fmt: skip
        return index

    def start_of(self, users: np.ndarray, days: np.ndarray) -> np.ndarray:
        """Position of the first row of (user, day) or where it would be: history ends before."""
        return np.searchsorted(self.key, users.astype(np.int64) * _DAY_SPAN + days, side="left")

    def window(
        self, users: np.ndarray, days: np.ndarray, length: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Last `length` purchases strictly before `days`, most recent first: item idx + 1
        (0 where shorter), age in days (float64) and which entries are real, each (b, length)."""
        end = self.start_of(users, days)
        pos = end[:, None] - 1 - np.arange(length)[None, :]
        valid = pos >= 0
        pos = np.where(valid, pos, 0)
        valid &= self.user[pos] == users[:, None]
        items = np.where(valid, self.item[pos].astype(np.int64) + 1, 0)
        age = (days[:, None] - self.day[pos]).astype(np.float64)
        return items, age, valid

    def lookup(
        self, users: np.ndarray, days: np.ndarray, length: int, half_life_days: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Last `length` purchases strictly before `days`, most recent first.

        Returns:
            items (b, length) int64: item idx + 1, 0 where the history is shorter;
            weights (b, length) float32: 0.5 ** (age / half-life), normalised to sum 1 per row
            (all zero for users without history).
        """
        items, age, valid = self.window(users, days, length)
        weights = np.where(valid, np.power(0.5, age / half_life_days), 0.0)
        total = weights.sum(axis=1, keepdims=True)
        weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
        return items, weights.astype(np.float32)


class WithRecent:
    """A history index with, for some users, purchases it does not hold (recorded by real-time
    events since the cutoff) before their indexed history: what the user tower pools for them.

    recent: user idx -> (item idx, newest first; age in days before the query day, >= 0).
    Users without an entry read exactly what the index gives."""

    def __init__(
        self, base: HistoryIndex, recent: dict[int, tuple[np.ndarray, np.ndarray]]
    ) -> None:
        self.base, self.recent = base, recent

    def lookup(
        self, users: np.ndarray, days: np.ndarray, length: int, half_life_days: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """As `HistoryIndex.lookup`, the recent purchases first where a user has some."""
        items, weights = self.base.lookup(users, days, length, half_life_days)
        rows = [r for r, u in enumerate(users.tolist()) if u in self.recent]
        if not rows:
            return items, weights
        base_items, base_age, valid = self.base.window(users[rows], days[rows], length)
        for j, r in enumerate(rows):
            extra, age = self.recent[int(users[r])]
            merged = np.concatenate([extra + 1, base_items[j][valid[j]]])[:length]
            ages = np.concatenate([age, base_age[j][valid[j]]])[:length]
            w = np.power(0.5, ages / half_life_days)
            items[r] = 0
            weights[r] = 0
            items[r, : len(merged)] = merged
            weights[r, : len(merged)] = w / w.sum()
        return items, weights


def season(days: np.ndarray) -> np.ndarray:
    """(b, 2) position in the year as sin/cos, so week 52 sits next to week 1."""
    angle = 2 * np.pi * ((days % 365.2425) / 365.2425)
    return np.stack([np.sin(angle), np.cos(angle)], axis=1).astype(np.float32)
