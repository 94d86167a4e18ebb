"""The retrieval stage: several sources, each with its own depth, merged into one candidate set.

Every candidate keeps the rank and score it had in each source that proposed it: the ranker's
most useful features, and what `explain` shows a merchandiser.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np

from shortlist.config import RetrievalSettings, SourceSettings
from shortlist.data.arrays import State, TrainData, prefixed, under
from shortlist.data.candidates import CandidateSet
from shortlist.errors import ConfigError
from shortlist.retrieval.sources import (
    Candidates,
    CoPurchaseSource,
    LiveSignals,
    RepurchaseSource,
    SameGroupSource,
    Source,
    TrendingSource,
    TwoTowerSource,
    union,
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

    def state(self) -> State:
        """Every source's fitted arrays, under its name (see `Source.state`)."""
        assert self.fitted_, "fit first"
        return {k: v for s, _ in self.sources for k, v in prefixed(s.name, s.state()).items()}

    def restore(self, state: State) -> Self:
        """The sources as `state` (from a fitted stage's `state`) describes them: fitted,
        with nothing recomputed."""
        for source, _ in self.sources:
            source.restore(under(source.name, state))
        self.fitted_ = True
        return self

    @property
    def names(self) -> list[str]:
        return [s.name for s, _ in self.sources]

    @property
    def two_tower(self) -> TwoTowerSource | None:
        """The two-tower source, if the stage has one."""
        return next((s for s, _ in self.sources if isinstance(s, TwoTowerSource)), None)

    @property
    def column_names(self) -> list[str]:
        """The extra per-candidate columns the sources add (CandidateSet.columns), in order."""
        return [c for s, _ in self.sources for c in getattr(s, "column_names", [])]

    def columns_of(self, name: str) -> list[str]:
        """The extra columns the source called `name` adds."""
        return [
            c for s, _ in self.sources if s.name == name for c in getattr(s, "column_names", [])
        ]

    def without(self, name: str) -> Retrieval:
        """The same fitted sources but one (an ablation)."""
        return Retrieval([(s, k) for s, k in self.sources if s.name != name], fitted_=True)

    def candidates(
        self,
        users: np.ndarray,
        live: LiveSignals | None = None,
        states: dict[str, object] | None = None,
    ) -> CandidateSet:
        """live: what real-time events recorded since the cutoff for these users (the sources
        that read it answer with it; see `LiveSignals`). states: filled with what each source
        computed on the way (`Candidates.state`: the two-tower's user vectors), by name."""
        assert self.fitted_, "fit first"
        users = np.asarray(users, dtype=np.int64)
        results: dict[str, Candidates] = {}
        seconds: dict[str, float] = {}
        for source, k in self.sources:
            started = time.perf_counter()
            if live is not None and getattr(source, "reads_live", False):
                results[source.name] = source.candidates(users, k, live=live)  # type: ignore[call-arg]
            else:
                results[source.name] = source.candidates(users, k)
            seconds[source.name] = time.perf_counter() - started
        if states is not None:
            states.update({name: found.state for name, found in results.items()})
        budget = self.budget or sum(k for _, k in self.sources)
        items, ranks = union(results, budget)
        scores = {}
        for name, found in results.items():
            r = ranks[name].astype(np.int64)
            picked = np.take_along_axis(found.scores, np.maximum(r - 1, 0), axis=1)
            scores[name] = np.where(r > 0, picked, np.nan).astype(np.float32)
        columns: dict[str, np.ndarray] = {}
        for source, _ in self.sources:
            if hasattr(source, "columns"):
                started = time.perf_counter()
                columns.update(source.columns(users, items, results[source.name].state))
                seconds[source.name] += time.perf_counter() - started
        return CandidateSet(users, items, ranks, scores, seconds, columns)


def make_source(
    spec: SourceSettings,
    two_tower_settings: RetrievalSettings | None = None,
    two_tower: TwoTowerSource | None = None,
) -> Source:
    """The source a `[pipeline] sources` entry names: unfitted, or for the two-tower the
    trained source given (a saved model and index)."""
    if spec.name == "repurchase":
        return RepurchaseSource()
    if spec.name == "same_group":
        return SameGroupSource()
    if spec.name == "copurchase":
        return CoPurchaseSource()
    if spec.name == "two_tower":
        return two_tower or TwoTowerSource(settings=two_tower_settings)
    return TrendingSource(segment=spec.segment, name=source_name(spec))


def source_name(spec: SourceSettings) -> str:
    """The name a source's features and trace entries carry (trending_age for segments)."""
    return f"{spec.name}_{spec.segment}" if spec.name == "trending" and spec.segment else spec.name


def make_retrieval(
    specs: Sequence[SourceSettings],
    two_tower_settings: RetrievalSettings | None = None,
    two_tower: TwoTowerSource | None = None,
) -> Retrieval:
    """Sources in order with their depths (`two_tower`: a trained two-tower source to use).
    Raises ConfigError for none or a repeated name."""
    names = [source_name(s) for s in specs]
    if not names:
        raise ConfigError("the pipeline needs at least one source", key="pipeline.sources")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"source '{repeated[0]}' is listed twice", key="pipeline.sources")
    return Retrieval([(make_source(s, two_tower_settings, two_tower), s.k) for s in specs])
