"""Age-restricted items (alcohol, some games) hidden from users below the item's minimum age."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from shortlist.errors import ConfigError, FilterError
from shortlist.filtering.base import CandidateFilter, FilterContext, lookup


class AgeAllowedFilter(CandidateFilter):
    """Keeps an item when the user's age is at least its `min_age` (NaN: no limit; items
    beyond the array have none).

    A user of unknown age (NaN, or no ages in the context) sees only unrestricted items by
    default: showing a restricted item to a minor is the costly mistake, hiding it from an
    adult of unknown age costs one candidate. `unknown_age_allowed=True` keeps everything for
    them instead.
    """

    name = "age_allowed"

    def __init__(self, min_age: ArrayLike, *, unknown_age_allowed: bool = False):
        limits = np.array(min_age, dtype=np.float64, copy=True)
        if limits.ndim != 1:
            raise ConfigError(
                f"must be a 1-D array over item idx, got {limits.shape}", key="min_age"
            )
        if np.any(limits < 0):
            raise ConfigError("minimum ages cannot be negative", key="min_age")
        if not isinstance(unknown_age_allowed, bool):
            raise ConfigError(
                f"must be true or false, got {unknown_age_allowed!r}",
                key="age_allowed.unknown_age_allowed",
            )
        self.min_age = limits
        self.unknown_age_allowed = unknown_age_allowed

    def _keep(self, ctx: FilterContext, items: np.ndarray, valid: np.ndarray) -> np.ndarray:
        limit = lookup(self.min_age, items, valid, np.nan)
        unrestricted = np.isnan(limit)
        if ctx.age is None:
            return unrestricted | self.unknown_age_allowed
        age = ctx.age
        if np.any(age < 0):
            raise FilterError(f"ages cannot be negative, got {age[age < 0][0]}", field="age")
        known = ~np.isnan(age)[:, None]
        with np.errstate(invalid="ignore"):  # NaN limits and ages compare False
            old_enough = age[:, None] >= limit
        return unrestricted | np.where(known, old_enough, self.unknown_age_allowed)

    def __repr__(self) -> str:
        restricted = int((~np.isnan(self.min_age)).sum())
        allowed = self.unknown_age_allowed
        return f"AgeAllowedFilter({restricted:,} restricted items, unknown_age_allowed={allowed})"
