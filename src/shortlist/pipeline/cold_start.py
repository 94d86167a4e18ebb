"""Recommendations for a user the workspace has never seen: the best sellers of their segment.

A new visitor has no history, so the personal sources (repurchase, co-purchase, two-tower)
have nothing to say. What the request tells about them (a region, an age) picks the segment:
the trending lists the pipeline's `TrendingSource`s fitted per region and per age bucket,
interleaved when both are known, then the everyone-alike list, then every item in order of
recent sales (the pipeline's fallback). The same business filters as any recommendation run
over them (stock, region, age, the request's attribute filters and exclusions), except those
keyed by the user's own history (bought before), which a new user does not have.

The helpers below (`anonymous_context`, `anonymous_chain`, `take_filtered`) are shared with
`shortlist.pipeline.cart`: they filter an ordered list of items for a request that names no
known user.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shortlist.errors import RequestError, WorkspaceError
from shortlist.features.buckets import AGE_EDGES
from shortlist.features.buckets import age_bucket as bucket_of_age
from shortlist.filtering import FilterChain, FilterContext, NotBoughtBeforeFilter
from shortlist.pipeline.core import Pipeline, Recommendation, RecommendedItem
from shortlist.pipeline.funnel import Funnel, request_age
from shortlist.retrieval.sources import TrendingSource

CHUNK = 2048  # items filtered per round when walking a long ordered list

CONTEXT_KEYS = {"exclude", "filters", "region", "age"}


def bound_funnel(pipeline: Pipeline) -> Funnel:
    """The pipeline's bound funnel (loading it on first use)."""
    funnel = pipeline.load().funnel_
    if funnel is None:  # pragma: no cover - load() binds or raises
        raise WorkspaceError("the pipeline is not loaded")
    return funnel


# -- the request without a known user ------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """What a request tells about an unknown user: region (name and code) and age (years and
    age bucket); None and -1 where it tells nothing."""

    region: str | None = None
    region_code: int = -1
    age: float | None = None
    age_bucket: int = -1

    def describe(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "age": self.age,
            "age_bucket": age_label(self.age_bucket) if self.age_bucket >= 0 else None,
        }


def age_label(bucket: int) -> str:
    """'25-29' for an age bucket (the edges of shortlist.features.buckets)."""
    lo, hi = AGE_EDGES[bucket], AGE_EDGES[bucket + 1]
    return f"{lo:g}+" if hi >= 150 else f"{lo:g}-{hi - 1:g}"


def request_segment(funnel: Funnel, context: Mapping[str, Any] | None) -> Segment:
    """The segment a request names.

    Raises:
        RequestError: a region the data does not know, or an age that is not a number from 0
        to 150 (field and value named, as for a known user).
    """
    context = context or {}
    region, code = context.get("region"), -1
    if region is not None:
        rules = funnel.catalog.rules
        if rules is None:
            raise RequestError(
                f"unknown region {region!r} (the data has no regions)", field="region"
            )
        code = rules.region_code(region)
        region = str(region)
    age = request_age(context["age"]) if context.get("age") is not None else None
    bucket = int(bucket_of_age(np.array([age]))[0]) if age is not None else -1
    return Segment(region, code, age, bucket)


def anonymous_context(funnel: Funnel, segment: Segment, filters: Any = None) -> FilterContext:
    """A filter context for one request whose user the workspace does not know: region and age
    as the request gives them (unknown otherwise: the region filter keeps everything, the age
    filter only unrestricted items), the request's attribute filters."""
    rules = funnel.catalog.rules
    region = segment.region_code if rules is not None and rules.availability is not None else None
    age = np.nan if segment.age is None else segment.age
    return FilterContext(np.array([-1]), region=region, age=age, filters=filters)


def anonymous_chain(funnel: Funnel) -> FilterChain:
    """The pipeline's filter chain without the filters keyed by the user's own history (an
    unknown user has bought nothing)."""
    return FilterChain(
        [f for f in funnel.chain.filters if not isinstance(f, NotBoughtBeforeFilter)]
    )


