"""The `user_category` feature group: how much each user buys of each category value (long)."""

from __future__ import annotations

from datetime import datetime

import ibis
import ibis.expr.types as ir

from shortlist import columns as C
from shortlist.config import AttributeKind
from shortlist.errors import ConfigError
from shortlist.features.base import (
    FeatureOptions,
    GroupFrame,
    days_before,
    int_sum,
    window_start,
    with_feature_time,
)
from shortlist.features.engine import OfflineTables

NAME = "user_category"
ATTRIBUTE = "attribute"  # the item attribute's name
VALUE = "value"  # one of its values, as a string
KEYS = (C.USER_IDX, ATTRIBUTE, VALUE)

FEATURES: dict[str, str] = {
    "purchases": "units the user bought with this attribute value before the cutoff",
    "share": "purchases / all units the user bought before the cutoff (a user's shares over "
    "one attribute sum to at most 1: items lacking the attribute count only in the total)",
    "days_since_last": "days from the user's latest purchase with this value to the cutoff",
    "purchases_28d": "units the user bought with this attribute value in the 28 days before "
    "the cutoff (0 when none)",
}
RECENT_DAYS = 28  # window of purchases_28d


def eligible_attributes(src: OfflineTables, options: FeatureOptions) -> list[str]:
    """Categorical item attributes with at most options.max_category_values distinct values,
    plus the item_group role's attribute (see `_eligible`); asked once per tables object."""
    key = ("eligible", options.max_category_values, options.category_attributes)
    return list(src.remember(key, lambda: _eligible(src, options)))


def _eligible(src: OfflineTables, options: FeatureOptions) -> list[str]:
    """Categorical item attributes with at most options.max_category_values distinct values,
    plus the item_group role's attribute whatever its number of values (the ranker's user x
    product counts: a product groups an item's variants, the strongest repurchase signal).

    An explicit options.category_attributes is taken as is (each must be categorical).
    """
    categorical = src.attributes("items", AttributeKind.CATEGORICAL)
    if options.category_attributes is not None:
        unknown = [a for a in options.category_attributes if a not in categorical]
        if unknown:
            raise ConfigError(
                f"not categorical item attributes: {', '.join(unknown)}",
                key="features.category_attributes",
            )
        return list(options.category_attributes)
    if not categorical:
        return []
    items = src.items
    counts = src.con.to_pyarrow(
        items.aggregate(**{f"n{i}": items[a].nunique() for i, a in enumerate(categorical)})
    ).to_pylist()[0]
    group = src.manifest.roles.item_group
    return [
        a
        for i, a in enumerate(categorical)
        if counts[f"n{i}"] <= options.max_category_values or a == group
    ]


def _long_items(items: ir.Table, attributes: list[str]) -> ir.Table:
    """(item_idx, attribute, value) for every item and attribute with a value."""
    parts = [
        items.select(
            C.ITEM_IDX,
            ibis.literal(a, type="string").name(ATTRIBUTE),
            items[a].cast("string").name(VALUE),
        )
        for a in attributes
    ]
    if not parts:  # nothing eligible: an empty table of the same shape
        parts = [
            items.select(
                C.ITEM_IDX,
                ibis.literal("", type="string").name(ATTRIBUTE),
                ibis.null("string").name(VALUE),
            )
        ]
    long = ibis.union(*parts, distinct=False) if len(parts) > 1 else parts[0]
    return long.filter(long[VALUE].notnull())


def build(src: OfflineTables, cutoff: datetime, options: FeatureOptions) -> GroupFrame:
    """One row per (user, attribute, value) the user bought before the cutoff; others absent."""
    attributes = eligible_attributes(src, options)
    inter = src.interactions_before(cutoff)
    joined = inter.join(_long_items(src.items, attributes), C.ITEM_IDX)
    qty, ts = joined[C.QUANTITY], joined[C.TIMESTAMP]
    per_value = joined.group_by([C.USER_IDX, ATTRIBUTE, VALUE]).aggregate(
        purchases=int_sum(qty),
        _last=ts.max(),
        _recent=int_sum(qty, where=ts >= window_start(cutoff, RECENT_DAYS)),
    )
    totals = inter.group_by(C.USER_IDX).aggregate(_total=int_sum(inter[C.QUANTITY]))
    t = per_value.join(totals, C.USER_IDX)
    t = t.select(
        C.USER_IDX,
        ATTRIBUTE,
        VALUE,
        purchases=t["purchases"],
        share=t["purchases"].cast("float64") / t["_total"].cast("float64").nullif(0.0),
        days_since_last=days_before(t["_last"], cutoff),
        purchases_28d=t["_recent"].fill_null(0),
    )
    listed = ", ".join(attributes) or "none"
    return GroupFrame(
        name=NAME,
        keys=KEYS,
        table=with_feature_time(t, KEYS, cutoff),
        features=dict(FEATURES),
        description=f"user x category value affinities, long format; attributes: {listed}",
    )
