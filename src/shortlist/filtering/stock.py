"""Out-of-stock filtering over an inventory that stock events update in place."""

from __future__ import annotations

import threading

import numpy as np
from numpy.typing import ArrayLike

from shortlist.errors import ConfigError, DataError
from shortlist.filtering.base import CandidateFilter, FilterContext, lookup


class Inventory:
    """Units in stock per item idx (float64; NaN = not tracked). Items beyond the array are
    not tracked either; `set_stock` grows it. Negative units (oversold) count as out of stock."""

    def __init__(self, units: ArrayLike):
        arr = np.array(units, dtype=np.float64, copy=True)
        if arr.ndim != 1:
            raise ConfigError(
                f"units must be a 1-D array over item idx, got {arr.shape}", key="inventory"
            )
        self.units = arr
        self._lock = threading.Lock()

    def set_stock(self, items: ArrayLike, units: ArrayLike) -> None:
        """Sets the units of `items` (a scalar `units` applies to all; NaN stops tracking)."""
        idx = np.atleast_1d(np.asarray(items))
        if idx.size == 0:
            return
        if not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0:
            raise DataError(f"stock update: item idx must be non-negative integers, got {idx!r}")
        try:
            values = np.broadcast_to(np.asarray(units, np.float64), idx.shape)
        except ValueError:
            raise DataError(
                f"stock update: {np.shape(units)} units for {idx.shape} items"
            ) from None
        with self._lock:
            size = int(idx.max()) + 1
            if size > len(self.units):  # grow by a new array: readers keep a consistent one
                grown = np.full(max(size, len(self.units) * 5 // 4), np.nan)
                grown[: len(self.units)] = self.units
                grown[idx] = values
                self.units = grown
            else:
                self.units[idx] = values

    def stock(self, items: ArrayLike) -> np.ndarray:
        """Units in stock for `items` (NaN for untracked items and padding)."""
        arr = np.asarray(items)
        return lookup(self.units, arr, arr >= 0, np.nan)


class InStockFilter(CandidateFilter):
    """Keeps items with units in stock > 0. Items the inventory does not track are kept
    unless `keep_untracked=False` (a catalogue without stock data should not go empty).
    The units a request's context carries (`FilterContext.stock`: stock events recorded in
    the online store) replace the inventory's for those items."""

    name = "in_stock"

    def __init__(self, inventory: Inventory | ArrayLike, *, keep_untracked: bool = True):
        self.inventory = inventory if isinstance(inventory, Inventory) else Inventory(inventory)
        if not isinstance(keep_untracked, bool):
            raise ConfigError(
                f"must be true or false, got {keep_untracked!r}", key="in_stock.keep_untracked"
            )
        self.keep_untracked = keep_untracked

    def set_stock(self, items: ArrayLike, units: ArrayLike) -> None:
        self.inventory.set_stock(items, units)

    def _keep(self, ctx: FilterContext, items: np.ndarray, valid: np.ndarray) -> np.ndarray:
        units = lookup(self.inventory.units, items, valid, np.nan)
        if ctx.stock is not None and len(ctx.stock[0]):  # stock events: they win
            known, live = ctx.stock
            at = np.minimum(np.searchsorted(known, items), len(known) - 1)
            hit = valid & (known[at] == items)
            units = np.where(hit, live[at], units)
        with np.errstate(invalid="ignore"):
            return np.where(np.isnan(units), self.keep_untracked, units > 0)

    def __repr__(self) -> str:
        units, keep = len(self.inventory.units), self.keep_untracked
        return f"InStockFilter({units:,} items, keep_untracked={keep})"
