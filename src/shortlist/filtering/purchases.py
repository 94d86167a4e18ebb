"""Items the user bought before, checked exactly or with a Bloom filter."""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike

from shortlist.errors import ConfigError
from shortlist.filtering.base import CandidateFilter, FilterContext
from shortlist.filtering.bloom import BloomFilter
from shortlist.filtering.pairs import PairSet


class PurchaseHistory(Protocol):
    """What `NotBoughtBeforeFilter` needs: vectorized membership of (user, item) pairs, and adds."""

    def contains(self, users: ArrayLike, items: ArrayLike) -> np.ndarray: ...

    def add(self, users: ArrayLike, items: ArrayLike) -> None: ...


class NotBoughtBeforeFilter(CandidateFilter):
    """Removes the items a user already bought.

    With an exact `PairSet` nothing else is removed; with a `BloomFilter` a share of about its
    `fp_rate` of unbought candidates is removed too, for about a seventh of the memory at 1 %.
    `add` records purchases as they happen in this process; purchases recorded by real-time
    events in the online store reach it per request, as `FilterContext.bought`.
    """

    name = "not_bought_before"

    def __init__(self, history: PurchaseHistory):
        if not (
            callable(getattr(history, "contains", None)) and callable(getattr(history, "add", None))
        ):
            raise ConfigError(
                f"needs a purchase history with contains() and add(), got {type(history).__name__}",
                key="not_bought_before",
            )
        self.history = history

    @classmethod
    def exact(cls, users: ArrayLike, items: ArrayLike) -> NotBoughtBeforeFilter:
        """From interaction arrays (user idx, item idx), kept as an exact set."""
        return cls(PairSet.from_pairs(users, items))

    @classmethod
    def bloom(
        cls,
        users: ArrayLike,
        items: ArrayLike,
        *,
        fp_rate: float = 0.01,
        capacity: int | None = None,
    ) -> NotBoughtBeforeFilter:
        """From interaction arrays, kept in a Bloom filter (see `BloomFilter.from_pairs`)."""
        return cls(BloomFilter.from_pairs(users, items, fp_rate=fp_rate, capacity=capacity))

    def add(self, users: ArrayLike, items: ArrayLike) -> None:
        self.history.add(users, items)

    def state(self) -> dict[str, np.ndarray]:
        """The purchase set as arrays (what a saved pipeline writes), tagged by its kind."""
        kind = "bloom" if isinstance(self.history, BloomFilter) else "exact"
        return {f"{kind}.{k}": v for k, v in self.history.state().items()}

    @classmethod
    def restore(cls, state: dict[str, np.ndarray]) -> NotBoughtBeforeFilter:
        """The filter `state` describes (its arrays are used as given: nothing rebuilt)."""
        for kind, make in (("bloom", BloomFilter.restore), ("exact", PairSet.restore)):
            mine = {k[len(kind) + 1 :]: v for k, v in state.items() if k.startswith(kind + ".")}
            if mine:
                return cls(make(mine))
        raise ConfigError("no saved purchase set", key="not_bought_before")

    def _keep(self, ctx: FilterContext, items: np.ndarray, valid: np.ndarray) -> np.ndarray:
        users = np.broadcast_to(ctx.users[:, None], items.shape)
        keep = np.zeros(items.shape, bool)
        keep[valid] = ~self.history.contains(users[valid], items[valid])
        if ctx.bought is not None:  # bought since the data: recorded by real-time events
            for r, bought in enumerate(ctx.bought):
                if len(bought):
                    keep[r] &= ~np.isin(items[r], bought)
        return keep

    def __repr__(self) -> str:
        return f"NotBoughtBeforeFilter({type(self.history).__name__})"
