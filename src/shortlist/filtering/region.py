"""Items not sold in the user's region (licensing, shipping, assortment by market)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from shortlist.errors import ConfigError, FilterError
from shortlist.filtering.base import CandidateFilter, FilterContext
from shortlist.filtering.pairs import PairSet

DENSE_CELLS = 2**26  # items x regions kept as a bool table up to this many cells (64 MB)


class AvailableInRegionFilter(CandidateFilter):
    """Keeps an item when it is sold in the user's region.

    `availability` is an items x regions sparse matrix (non-zero: sold there). Items beyond its
    rows are sold everywhere unless `unlisted_available=False`. Looked up in a dense bool
    table (up to `DENSE_CELLS` cells), else in sorted pair keys. A user whose region is unknown
    (-1, or no regions in the context) keeps every item; a region code outside the matrix's
    columns is a bad request.
    """

    name = "available_in_region"

    def __init__(self, availability: sp.sparray | sp.spmatrix, *, unlisted_available: bool = True):
        if not sp.issparse(availability) or availability.ndim != 2:
            raise ConfigError(
                f"expected an items x regions sparse matrix, got {type(availability).__name__}",
                key="availability",
            )
        if not isinstance(unlisted_available, bool):
            raise ConfigError(
                f"must be true or false, got {unlisted_available!r}",
                key="available_in_region.unlisted_available",
            )
        self.n_items, self.n_regions = availability.shape
        # a dense items x regions table answers a request's candidates with one gather; past
        # DENSE_CELLS (huge catalogues times many regions) the sorted pair keys instead
        self.table: np.ndarray | None = None
        self.pairs: PairSet | None = None
        if self.n_items * self.n_regions <= DENSE_CELLS:
            coo = sp.coo_array(availability)
            stored = coo.data != 0
            self.table = np.zeros((self.n_items, self.n_regions), bool)
            self.table[coo.row[stored], coo.col[stored]] = True
        else:
            self.pairs = PairSet.from_csr(availability)
        self.unlisted_available = unlisted_available

    def _keep(self, ctx: FilterContext, items: np.ndarray, valid: np.ndarray) -> np.ndarray:
        if ctx.region is None:
            return np.ones(items.shape, bool)
        region = ctx.region
        bad = (region < -1) | (region >= self.n_regions)
        if bad.any():
            raise FilterError(
                f"unknown region code {region[bad][0]}"
                f" (known: 0..{self.n_regions - 1}, -1 for unknown)",
                field="region",
            )
        keep = np.ones(items.shape, bool)  # unknown regions and padding
        rows = np.broadcast_to((region >= 0)[:, None], items.shape)
        listed = valid & rows & (items < self.n_items)
        regions = np.broadcast_to(region[:, None], items.shape)
        if self.table is not None:
            keep[listed] = self.table[items[listed], regions[listed]]
        else:
            assert self.pairs is not None
            keep[listed] = self.pairs.contains(items[listed], regions[listed])
        keep[valid & rows & (items >= self.n_items)] = self.unlisted_available
        return keep

    def __repr__(self) -> str:
        return f"AvailableInRegionFilter({self.n_items:,} items x {self.n_regions} regions)"
