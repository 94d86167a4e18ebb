"""The funnel as evaluation methods: `pipeline` and its ablations, fitted once per window.

    pipeline                  the [pipeline] of shortlist.toml, as `shortlist recommend` runs it
    pipeline_no_ranker        the same candidates and filters, in the sources' interleaved order
    pipeline_no_guard         the ranker served even where the guard chose a source order
    pipeline_no_<source>      without one source (its candidates and features), ranker retrained
                              (with the pipeline's ranker's objective)
    pipeline_div_<method>     with a diversity step (round_robin, max_per_value, mmr, revenue)
    pipeline_with_<filter>    with one more filter, e.g. pipeline_with_not_bought_before

The full pipeline is fitted once per window (ranking set, ranker, sources); variants reuse its
fitted parts, so an ablation costs a ranker fit, not a second ranking set. Dropping a source
from the ranking set (its columns, and candidates only it proposed) is the same as building
the set without it, since the union keeps every proposed item.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Self

import numpy as np

from shortlist.config import DiversifySettings, FilterSettings, Settings
from shortlist.data.arrays import TrainData
from shortlist.pipeline.core import Pipeline
from shortlist.pipeline.funnel import Funnel, attribute_codes, bind_diversifier, bind_filter
from shortlist.pipeline.training import train_ranker
from shortlist.ranking.dataset import RankingSet
from shortlist.ranking.diversity import distinct_values, intra_list_diversity
from shortlist.retrieval.stage import source_name

PIPELINE = "pipeline"
BATCH = 2048  # users recommended at once
DIVERSIFY = ("round_robin", "max_per_value", "mmr", "revenue")
FILTERS = typing.get_args(FilterSettings.model_fields["name"].annotation)  # every filter name


def pipeline_methods(settings: Settings) -> list[str]:
    """Every pipeline-family method name for these settings."""
    names = [PIPELINE, f"{PIPELINE}_no_ranker", f"{PIPELINE}_no_guard"]
    names += [f"{PIPELINE}_no_{source_name(s)}" for s in settings.pipeline.sources]
    names += [f"{PIPELINE}_div_{m}" for m in DIVERSIFY]
    configured = {f.name for f in settings.pipeline.filters}
    names += [f"{PIPELINE}_with_{f}" for f in FILTERS if f not in configured]
    return names


class PipelineFamily:
    """Fits the configured pipeline once per cutoff; hands out its variants."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.cutoff_: int | None = None
        self.pipeline_: Pipeline | None = None

    def fitted(self, train: TrainData) -> Pipeline:
        if self.cutoff_ != train.cutoff or self.pipeline_ is None:
            assert train.dataset is not None
            self.pipeline_ = Pipeline(settings=self.settings.pipeline).fit(
                train.dataset, train.cutoff, self.settings
            )
            self.cutoff_ = train.cutoff
        return self.pipeline_

    def factory(self, name: str):
        return lambda: PipelineVariant(self, name)

    def diversity_attribute(self, funnel: Funnel) -> str:
        """The attribute diversity is measured (and round robin applied) on: the configured
        one, else the first categorical item attribute the ranking features use."""
        by = self.settings.pipeline.diversify.by
        if by:
            return by
        if self.pipeline_ is not None and self.pipeline_.funnel_ is not None:
            funnel = self.pipeline_.funnel_  # the full pipeline: its features are fitted
        if funnel.features is not None and funnel.features.item_cats_:
            return next(iter(funnel.features.item_cats_))
        return ""

    def variant(self, train: TrainData, name: str) -> Funnel:
        pipeline = self.fitted(train)
        base = pipeline.funnel_
        assert base is not None
        variant = name.removeprefix(PIPELINE).removeprefix("_")
        if not variant:
            return base
        if variant == "no_ranker":
            return replace(base, features=None, ranker=None, scorer=None, order=None)
        if variant == "no_guard":
            return replace(base, order=None, ranking_note="", new_customers=None)
        if variant.startswith("div_"):
            method = variant[4:]
            spec = DiversifySettings(method=method, by=self.diversity_attribute(base))
            return replace(base, diversifier=bind_diversifier(spec, base.catalog, _vectors(base)))
        if variant.startswith("with_"):
            # the same ranker: filters act after ranking's inputs, on the candidates only
            spec = FilterSettings(name=variant[5:])  # type: ignore[arg-type]
            return replace(base, filters=[*base.filters, bind_filter(spec, base.catalog)])
        dropped = variant.removeprefix("no_")
        if dropped not in base.retrieval.names:
            raise KeyError(name)
        retrieval = base.retrieval.without(dropped)
        if base.ranker is None or pipeline.ranking_set_ is None:
            return replace(base, retrieval=retrieval)
        rs = without_source(
            pipeline.ranking_set_, dropped, base.retrieval.names, base.retrieval.columns_of(dropped)
        )
        ranker = train_ranker(
            rs,
            same_objective(self.settings, base.ranker),
            base.ranker.report_.get("valid_periods", 1),
        )
        return replace(
            base,
            retrieval=retrieval,
            ranker=ranker,
            scorer=ranker,
            order=None,
            ranking_note="",
            new_customers=None,
        )


