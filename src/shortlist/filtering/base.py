"""What every candidate filter shares: the request context, the keep-mask contract, padding."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from shortlist.data.filters import Filter
from shortlist.errors import FilterError

PAD = -1  # the item id filling candidate rows shorter than k


@dataclass(frozen=True, init=False)
class FilterContext:
    """Who a batch of candidate rows is for: row i of `items` belongs to `users[i]`.

    `region` (int code, -1 unknown) and `age` (years, NaN unknown) are per-request data, one
    value per row; a scalar is repeated for every row, and None means unknown for all rows.
    `filters` is the request's attribute filter (the JSON form or a parsed `Filter`), shared by
    the batch.

    What real-time events recorded since the data was loaded (read per request by the
    pipeline): `bought`, per row the items the user bought since (the bought-before filter
    removes them too), and `stock`, the units in stock of some items as the last stock events
    gave them ((item idx ascending, units): the in-stock filter reads them instead of its
    inventory's). None: nothing recorded.
    """

    users: np.ndarray  # (n,) int64
    region: np.ndarray | None  # (n,) int64, -1 unknown
    age: np.ndarray | None  # (n,) float64, NaN unknown
    filters: Mapping[str, Any] | Filter | None
    bought: tuple[np.ndarray, ...] | None  # per row: item idx bought since the data
    stock: tuple[np.ndarray, np.ndarray] | None  # (item idx ascending, units)

    def __init__(
        self,
        users: ArrayLike,
        *,
        region: ArrayLike | None = None,
        age: ArrayLike | None = None,
        filters: Mapping[str, Any] | Filter | None = None,
        bought: tuple[np.ndarray, ...] | None = None,
        stock: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        users = np.atleast_1d(np.asarray(users))
        if users.size == 0:
            users = users.astype(np.int64)
        if users.ndim != 1 or not np.issubdtype(users.dtype, np.integer):
            raise FilterError(f"users must be a 1-D integer array, got {users.dtype} {users.shape}")
        n = len(users)
        object.__setattr__(self, "users", users.astype(np.int64, copy=False))
        object.__setattr__(self, "region", _per_row("region", region, n, np.int64))
        object.__setattr__(self, "age", _per_row("age", age, n, np.float64))
        object.__setattr__(self, "filters", filters)
        if bought is not None and len(bought) != n:
            raise FilterError(f"bought has {len(bought)} rows, expected one per user ({n})")
        object.__setattr__(self, "bought", bought)
        object.__setattr__(self, "stock", stock)

    def __len__(self) -> int:
        return len(self.users)

    def rows(self, lo: int, hi: int) -> FilterContext:
        """The context of rows lo..hi-1 (the same filters and stock)."""
        return FilterContext(
            self.users[lo:hi],
            region=None if self.region is None else self.region[lo:hi],
            age=None if self.age is None else self.age[lo:hi],
            filters=self.filters,
            bought=None if self.bought is None else self.bought[lo:hi],
            stock=self.stock,
        )

    def with_stock(self, stock: tuple[np.ndarray, np.ndarray] | None) -> FilterContext:
        """The same context with these live stock units."""
        out = FilterContext.__new__(FilterContext)
        for name in ("users", "region", "age", "filters", "bought"):
            object.__setattr__(out, name, getattr(self, name))
        object.__setattr__(out, "stock", stock)
        return out


def _per_row(name: str, value: ArrayLike | None, n: int, dtype: type) -> np.ndarray | None:
    if value is None:
        return None
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise FilterError(f"{name} must be numeric: {exc}") from None
    if arr.ndim == 0:
        return np.full(n, arr, dtype)
    if arr.shape != (n,):
        raise FilterError(f"{name} has shape {arr.shape}, expected one value per user ({n},)")
    return arr


def check_items(ctx: FilterContext, items: ArrayLike) -> np.ndarray:
    """`items` as an (n, k) integer matrix whose rows match the context's users."""
    arr = np.asarray(items)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise FilterError(
            f"candidates must be an (n, k) integer matrix, got {arr.dtype} {arr.shape}"
        )
    if arr.shape[0] != len(ctx):
        raise FilterError(f"{arr.shape[0]} candidate rows for {len(ctx)} users")
    return arr


class CandidateFilter(ABC):
    """A business rule over candidate matrices. Subclasses implement `_keep`; `keep` adds the
    shape checks and makes sure padding (-1) is never kept, whatever `_keep` answers for it."""

    name: str = "filter"  # the label in a pipeline trace

    def keep(self, ctx: FilterContext, items: ArrayLike) -> np.ndarray:
        """(n, k) bool: which candidates pass this filter."""
        arr = check_items(ctx, items)
        valid = arr >= 0
        return self._keep(ctx, arr, valid) & valid

    @abstractmethod
    def _keep(self, ctx: FilterContext, items: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(n, k) bool for `items`; entries where `valid` is False are ignored."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def lookup(values: np.ndarray, items: np.ndarray, valid: np.ndarray, missing: Any) -> np.ndarray:
    """`values[items]` for an item-indexed array, `missing` for padding and ids beyond it."""
    inside = valid & (items < len(values))
    out = np.full(items.shape, missing, dtype=values.dtype)
    out[inside] = values[items[inside]]
    return out
