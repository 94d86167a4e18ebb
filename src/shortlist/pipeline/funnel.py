"""The bound funnel: sources fitted, filters built from the business rules, ranker loaded.

`run` serves a batch of users (one request is a batch of one) and records a trace: per stage
the candidates in and out and the time spent.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shortlist.config import DiversifySettings, FilterSettings
from shortlist.data.arrays import State, prefixed
from shortlist.data.candidates import CandidateSet
from shortlist.errors import ConfigError, RequestError
from shortlist.filtering import (
    AgeAllowedFilter,
    AttributeFilter,
    AvailableInRegionFilter,
    CandidateFilter,
    FilterChain,
    FilterContext,
    InStockFilter,
    NotBoughtBeforeFilter,
)
from shortlist.pipeline.catalog import Catalog
from shortlist.pipeline.guard import NewCustomerOrder
from shortlist.ranking.diversity import MMR, ExpectedRevenue, MaxPerValue, RoundRobin
from shortlist.ranking.features import RankingFeatures
from shortlist.ranking.heuristics import SourceOrder
from shortlist.ranking.ranker import LightGBMRanker
from shortlist.ranking.scoring import TreeScorer
from shortlist.retrieval.sources import LiveSignals
from shortlist.retrieval.stage import Retrieval

FALLBACK_CHUNK = 2048  # fallback items examined per top-up round


@dataclass
class Output:
    """A batch's answer: row i is for users[i]."""

    users: np.ndarray
    items: np.ndarray  # (n, k) item idx, -1 where even the fallback found nothing
    scores: np.ndarray  # (n, k) ranker score (NaN for fallback items)
    trace: list[dict[str, Any]]
    candidates: CandidateSet | None = None  # after filtering, in ranked order (for explain)
    features: np.ndarray | None = None  # (n, m, f) of the ranked candidates, when kept
    topped_up: np.ndarray | None = None  # (n,) fallback items appended per row


@dataclass(frozen=True)
class BoundFilter:
    """A configured filter bound to the data: the filter, or why it cannot run (`skipped`)."""

    name: str
    filter: CandidateFilter | None
    skipped: str = ""


def bind_filter(spec: FilterSettings, catalog: Catalog, saved: State | None = None) -> BoundFilter:
    """The filter a spec names, or the reason it is skipped (its data is missing or withheld);
    a skipped filter is named, with its reason, in every trace and evaluation report.

    saved: the filter's arrays as a saved funnel wrote them (`Funnel.state`), used instead of
    building it from the interactions (a loaded pipeline reads none)."""
    rules, data = catalog.rules, catalog.data
    withheld = rules.withheld if rules is not None else {}

    def skipped(table: str) -> BoundFilter:
        why = withheld.get(table, f"the data has no {table} table")
        return BoundFilter(spec.name, None, why)

    if spec.name == "in_stock":
        if rules is None or rules.units is None:
            return skipped("inventory")
        return BoundFilter(spec.name, InStockFilter(rules.units))
    if spec.name == "available_in_region":
        if rules is None or rules.availability is None:
            return skipped("item_regions")
        if rules.user_region is None:
            return skipped("user_regions")
        return BoundFilter(spec.name, AvailableInRegionFilter(rules.availability))
    if spec.name == "age_allowed":
        if rules is None or rules.min_age is None:
            return skipped("item_restrictions")
        return BoundFilter(spec.name, AgeAllowedFilter(rules.min_age))
    if saved:
        return BoundFilter(spec.name, NotBoughtBeforeFilter.restore(saved))
    inter = data.interactions
    if spec.bloom:
        bought = NotBoughtBeforeFilter.bloom(inter.user, inter.item, fp_rate=spec.fp_rate)
    else:
        bought = NotBoughtBeforeFilter.exact(inter.user, inter.item)
    return BoundFilter(spec.name, bought)


def bind_diversifier(spec: DiversifySettings, catalog: Catalog, vectors: np.ndarray | None):
    if spec.method == "none":
        return None
    if spec.method == "revenue":
        return ExpectedRevenue(catalog.price)
    if spec.method == "mmr":
        if vectors is None:
            raise ConfigError("mmr needs the two-tower item vectors", key="pipeline.diversify")
        return MMR(vectors, spec.lambda_)
    codes = attribute_codes(catalog, spec.by)
    if spec.method == "round_robin":
        return RoundRobin(codes)
    return MaxPerValue(codes, spec.limit)


