"""The `users` feature group: attributes, age bucket, activity, price level and channel mix."""

from __future__ import annotations

from datetime import datetime

import ibis
import ibis.expr.types as ir

from shortlist import columns as C
from shortlist.config import AttributeKind
from shortlist.features.base import (
    FeatureOptions,
    GroupFrame,
    days_before,
    int_sum,
    sanitize,
    window_start,
    with_feature_time,
)
from shortlist.features.buckets import AGE_EDGES
from shortlist.features.engine import OfflineTables

NAME = "users"
KEYS = (C.USER_IDX,)
WINDOWS = (7, 28)  # days before the cutoff; plus all history

FEATURES: dict[str, str] = {
    "age_bucket": "age bucket i when AGE_EDGES[i] <= age < AGE_EDGES[i + 1] "
    f"(edges {list(AGE_EDGES)}); -1 when unknown or without roles.user_age",
    **{f"units_{d}d": f"units bought in the {d} days before the cutoff" for d in WINDOWS},
    "units_all": "units bought before the cutoff, all history",
    "items_all": "distinct items bought before the cutoff",
    "active_days": "distinct calendar days (UTC) with a purchase before the cutoff",
    "days_since_last_purchase": "days from the latest purchase to the cutoff; null if none",
    "days_since_first_purchase": "days from the first purchase to the cutoff; null if none",
    "price_mean": "mean unit price paid, weighted by quantity; null if no priced purchase",
}


def age_bucket(age: ir.NumericValue) -> ir.IntegerValue:
    """features.buckets.age_bucket as an Ibis expression: same edges, -1 for unknown."""
    pairs = zip(AGE_EDGES[:-1], AGE_EDGES[1:], strict=True)
    branches = [((age >= lo) & (age < hi), i) for i, (lo, hi) in enumerate(pairs)]
    return ibis.cases(*branches, else_=-1).cast("int32")


def _channels(src: OfflineTables, limit: int) -> list[str]:
    """The most frequent channel values over all interactions (not only before the cutoff).

    Every snapshot then has the same columns, so snapshots at different cutoffs stack into one
    table; a channel that only appears later is simply 0 in earlier snapshots.
    """
    if limit == 0:
        return []
    t = src.interactions.filter(src.interactions[C.CHANNEL].notnull())
    counts = t.group_by(C.CHANNEL).aggregate(n=t.count())
    top = counts.order_by([ibis.desc("n"), C.CHANNEL]).limit(limit)
    return [str(v) for v in src.con.to_pyarrow(top)[C.CHANNEL].to_pylist()]


def _activity(inter: ir.Table, cutoff: datetime, channels: dict[str, str]) -> ir.Table:
    """Per user aggregates over purchases before the cutoff (users who never bought are absent)."""
    ts, qty, price = inter[C.TIMESTAMP], inter[C.QUANTITY], inter[C.PRICE]
    aggs: dict[str, ir.Value] = {
        f"units_{d}d": int_sum(qty, where=ts >= window_start(cutoff, d)) for d in WINDOWS
    }
    aggs["units_all"] = int_sum(qty)
    aggs["items_all"] = inter[C.ITEM_IDX].nunique().cast("int64")
    aggs["active_days"] = ts.date().nunique().cast("int64")
    aggs["_first"] = ts.min()
    aggs["_last"] = ts.max()
    priced = price.notnull()
    aggs["_amount"] = (price * qty.cast("float64")).sum(where=priced)
    aggs["_priced_units"] = qty.cast("float64").sum(where=priced)
    for value, column in channels.items():
        aggs[column] = qty.cast("float64").sum(where=inter[C.CHANNEL] == value)
    return inter.group_by(C.USER_IDX).aggregate(**aggs)


def build(src: OfflineTables, cutoff: datetime, options: FeatureOptions) -> GroupFrame:
    """Every user, with zeros (counts) or nulls (recency, prices, shares) when they never bought."""
    inter = src.interactions_before(cutoff)
    attrs = src.attributes("users", AttributeKind.CATEGORICAL, AttributeKind.NUMERIC)
    top = src.remember(
        ("channels", options.max_channels), lambda: _channels(src, options.max_channels)
    )
    channels = sanitize(top, "channel_", "_share")
    taken = set(FEATURES) | set(channels.values())
    renamed = {(f"attr_{a}" if a in taken else a): a for a in attrs}
    base = src.users.select(C.USER_IDX, **{new: src.users[old] for new, old in renamed.items()})
    age = src.manifest.roles.user_age
    if age is not None and age in src.users.columns:
        base = base.mutate(age_bucket=age_bucket(src.users[age].cast("float64")))
    else:
        base = base.mutate(age_bucket=ibis.literal(-1, type="int32"))

    t = base.left_join(_activity(inter, cutoff, channels), C.USER_IDX)
    t = t.drop(f"{C.USER_IDX}_right")
    counts = [f"units_{d}d" for d in WINDOWS] + ["units_all", "items_all", "active_days"]
    t = t.mutate(**{c: t[c].fill_null(0) for c in counts})
    units = t["units_all"].cast("float64").nullif(0.0)
    t = t.mutate(
        days_since_last_purchase=days_before(t["_last"], cutoff),
        days_since_first_purchase=days_before(t["_first"], cutoff),
        price_mean=t["_amount"] / t["_priced_units"].nullif(0.0),
        **{column: t[column].fill_null(0.0) / units for column in channels.values()},
    )
    t = t.select(C.USER_IDX, *renamed, *FEATURES, *channels.values())
    features = {a: f"user attribute {old!r} as ingested" for a, old in renamed.items()}
    features |= FEATURES
    features |= {
        column: f"share of units bought through channel {value!r}; null if no purchase"
        for value, column in channels.items()
    }
    return GroupFrame(
        name=NAME,
        keys=KEYS,
        table=with_feature_time(t, KEYS, cutoff),
        features=features,
        description="one row per user: attributes, age bucket, activity, price level, channels",
    )
