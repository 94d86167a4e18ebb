"""Request predicates over item attributes (price range, attribute in a set), reusing the
retrieval stage's filter language so a filter means the same before and after retrieval."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from shortlist.data.filters import Filter, ItemAttributes
from shortlist.errors import ConfigError, FilterError
from shortlist.filtering.base import CandidateFilter, FilterContext, lookup


class AttributeFilter(CandidateFilter):
    """Keeps items passing the request's attribute filter (`FilterContext.filters`) and, when
    given, a fixed `spec` applied to every request. Neither: everything passes. Items with a
    missing attribute, or beyond the attribute table, match no condition on it.

    Raises `FilterError` (HTTP 422) for a malformed request filter.
    """

    name = "attributes"

    def __init__(self, attributes: ItemAttributes, spec: Mapping[str, Any] | Filter | None = None):
        if not isinstance(attributes, ItemAttributes):
            raise ConfigError(
                f"needs ItemAttributes, got {type(attributes).__name__}", key="attributes"
            )
        self.attributes = attributes
        # a bad fixed filter is a configuration mistake, found now rather than per request
        if spec is not None:
            try:
                spec = attributes.parse(spec) if isinstance(spec, Mapping) else spec
                attributes.mask(spec)
            except FilterError as exc:
                raise ConfigError(str(exc), key="attributes.spec") from None
        self.spec = spec

    def _keep(self, ctx: FilterContext, items: np.ndarray, valid: np.ndarray) -> np.ndarray:
        passes = [self.attributes.mask(f) for f in (self.spec, ctx.filters) if f is not None]
        if not passes:
            return np.ones(items.shape, bool)
        allowed = passes[0] if len(passes) == 1 else passes[0] & passes[1]
        return lookup(allowed, items, valid, False)

    def __repr__(self) -> str:
        return f"AttributeFilter({sorted(self.attributes.columns)}, spec={self.spec!r})"