def attribute_codes(catalog: Catalog, by: str) -> np.ndarray:
    """Int codes of an item attribute by item idx (what diversity groups items by)."""
    items = catalog.data.items
    if not by or items is None or by not in items.columns:
        known = ", ".join(items.columns) if items is not None else "none"
        raise ConfigError(
            f"'{by}' is not an item attribute (known: {known})", key="pipeline.diversify.by"
        )
    return pd.factorize(items[by], sort=True)[0].astype(np.int32)


@dataclass
class Funnel:
    catalog: Catalog
    retrieval: Retrieval
    filters: list[BoundFilter]
    features: RankingFeatures | None
    ranker: LightGBMRanker | None
    scorer: TreeScorer | None
    diversifier: Any
    fallback: np.ndarray  # item idx, most sold recently first: the top-up order
    k: int = 12
    order: SourceOrder | None = None  # served instead of the ranker (the guard's choice)
    ranking_note: str = ""  # why the ranker or the order serves (pipeline/guard.py)
    # customers who never bought, ordered apart where the guard found it better for them
    new_customers: NewCustomerOrder | None = None
    # what real-time events recorded since the cutoff, read per request (pipeline/live.py);
    # None (a fitted funnel: evaluation): nothing is read
    live: Any = None
    request_filter: AttributeFilter = field(init=False)
    chain: FilterChain = field(init=False)  # built once: the same for every request
    skipped: dict[str, str] = field(init=False)  # filters that cannot run -> why

    def __post_init__(self) -> None:
        self.request_filter = AttributeFilter(self.catalog.attributes)
        self.request_filter.name = "request_filters"
        self.active_ = [b.filter for b in self.filters if b.filter is not None]
        self.skipped = {b.name: b.skipped for b in self.filters if b.filter is None}
        self.chain = FilterChain([*self.active_, self.request_filter])
        self._in_stock = any(isinstance(f, InStockFilter) for f in self.active_)

    def state(self) -> State:
        """What the funnel serves from besides its models, as named arrays (pipeline/state.py
        writes them; `Pipeline.load` hands them back): the sources' fitted arrays, the
        bought-before set, the last prices and the top-up order."""
        out: State = {
            "catalog.price": self.catalog.price,
            "fallback": self.fallback,
            **prefixed("retrieval", self.retrieval.state()),
        }
        for b in self.filters:
            if isinstance(b.filter, NotBoughtBeforeFilter):
                out.update(prefixed(f"filter.{b.name}", b.filter.state()))
        return out

    @property
    def filter_report(self) -> dict[str, str]:
        """Every configured filter: "ran", or "skipped: <why>"."""
        return {
            b.name: "ran" if b.filter is not None else f"skipped: {b.skipped}" for b in self.filters
        }

    def new_customers_scores(
        self, cs: CandidateSet, X: np.ndarray, rows: np.ndarray, cols: np.ndarray, scores: Any
    ) -> np.ndarray:
        """The ranker's `scores` of `cs`, the new customers' replaced by their own order when
        the guard chose one (pipeline/guard.py, NewCustomerOrder)."""
        if self.new_customers is None or self.features is None:
            return scores
        names = self.features.feature_names(list(cs.sources), list(cs.columns))
        return self.new_customers.scores(names, X, rows, cols, scores)

    # -- live state ---------------------------------------------------------------------
    def signals(self, users: np.ndarray) -> LiveSignals | None:
        """The users' purchases (and everyone's sales) recorded since the cutoff, or None."""
        return self.live.signals(users) if self.live is not None else None

    def with_stock(self, ctx: FilterContext, items: np.ndarray) -> FilterContext:
        """`ctx` with the live units of `items` (stock events), for the in-stock filter."""
        if self.live is None or not self._in_stock:
            return ctx
        return ctx.with_stock(self.live.stock(items))

    # -- context ------------------------------------------------------------------------
    def context(
        self,
        users: np.ndarray,
        request: Mapping[str, Any] | None = None,
        signals: LiveSignals | None = None,
    ) -> FilterContext:
        """Region and age of the users from the workspace, unless the request overrides them;
        with `signals`, what they bought since the cutoff (for the bought-before filter).

        Raises:
            RequestError: a region the data does not know, or an age that is not a number
            from 0 to 150 (a filter must never be silently turned off by a typo).
        """
        request = request or {}
        rules, data = self.catalog.rules, self.catalog.data
        region = rules.user_region[users] if rules and rules.user_region is not None else None
        if request.get("region") is not None:
            if rules is None:
                raise RequestError(
                    f"unknown region {request['region']!r} (the data has no regions)",
                    field="region",
                )
            region = rules.region_code(request["region"])
        age = data.user_age[users] if data.user_age is not None else None
        if request.get("age") is not None:
            age = request_age(request["age"])
        bought = signals.items if signals is not None and signals.any() else None
        return FilterContext(
            users, region=region, age=age, filters=request.get("filters"), bought=bought
        )

    # -- the run ------------------------------------------------------------------------
    def run(
        self,
        users: np.ndarray,
        request: Mapping[str, Any] | None = None,
        *,
        exclude: np.ndarray | None = None,
        keep_features: bool = False,
        k: int | None = None,
    ) -> Output:
        """k: items per user for this call (default: the pipeline's)."""
        users = np.asarray(users, dtype=np.int64)
        k = k or self.k
        trace: list[dict[str, Any]] = []

        started = time.perf_counter()
        signals = self.signals(users)
        ctx = self.context(users, request, signals)
        cs = self.retrieval.candidates(users, live=signals)
        trace.append(
            {
                "stage": "retrieve",
                "out": int((cs.items >= 0).sum()),
                "sources": {n: int((r > 0).sum()) for n, r in cs.ranks.items()},
                "source_ms": {n: round(s * 1000, 3) for n, s in cs.seconds.items()},
                **({"events": _event_counts(signals)} if signals is not None else {}),
                "ms": _ms(started),
            }
        )

        started = time.perf_counter()
        chain = self._chain(exclude)
        ctx = self.with_stock(ctx, cs.items)
        filtered = chain.apply(ctx, cs.items)
        cs = cs.select(filtered.keep)
        trace.append(
            {
                "stage": "filter",
                "in": int(trace[0]["out"]),
                "out": int((cs.items >= 0).sum()),
                "removed": filtered.removed,
                "skipped": self.skipped,
                "ms": _ms(started),
            }
        )

        started = time.perf_counter()
        X = None
        if self.order is not None and not self.order.needs_ranker:
            score_ms = 0.0
            scores = self.order.scores(cs)
            order = np.argsort(-scores, axis=1, kind="stable")
            cs = cs.reorder(order)
            scores = np.take_along_axis(scores, order, axis=1)
            name = self.order.name
        elif self.scorer is not None and self.features is not None and cs.items.shape[1]:
            X, rows, cols = self.features.transform(cs)
            scores = np.full(cs.items.shape, -np.inf)
            scoring = time.perf_counter()
            scores[rows, cols] = self.scorer.predict(X)
            score_ms = _ms(scoring)
            scores = self.new_customers_scores(cs, X, rows, cols, scores)
            order = np.argsort(-scores, axis=1, kind="stable")
            cs = cs.reorder(order)
            scores = np.take_along_axis(scores, order, axis=1)
            if self.order is not None:  # a blend: its sources first, the ranker's order after
                blended = self.order.scores(cs, scores)
                second = np.argsort(-blended, axis=1, kind="stable")
                cs = cs.reorder(second)
                scores = np.take_along_axis(blended, second, axis=1)
                order = np.take_along_axis(order, second, axis=1)
            if keep_features:
                full = np.full((*order.shape, X.shape[1]), np.nan, np.float32)
                full[rows, cols] = X
                X = np.take_along_axis(full, order[:, :, None], axis=1)
            name = (
                self.scorer.name
                if self.order is None
                else f"{self.order.name} ({self.scorer.name})"
            )
            if self.new_customers is not None:
                name = f"{name}; {self.new_customers.name}"
        else:
            score_ms = 0.0
            # no ranker: the union's interleaved order, scored by position
            scores = -np.broadcast_to(np.arange(cs.items.shape[1], dtype=float), cs.items.shape)
            scores = np.where(cs.items >= 0, scores, -np.inf)
            name = "union order"
        trace.append(
            {
                "stage": "rank",
                "in": int((cs.items >= 0).sum()),
                "scorer": name,
                **({"ranker": self.ranking_note} if self.ranking_note else {}),
                "score_ms": score_ms,  # the trees alone; the rest is features and sorting
                "ms": _ms(started),
            }
        )

        started = time.perf_counter()
        items = cs.items
        if self.diversifier is not None and items.shape[1]:
            finite = np.where(np.isfinite(scores), scores, np.nan).astype(np.float32)
            items = self.diversifier.rerank(items, finite, k)
            trace.append(
                {"stage": "diversify", "method": self.diversifier.name, "ms": _ms(started)}
            )
            started = time.perf_counter()
        top = np.full((len(users), k), -1, np.int32)
        width = min(k, items.shape[1])
        top[:, :width] = items[:, :width]
        top_scores = _scores_of(top, cs.items, scores)
        added = self._top_up(top, ctx, chain, cs)
        trace.append(
            {
                "stage": "take",
                "k": k,
                "out": int((top >= 0).sum()),
                "topped_up": int(added.sum()),
                "ms": _ms(started),
            }
        )
        return Output(
            users,
            top,
            top_scores,
            trace,
            cs,
            X if keep_features else None,
            added,
        )

    def _chain(self, exclude: np.ndarray | None) -> FilterChain:
        """The prebuilt chain, or one with the request's exclusions before its filters."""
        if exclude is None or not len(exclude):
            return self.chain
        excluded = _Exclude(np.asarray(exclude, np.int64))
        return FilterChain([*self.active_, excluded, self.request_filter])

    def _top_up(
        self, top: np.ndarray, ctx: FilterContext, chain: FilterChain, cs: CandidateSet
    ) -> np.ndarray:
        """Fill short rows from the fallback order, through the same filters.

        Rows stay short only when no item of the catalogue passes the filters.
        """
        added = np.zeros(len(top), np.int64)
        short = np.flatnonzero((top < 0).any(axis=1))
        for r in short:
            sub = ctx.rows(r, r + 1)
            for lo in range(0, len(self.fallback), FALLBACK_CHUNK):
                need = int((top[r] < 0).sum())
                if need == 0:
                    break
                chunk = self.fallback[lo : lo + FALLBACK_CHUNK]
                chunk = chunk[~np.isin(chunk, top[r])]
                keep = chain.apply(self.with_stock(sub, chunk), chunk[None, :]).keep[0]
                fill = chunk[keep][:need]
                slots = np.flatnonzero(top[r] < 0)[: len(fill)]
                top[r, slots] = fill
                added[r] += len(fill)
        return added


