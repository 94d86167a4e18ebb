"""The retrieval stage: several sources, each with its own depth, merged into one candidate set.

Every candidate keeps the rank and score it had in each source that proposed it: the ranker's
most useful features, and what `explain` shows a merchandiser.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Self

import numpy as np

from shortlist.config import RetrievalSettings, SourceSettings
from shortlist.data.arrays import TrainData
from shortlist.errors import ConfigError
from shortlist.retrieval.sources import (
    Candidates,
    CoPurchaseSource,
    Repurchase,
    SameGroup,
    Source,
    Trending,
    TwoTowerSource,
    union,
)


@dataclass(frozen=True)
class CandidateSet:
    """Candidates for a batch of users: row i belongs to users[i]; -1 pads short rows."""

    users: np.ndarray  # (n,) int
    items: np.ndarray  # (n, m) int32
    ranks: dict[str, np.ndarray]  # per source (n, m) int16, 1-based, 0 = not proposed
    scores: dict[str, np.ndarray]  # per source (n, m) float32, NaN = not proposed
    seconds: dict[str, float] = field(default_factory=dict)  # per source, for the trace

    def __len__(self) -> int:
        return len(self.users)

    @property
    def sources(self) -> list[str]:
        return list(self.ranks)

    def select(self, keep: np.ndarray) -> CandidateSet:
        """Keep the masked candidates of every row, in order, moved to the front (-1 after)."""
        order = np.argsort(~keep, axis=1, kind="stable")
        return self.reorder(order, keep[np.arange(len(order))[:, None], order])

    def reorder(self, order: np.ndarray, kept: np.ndarray | None = None) -> CandidateSet:
        """Every row's candidates in `order`; where `kept` (in the new order) is False, padding.

        Plain fancy indexing with one row index: a request is one row, and take_along_axis
        costs more per call than the copy itself for the dozen arrays of a candidate set.
        """
        at = (np.arange(len(order))[:, None], order)

        def take(a: np.ndarray, pad: object) -> np.ndarray:
            return a[at] if kept is None else np.where(kept, a[at], pad)

        return CandidateSet(
            self.users,
            take(self.items, -1).astype(np.int32, copy=False),
            {n: take(r, 0).astype(np.int16, copy=False) for n, r in self.ranks.items()},
            {n: take(s, np.nan).astype(np.float32, copy=False) for n, s in self.scores.items()},
            self.seconds,
        )


@dataclass
class Retrieval:
    """Sources with their depths (k per source), in union order.

    `candidates` asks every source for its k best and interleaves them by rank until `budget`
    distinct items per user (default: the sum of the depths, i.e. everything proposed).
    """

    sources: Sequence[tuple[Source, int]]
    budget: int | None = None
    fitted_: bool = False

    def fit(self, data: TrainData) -> Self:
        for source, _ in self.sources:
            source.fit(data)
        self.fitted_ = True
        return self

    @property
    def names(self) -> list[str]:
        return [s.name for s, _ in self.sources]

    def candidates(self, users: np.ndarray) -> CandidateSet:
        assert self.fitted_, "fit first"
        users = np.asarray(users, dtype=np.int64)
        results: dict[str, Candidates] = {}
        seconds: dict[str, float] = {}
        for source, k in self.sources:
            started = time.perf_counter()
            results[source.name] = source.candidates(users, k)
            seconds[source.name] = time.perf_counter() - started
        budget = self.budget or sum(k for _, k in self.sources)
        items, ranks = union(results, budget)
        scores = {}
        for name, (_, values) in results.items():
            r = ranks[name].astype(np.int64)
            picked = np.take_along_axis(values, np.maximum(r - 1, 0), axis=1)
            scores[name] = np.where(r > 0, picked, np.nan).astype(np.float32)
        return CandidateSet(users, items, ranks, scores, seconds)


def make_source(
    spec: SourceSettings, two_tower_settings: RetrievalSettings | None = None
) -> Source:
    """The source a `[pipeline] sources` entry names (unfitted)."""
    if spec.name == "repurchase":
        return Repurchase()
    if spec.name == "same_group":
        return SameGroup()
    if spec.name == "copurchase":
        return CoPurchaseSource()
    if spec.name == "two_tower":
        return TwoTowerSource(settings=two_tower_settings)
    return Trending(segment=spec.segment, name=source_name(spec))


def source_name(spec: SourceSettings) -> str:
    """The name a source's features and trace entries carry (trending_age for segments)."""
    return f"{spec.name}_{spec.segment}" if spec.name == "trending" and spec.segment else spec.name


def make_retrieval(
    specs: Sequence[SourceSettings], two_tower_settings: RetrievalSettings | None = None
) -> Retrieval:
    """Sources in order with their depths. Raises ConfigError for none or a repeated name."""
    names = [source_name(s) for s in specs]
    if not names:
        raise ConfigError("the pipeline needs at least one source", key="pipeline.sources")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"source '{repeated[0]}' is listed twice", key="pipeline.sources")
    return Retrieval([(make_source(s, two_tower_settings), s.k) for s in specs])