@dataclass
class Taken:
    """What `take_filtered` chose: item idx in order, how many came from the fallback order,
    and the filtering's account (candidates in, what each filter removed)."""

    items: np.ndarray
    topped_up: int
    examined: int
    removed: dict[str, int]

    def trace(self, funnel: Funnel, started: float) -> dict[str, Any]:
        """The filter stage's trace entry (as the funnel's own), timed from `started`."""
        return {
            "stage": "filter",
            "in": self.examined,
            "out": int(len(self.items)),
            "removed": self.removed,
            "skipped": funnel.skipped,
            "ms": _ms(started),
        }


def take_filtered(
    funnel: Funnel,
    ctx: FilterContext,
    chain: FilterChain,
    ordered: np.ndarray,
    k: int,
    exclude: np.ndarray | None = None,
    *,
    top_up: bool = True,
) -> Taken:
    """The first `k` items of `ordered` (item idx, best first) that pass `chain` and are not
    excluded, then, when short and `top_up`, the pipeline's fallback order (most sold recently)
    through the same filters. Long lists are filtered chunk by chunk, stopping at k; each
    chunk's live stock (stock events) is read with it."""
    chosen: list[np.ndarray] = []
    have = 0
    examined = 0
    removed: dict[str, int] = {}
    excluded = np.asarray(exclude if exclude is not None else [], np.int64)
    seen = np.asarray([], np.int64)
    topped_up = 0
    lists = [(np.asarray(ordered, np.int64), False)]
    if top_up:
        lists.append((np.asarray(funnel.fallback, np.int64), True))
    for items, is_fallback in lists:
        for lo in range(0, len(items), CHUNK):
            if have >= k:
                break
            chunk = items[lo : lo + CHUNK]
            chunk = chunk[~np.isin(chunk, excluded) & ~np.isin(chunk, seen)]
            if not len(chunk):
                continue
            filtered = chain.apply(funnel.with_stock(ctx, chunk), chunk[None, :])
            examined += len(chunk)
            for name, n in filtered.removed.items():
                removed[name] = removed.get(name, 0) + n
            kept = chunk[filtered.keep[0]][: k - have]
            chosen.append(kept)
            seen = np.concatenate([seen, chunk])  # examined: not filtered twice
            have += len(kept)
            if is_fallback:
                topped_up += len(kept)
    items = np.concatenate(chosen) if chosen else np.asarray([], np.int64)
    return Taken(items, topped_up, examined, removed)


# -- cold start ------------------------------------------------------------------------------


def segment_lists(funnel: Funnel, segment: Segment) -> list[tuple[str, str, np.ndarray]]:
    """The trending lists that fit the segment, most specific first: (source name, what the
    list is, item idx best first). Region lists (sources with segment "region") when the region
    is known, age lists (segment "age") when the age is, then every everyone-alike list."""
    trending = [s for s, _ in funnel.retrieval.sources if isinstance(s, TrendingSource)]
    by_region, by_age, everyone = [], [], []
    for source in trending:
        if source.segment == "region" and segment.region_code >= 0:
            ranked = source.ranked_.get(segment.region_code, source.global_)
            by_region.append((source.name, f"region {segment.region}", ranked))
        elif source.segment == "age" and segment.age_bucket >= 0:
            ranked = source.ranked_.get(segment.age_bucket, source.global_)
            by_age.append((source.name, f"age {age_label(segment.age_bucket)}", ranked))
        elif source.segment is None:
            everyone.append((source.name, "everyone", source.global_))
    if not everyone and trending:  # segmented sources only: their global lists
        everyone.append((trending[0].name, "everyone", trending[0].global_))
    return by_region + by_age + everyone


def interleave(lists: Sequence[np.ndarray]) -> np.ndarray:
    """Round-robin by rank over the lists, each item at its first appearance."""
    if not lists:
        return np.asarray([], np.int64)
    depth = max(len(x) for x in lists)
    stack = np.full((depth, len(lists)), -1, np.int64)
    for j, items in enumerate(lists):
        stack[: len(items), j] = items
    seq = stack.reshape(-1)
    seq = seq[seq >= 0]
    _, first = np.unique(seq, return_index=True)
    return seq[np.sort(first)]