@dataclass
class PipelineVariant:
    """One pipeline-family method, in the shape the evaluation expects (fit, recommend)."""

    family: PipelineFamily
    name: str
    funnel_: Funnel | None = None

    def fit(self, data: TrainData) -> Self:
        self.funnel_ = self.family.variant(data, self.name)
        return self

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        """The funnel's top k for every user, `BATCH` users at a time: a window's buyers at
        full scale (about 70,000) at once would hold tens of millions of candidates' features."""
        assert self.funnel_ is not None
        funnel = replace(self.funnel_, k=k)
        users = np.asarray(users, np.int64)
        parts = [funnel.run(users[lo : lo + BATCH]).items for lo in range(0, len(users), BATCH)]
        return np.vstack(parts) if parts else np.full((0, k), -1, np.int32)

    def metrics(self, recs: np.ndarray, k: int) -> dict[str, Any]:
        """Which filters ran (or were skipped, and why), and the diversity of the top k:
        distinct attribute values, and 1 - cosine of item vectors."""
        assert self.funnel_ is not None
        out: dict[str, Any] = {"filters": self.funnel_.filter_report}
        if self.funnel_.ranking_note:
            out["ranking"] = self.funnel_.ranking_note
        by = self.family.diversity_attribute(self.funnel_)
        if by:
            codes = attribute_codes(self.funnel_.catalog, by)
            out[f"distinct_{by}@{k}"] = distinct_values(recs, codes, k)
        vectors = _vectors(self.funnel_)
        if vectors is not None:
            out[f"ild@{k}"] = intra_list_diversity(recs, vectors=vectors, k=k)
        return out


def same_objective(settings: Settings, ranker: Any) -> Settings:
    """`settings` with the objective the pipeline's ranker was trained with: an ablation's
    ranker differs from it by the source only. (The pipeline chose its objective on the guard's
    held-out requests with every candidate, which an ablation does not have; left to "auto",
    it would choose on sampled negatives, which chose worse on the 13-day data.)"""
    chosen = ranker.report_.get("objective")
    if not chosen:
        return settings
    ranking = settings.ranking.model_copy(update={"objective": chosen})
    return settings.model_copy(update={"ranking": ranking})


def without_source(
    rs: RankingSet, dropped: str, sources: list[str], columns: Sequence[str] = ()
) -> RankingSet:
    """The ranking set as if `dropped` had not been a source (`columns`: the extra candidate
    columns it added, e.g. the two-tower similarity)."""
    names = rs.names
    rank_cols = [names.index(f"{s}_rank") for s in sources if s != dropped]
    proposed = ~np.isnan(rs.X[:, rank_cols])
    keep_rows = proposed.any(axis=1)
    X = rs.X.copy()
    X[:, names.index("n_sources")] = proposed.sum(axis=1)
    gone = {f"{dropped}_rank", f"{dropped}_score", *columns}
    keep_cols = [i for i, n in enumerate(names) if n not in gone]
    group_of = np.repeat(np.arange(len(rs.group)), rs.group)[keep_rows]
    y = rs.y[keep_rows]
    sizes = np.bincount(group_of, minlength=len(rs.group))
    positives = np.bincount(group_of, weights=y, minlength=len(rs.group))
    useful = positives > 0
    rows = useful[group_of]
    return RankingSet(
        X[keep_rows][rows][:, keep_cols],
        y[rows],
        sizes[useful],
        rs.period[useful],
        [names[i] for i in keep_cols],
        [c for c in rs.categorical if c in {names[i] for i in keep_cols}],
    )


def _vectors(funnel: Funnel) -> np.ndarray | None:
    tt = funnel.retrieval.two_tower
    return tt.item_vectors if tt is not None else None
