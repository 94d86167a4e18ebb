"""Interactions as sorted numpy arrays: what the protocol slices and the methods learn from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from shortlist import columns as C
from shortlist.data.offline import OfflineStore

US_PER_DAY = 86_400_000_000


def to_us(t: datetime) -> int:
    """A naive UTC datetime as microseconds since the epoch (the arrays' time unit)."""
    return int((t - datetime(1970, 1, 1)) / timedelta(microseconds=1))


def from_us(us: int) -> datetime:
    return datetime(1970, 1, 1) + timedelta(microseconds=int(us))


@dataclass(frozen=True)
class Interactions:
    """Parallel arrays sorted by time; slicing by time is a binary search, not a copy."""

    user: np.ndarray  # int32
    item: np.ndarray  # int32
    time: np.ndarray  # int64 microseconds since the epoch, UTC
    quantity: np.ndarray  # int32

    def __len__(self) -> int:
        return len(self.user)

    def between(self, start: int | None, end: int | None) -> Interactions:
        """Rows with start <= time < end (None: unbounded)."""
        lo = 0 if start is None else int(np.searchsorted(self.time, start, side="left"))
        hi = len(self) if end is None else int(np.searchsorted(self.time, end, side="left"))
        return Interactions(
            self.user[lo:hi], self.item[lo:hi], self.time[lo:hi], self.quantity[lo:hi]
        )


@dataclass(frozen=True)
class Dataset:
    """Everything the evaluation needs from an offline store, loaded once."""

    interactions: Interactions
    n_users: int
    n_items: int
    user_age: np.ndarray | None  # float64 per user_idx, NaN unknown; None without an age role
    item_group: np.ndarray | None  # int32 code per item_idx of the item_group role, or None


def load_dataset(store: OfflineStore) -> Dataset:
    """Read interactions (sorted by time) and the role attributes the baselines use."""
    m = store.manifest
    table = store.sql(
        f"SELECT {C.USER_IDX}, {C.ITEM_IDX}, epoch_us({C.TIMESTAMP}), {C.QUANTITY} "
        f"FROM interactions ORDER BY {C.TIMESTAMP}, {C.USER_IDX}, {C.ITEM_IDX}"
    ).to_arrow_table()
    inter = Interactions(
        table.column(0).to_numpy().astype(np.int32),
        table.column(1).to_numpy().astype(np.int32),
        table.column(2).to_numpy().astype(np.int64),
        table.column(3).to_numpy().astype(np.int32),
    )
    age = None
    if m.roles.user_age and m.roles.user_age in m.users.attributes:
        age = (
            store.sql(f'SELECT "{m.roles.user_age}"::DOUBLE FROM users ORDER BY {C.USER_IDX}')
            .to_arrow_table()
            .column(0)
            .to_numpy(zero_copy_only=False)
            .astype(np.float64)
        )
    group = None
    if m.roles.item_group and m.roles.item_group in m.items.attributes:
        group = (
            store.sql(
                f'SELECT dense_rank() OVER (ORDER BY "{m.roles.item_group}") - 1 AS g'
                f", {C.ITEM_IDX} FROM items ORDER BY {C.ITEM_IDX}"
            )
            .to_arrow_table()
            .column(0)
            .to_numpy()
            .astype(np.int32)
        )
    return Dataset(inter, m.users.rows, m.items.rows, age, group)


def load_tables(store: OfflineStore) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The items and users tables as frames sorted by idx (row i is idx i), attributes only."""
    items = store.sql(f"SELECT * EXCLUDE ({C.ITEM_ID}) FROM items ORDER BY {C.ITEM_IDX}").df()
    users = store.sql(f"SELECT * EXCLUDE ({C.USER_ID}) FROM users ORDER BY {C.USER_IDX}").df()
    return items.drop(columns=[C.ITEM_IDX]), users.drop(columns=[C.USER_IDX])