def cold_start(
    pipeline: Pipeline,
    context: Mapping[str, Any] | None = None,
    *,
    user_id: str = "",
    k: int | None = None,
    explain: bool = False,
) -> Recommendation:
    """The top k for a user the workspace does not know: the best sellers of the segment the
    request names (region, age), filtered like any recommendation.

    context: "region" (name), "age" (years), "filters" (the attribute filter language),
    "exclude" (item ids). Items carry `sources` (the trending lists that rank them, with their
    ranks) and, for items topped up from the fallback order, none; `score` is minus the item's
    position in the merged order (None for topped-up items), the convention of a pipeline
    without a ranker.

    Raises:
        RequestError: unknown region, impossible age (naming the field and the value), or an
        unknown context key. NotFoundError: an excluded item the catalogue does not hold.
        FilterError: a malformed filter.
    """
    funnel = bound_funnel(pipeline)
    context = dict(context or {})
    check_context(context, CONTEXT_KEYS | {"cart"})
    k = funnel.k if k is None else int(k)

    started = time.perf_counter()
    segment = request_segment(funnel, context)
    ctx = anonymous_context(funnel, segment, context.get("filters"))
    return segment_answer(
        funnel, segment, ctx, anonymous_chain(funnel), context, user_id=str(user_id), k=k,
        explain=explain, stage="cold_start", who="new customer", started=started,
    )  # fmt: skip


def segment_answer(
    funnel: Funnel,
    segment: Segment,
    ctx: FilterContext,
    chain: FilterChain,
    context: Mapping[str, Any],
    *,
    user_id: str,
    k: int,
    explain: bool,
    stage: str,
    who: str,
    started: float,
) -> Recommendation:
    """The segment's best sellers (`segment_lists`, interleaved) through `chain` with `ctx`,
    less the context's exclusions and cart: a cold start's answer, and a degraded one's
    (pipeline/degraded.py). `stage` names the trace's first stage, `who` the reasons' subject."""
    trace: list[dict[str, Any]] = []
    lists = segment_lists(funnel, segment)
    ordered = interleave([items for _, _, items in lists])
    excluded = list(context.get("exclude") or []) + list(context.get("cart") or [])
    exclude = funnel.catalog.item_idx(excluded) if excluded else None
    trace.append(
        {
            "stage": stage,
            "segment": segment.describe(),
            "lists": {f"{name} ({what})": len(items) for name, what, items in lists},
            "out": int(len(ordered)),
            "ms": _ms(started),
        }
    )

    started = time.perf_counter()
    taken = take_filtered(funnel, ctx, chain, ordered, k, exclude)
    trace.append(taken.trace(funnel, started))

    started = time.perf_counter()
    position = {int(item): p for p, item in enumerate(ordered.tolist())}
    items = []
    for item in taken.items.tolist():
        sources = {
            name: int(hit[0]) + 1
            for name, _, ranked in lists
            if len(hit := np.flatnonzero(ranked == item))
        }
        p = position.get(item)
        reasons = _cold_reasons(lists, sources, segment, who) if explain else None
        items.append(
            RecommendedItem(
                str(funnel.catalog.item_ids[item]),
                None if p is None else float(-p),
                sources,
                reasons,
                funnel.catalog.describe(item),
            )
        )
    trace.append(
        {
            "stage": "take",
            "k": k,
            "out": len(items),
            "topped_up": taken.topped_up,
            "ms": _ms(started),
        }
    )
    return Recommendation(user_id, items, trace)


def _cold_reasons(
    lists: list[tuple[str, str, np.ndarray]],
    sources: dict[str, int],
    segment: Segment,
    who: str = "new customer",
) -> list[str]:
    what = {name: kind for name, kind, _ in lists}
    if not sources:
        return [f"{who}: among the most sold items recently (top-up)"]
    out = []
    for name, rank in sorted(sources.items(), key=lambda kv: kv[1]):
        kind = what.get(name, "everyone")
        among = "" if kind == "everyone" else f" among customers of {kind}"
        out.append(f"{who}: a best seller this week{among} (#{rank} from {name})")
    return out


def check_context(context: Mapping[str, Any], allowed: set[str]) -> None:
    """Raises RequestError for a context key this kind of request does not take."""
    unknown = sorted(set(context) - allowed)
    if unknown:
        raise RequestError(
            f"unknown context key '{unknown[0]}' (use {', '.join(sorted(allowed))})",
            field="context",
        )


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
