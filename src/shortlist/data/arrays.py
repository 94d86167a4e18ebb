"""A workspace's interactions and tables as numpy arrays, loaded once from the offline store.

What evaluation, retrieval, ranking and the pipeline learn from: interactions sorted by time
(slicing a window is a binary search), and `TrainData`, the view of everything before a cutoff.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from shortlist import columns as C
from shortlist.config import AttributeKind
from shortlist.data.offline import OfflineStore
from shortlist.data.rules import Rules, load_rules
from shortlist.data.schema import Manifest

US_PER_DAY = 86_400_000_000


def from_us(us: int) -> datetime:
    return datetime(1970, 1, 1) + timedelta(microseconds=int(us))


@dataclass(frozen=True)
class Interactions:
    """Parallel arrays sorted by time; slicing by time is a binary search, not a copy."""

    user: np.ndarray  # int32
    item: np.ndarray  # int32
    time: np.ndarray  # int64 microseconds since the epoch, UTC
    quantity: np.ndarray  # int32
    price: np.ndarray | None = None  # float32 unit price, NaN unknown; None: no price column

    def __len__(self) -> int:
        return len(self.user)

    def between(self, start: int | None, end: int | None) -> Interactions:
        """Rows with start <= time < end (None: unbounded)."""
        lo = 0 if start is None else int(np.searchsorted(self.time, start, side="left"))
        hi = len(self) if end is None else int(np.searchsorted(self.time, end, side="left"))
        return Interactions(
            self.user[lo:hi],
            self.item[lo:hi],
            self.time[lo:hi],
            self.quantity[lo:hi],
            None if self.price is None else self.price[lo:hi],
        )

    def rows(self, mask: np.ndarray) -> Interactions:
        """The rows where `mask` holds, still sorted by time."""
        return Interactions(
            self.user[mask],
            self.item[mask],
            self.time[mask],
            self.quantity[mask],
            None if self.price is None else self.price[mask],
        )


def user_part(ids: np.ndarray, part: int, parts: int) -> np.ndarray:
    """Whether each external user id falls in part `part` (1-based) of `parts`: a stable hash
    of the id (BLAKE2b of its text), so the split is the same on every machine and run."""
    if not 1 <= part <= parts:
        raise ValueError(f"part {part} of {parts}: a part is from 1 to {parts}")
    digest = [
        int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little")
        for i in ids.tolist()
    ]
    return (np.asarray(digest, dtype=np.uint64) % np.uint64(parts)) == np.uint64(part - 1)


@dataclass(frozen=True)
class Dataset:
    """Everything the funnel and the evaluation learn from an offline store, loaded once."""

    interactions: Interactions
    n_users: int
    n_items: int
    user_age: np.ndarray | None = None  # float64 per user_idx, NaN unknown; None: no age role
    item_group: np.ndarray | None = None  # int32 code per item_idx (item_group role) or None
    user_region: np.ndarray | None = None  # int32 code per user_idx (user_region role) or None
    items: pd.DataFrame | None = None  # attributes by item_idx (row i is item i)
    users: pd.DataFrame | None = None  # attributes by user_idx
    item_kinds: dict[str, AttributeKind] = field(default_factory=dict)
    user_kinds: dict[str, AttributeKind] = field(default_factory=dict)
    item_ids: np.ndarray | None = None  # external id (str) by item idx; None: the idx itself
    user_ids: np.ndarray | None = None  # external id (str) by user idx
    rules: Rules | None = None  # business-rule arrays (stock, regions, age limits)
    fingerprint: str = ""  # of the offline store it was read from ("" when built in memory)
    # the offline store's manifest (attribute kinds, roles) when read from one; None in memory
    manifest: Manifest | None = None

    def before(self, cutoff: int) -> Dataset:
        """The same tables with only the interactions strictly before `cutoff`."""
        return replace(self, interactions=self.interactions.between(None, cutoff))

    def user_part(self, part: int, parts: int) -> Dataset:
        """Only the interactions of the users in part `part` of `parts` (see `user_part`): a
        population disjoint from the other parts', to check that a result holds on customers
        it was not tuned on. Tables and ids stay whole (the others simply bought nothing)."""
        ids = self.user_ids if self.user_ids is not None else np.arange(self.n_users)
        keep = user_part(ids, part, parts)
        return replace(
            self,
            interactions=self.interactions.rows(keep[self.interactions.user]),
            fingerprint=f"{self.fingerprint}:users{part}/{parts}" if self.fingerprint else "",
        )


def end_of_data(data: Dataset) -> int:
    """The midnight after the last interaction: the cutoff of a model trained on everything."""
    return (int(data.interactions.time[-1]) // US_PER_DAY + 1) * US_PER_DAY


@dataclass(frozen=True)
class TrainData:
    """What a method may see: interactions strictly before `cutoff`, and the tables.

    `dataset` is cut at the cutoff too, so nothing reachable from here holds the window an
    evaluation scores.
    """

    interactions: Interactions
    cutoff: int  # microseconds since the epoch
    n_users: int
    n_items: int
    user_age: np.ndarray | None = None
    dataset: Dataset | None = None  # tables, roles and rules; interactions before the cutoff

    @classmethod
    def before(cls, data: Dataset, cutoff: int) -> TrainData:
        past = data.before(cutoff)
        return cls(past.interactions, cutoff, data.n_users, data.n_items, data.user_age, past)

    def last_days(self, days: float) -> Interactions:
        return self.interactions.between(self.cutoff - int(days * US_PER_DAY), None)


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


def _codes(frame: pd.DataFrame, column: str | None) -> np.ndarray | None:
    """Dense int codes of a role column (-1 for missing), or None when the role is unset."""
    if not column or column not in frame.columns:
        return None
    return pd.factorize(frame[column], sort=True)[0].astype(np.int32)


def load_dataset(
    store: OfflineStore, read_interactions: bool = True, priced: bool = True
) -> Dataset:
    """Interactions sorted by time, the item and user tables, and their role columns.

    read_interactions=False: zero interactions instead (with a price column when `priced`):
    what a saved pipeline serves from, reading the tables and nothing of the interactions'
    files (it knows whether they had prices)."""
    m = store.manifest
    if read_interactions:
        has_price = C.PRICE in [r[0] for r in store.sql("DESCRIBE interactions").fetchall()]
    else:
        has_price = priced
    price = f", CAST({C.PRICE} AS FLOAT)" if has_price else ""
    source = "interactions"
    if not read_interactions:
        source = (
            f"(SELECT 0 AS {C.USER_IDX}, 0 AS {C.ITEM_IDX}, TIMESTAMP '2000-01-01' AS "
            f"{C.TIMESTAMP}, 0 AS {C.QUANTITY}, 0.0 AS {C.PRICE} WHERE false)"
        )
    table = store.sql(
        f"SELECT {C.USER_IDX}, {C.ITEM_IDX}, epoch_us({C.TIMESTAMP}), {C.QUANTITY}{price} "
        f"FROM {source} ORDER BY {C.TIMESTAMP}, {C.USER_IDX}, {C.ITEM_IDX}"
    ).to_arrow_table()
    inter = Interactions(
        table.column(0).to_numpy().astype(np.int32),
        table.column(1).to_numpy().astype(np.int32),
        table.column(2).to_numpy().astype(np.int64),
        table.column(3).to_numpy().astype(np.int32),
        table.column(4).to_numpy(zero_copy_only=False).astype(np.float32) if has_price else None,
    )
    items, users = load_tables(store)
    if not read_interactions:
        users = _categorical(users, m.users.attributes)
    age = None
    if m.roles.user_age and m.roles.user_age in users.columns:
        age = pd.to_numeric(users[m.roles.user_age], errors="coerce").to_numpy(np.float64)
    ids = {}
    for table, column, idx in (("items", C.ITEM_ID, C.ITEM_IDX), ("users", C.USER_ID, C.USER_IDX)):
        got = store.sql(f"SELECT CAST({column} AS VARCHAR) AS id FROM {table} ORDER BY {idx}")
        ids[table] = got.fetchnumpy()["id"]
    # items' as fixed-width text; users' stay Python str objects: fixed width costs every id
    # the longest one's 4 bytes a character (351 MB for H&M's 1.37 M 64-character ids, against
    # 155 MB), and the catalogue's lookup index then shares the objects instead of copying
    ids["items"] = ids["items"].astype(str)
    ids["users"] = ids["users"].astype(object)
    return Dataset(
        inter,
        m.users.rows,
        m.items.rows,
        age,
        _codes(items, m.roles.item_group),
        _codes(users, m.roles.user_region),
        items,
        users,
        dict(m.items.attributes),
        dict(m.users.attributes),
        ids["items"],
        ids["users"],
        load_rules(store),
        m.fingerprint(),
        m,
    )


def _categorical(frame: pd.DataFrame, kinds: dict[str, AttributeKind]) -> pd.DataFrame:
    """`frame` with its categorical text columns as pandas categoricals (codes and the
    distinct values): what a saved pipeline keeps of the users table, for explanations and
    checks. At full scale (generated, H&M's size) 68 MB instead of 162 (1.37 M postal codes,
    337 k distinct)."""
    columns = [
        c
        for c, kind in kinds.items()
        if kind == AttributeKind.CATEGORICAL
        and c in frame.columns
        and not pd.api.types.is_numeric_dtype(frame[c])
    ]
    return frame.astype(dict.fromkeys(columns, "category")) if columns else frame


def load_tables(store: OfflineStore) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The items and users tables as frames sorted by idx (row i is idx i), attributes only."""
    items = store.sql(f"SELECT * EXCLUDE ({C.ITEM_ID}) FROM items ORDER BY {C.ITEM_IDX}").df()
    users = store.sql(f"SELECT * EXCLUDE ({C.USER_ID}) FROM users ORDER BY {C.USER_IDX}").df()
    return items.drop(columns=[C.ITEM_IDX]), users.drop(columns=[C.USER_IDX])


#: a fitted part's state as named arrays (what a saved pipeline writes as .npy files and maps
#: back at load); a part's names are prefixed by its own ("copurchase.neighbours.data")
State = dict[str, np.ndarray]


def prefixed(prefix: str, state: State) -> State:
    """`state` with every name under `prefix` ("prefix.name")."""
    return {f"{prefix}.{name}": value for name, value in state.items()}


def under(prefix: str, state: State) -> State:
    """The arrays named under `prefix`, without it (the inverse of `prefixed`)."""
    start = prefix + "."
    return {name[len(start) :]: v for name, v in state.items() if name.startswith(start)}
