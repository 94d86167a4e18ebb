"""Filters composed in order, with a per-filter trace of what each one removed."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from shortlist.errors import ConfigError
from shortlist.filtering.base import PAD, CandidateFilter, FilterContext, check_items


@dataclass(frozen=True)
class FilterStep:
    """One filter's line in a pipeline trace."""

    name: str
    candidates_in: int  # candidates still kept when this filter ran (padding not counted)
    removed: int  # of those, how many this filter removed
    seconds: float


@dataclass(frozen=True)
class Filtered:
    """The outcome of a chain: the keep-mask over the input matrix and the trace."""

    candidates: np.ndarray  # (n, k) the input matrix
    keep: np.ndarray  # (n, k) bool
    steps: tuple[FilterStep, ...]

    @property
    def removed(self) -> dict[str, int]:
        return {step.name: step.removed for step in self.steps}

    @property
    def items(self) -> np.ndarray:
        """The kept candidates moved to the front of each row, order kept, -1 after them."""
        return compact(self.candidates, self.keep)


def compact(items: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Each row's kept items first, in their original order, then -1 padding."""
    order = np.argsort(~keep, axis=1, kind="stable")
    return np.take_along_axis(np.where(keep, items, PAD), order, axis=1)


class FilterChain:
    """Filters applied in order. Each sees only the candidates its predecessors kept (the
    others are passed as padding), so its `removed` count is what it alone took out and an
    expensive filter placed last checks fewer candidates."""

    def __init__(self, filters: Iterable[CandidateFilter]):
        self.filters = list(filters)
        for f in self.filters:
            if not isinstance(f, CandidateFilter):
                raise ConfigError(f"not a candidate filter: {f!r}", key="filters")
        names = [f.name for f in self.filters]
        if len(set(names)) != len(names):
            raise ConfigError(f"filter names repeat in {names}; give each a distinct name")

    def apply(self, ctx: FilterContext, items: ArrayLike) -> Filtered:
        arr = check_items(ctx, items)
        keep = arr >= 0
        steps = []
        for f in self.filters:
            start = time.perf_counter()
            before = int(keep.sum())
            keep = keep & f.keep(ctx, np.where(keep, arr, PAD))
            after = int(keep.sum())
            steps.append(FilterStep(f.name, before, before - after, time.perf_counter() - start))
        return Filtered(arr, keep, tuple(steps))

    def __repr__(self) -> str:
        return f"FilterChain({self.filters!r})"