class _Exclude(CandidateFilter):
    """Items the request rules out (e.g. what is already in the cart)."""

    name = "exclude"

    def __init__(self, items: np.ndarray):
        self.items = items

    def _keep(self, ctx: FilterContext, items: np.ndarray, valid: np.ndarray) -> np.ndarray:
        return ~np.isin(items, self.items)


def _scores_of(top: np.ndarray, items: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The score each chosen item had among the candidates (NaN when not among them)."""
    r, c = np.nonzero(items >= 0)
    keys = (r.astype(np.int64) << 32) | items[r, c].astype(np.int64)
    order = np.argsort(keys)
    want = (np.arange(len(top), dtype=np.int64)[:, None] << 32) | np.maximum(top, 0)
    pos = np.minimum(np.searchsorted(keys[order], want), max(len(keys) - 1, 0))
    out = np.full(top.shape, np.nan)
    if len(keys):
        hit = (keys[order][pos] == want) & (top >= 0)
        found = scores[r[order][pos], c[order][pos]]
        out = np.where(hit & np.isfinite(found), found, np.nan)
    return out


def _event_counts(signals: LiveSignals) -> dict[str, int]:
    """For the trace: purchases since the cutoff of the batch's users, items sold since."""
    sold = signals.sold
    return {
        "purchases": int(sum(len(x) for x in signals.items)),
        "items_sold": 0 if sold is None else int(len(sold[0])),
    }


def request_age(value: object) -> float:
    """A request's age in years. Raises RequestError unless it is a number from 0 to 150."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise RequestError(f"must be a number of years, got {value!r}", field="age")
    try:
        age = float(value)
    except ValueError:
        raise RequestError(f"must be a number of years, got {value!r}", field="age") from None
    if not 0 <= age <= 150:  # NaN fails too
        raise RequestError(f"must be from 0 to 150 years, got {value!r}", field="age")
    return age


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
