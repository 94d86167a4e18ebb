"""The `items` feature group: attributes, popularity, trends, repeat buying, prices, buyer age."""

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
    window_start,
    with_feature_time,
)
from shortlist.features.engine import OfflineTables

NAME = "items"
KEYS = (C.ITEM_IDX,)
WINDOWS = (1, 7, 28)  # days before the cutoff
RECENT_PRICE_DAYS = 28  # window of price_recent

FEATURES: dict[str, str] = {
    **{
        f"units_{d}d": f"units sold in the {d} day(s) before the cutoff (sum of quantity)"
        for d in WINDOWS
    },
    **{f"buyers_{d}d": f"distinct buyers in the {d} day(s) before the cutoff" for d in WINDOWS},
    "units_prev_7d": "units sold 14 to 7 days before the cutoff (the week before units_7d)",
    "trend_7d": "(units_7d + 1) / (units_prev_7d + 1): above 1 rising, below 1 falling",
    "units_all": "units sold before the cutoff, all history",
    "buyers_all": "distinct buyers before the cutoff, all history",
    "price_mean": "mean unit price paid, weighted by quantity; null if never sold with a price",
    "price_min": "lowest unit price paid; null if never sold with a price",
    "price_max": "highest unit price paid; null if never sold with a price",
    "price_last": "unit price at the latest sale with a price (quantity-weighted mean of ties)",
    "days_since_first_sale": "days from the first sale to the cutoff; null if never sold",
    "days_since_last_sale": "days from the latest sale to the cutoff; null if never sold",
    "buyer_age_mean": "mean age of the distinct buyers with a known age (roles.user_age); "
    "null without that role or such buyers",
    "trend_28d": "units_7d / (units_28d / 4 + 1): last week against the 28-day weekly average",
    "repeat_buyer_share": "share of the distinct buyers with at least 2 interaction rows of the "
    "item before the cutoff (repeat buyers / buyers_all); 0 if never sold",
    "price_recent": f"mean unit price paid in the {RECENT_PRICE_DAYS} days before the cutoff, "
    "weighted by quantity; price_mean when no priced sale there; null if never sold with a price",
}


def _sales(inter: ir.Table, cutoff: datetime) -> ir.Table:
    """Per item aggregates over its sales before the cutoff (items never sold are absent)."""
    ts, qty, price, user = inter[C.TIMESTAMP], inter[C.QUANTITY], inter[C.PRICE], inter[C.USER_IDX]
    aggs: dict[str, ir.Value] = {}
    for d in WINDOWS:
        recent = ts >= window_start(cutoff, d)
        aggs[f"units_{d}d"] = int_sum(qty, where=recent)
        aggs[f"buyers_{d}d"] = user.nunique(where=recent).cast("int64")
    aggs["units_prev_7d"] = int_sum(
        qty, where=(ts >= window_start(cutoff, 14)) & (ts < window_start(cutoff, 7))
    )
    aggs["units_all"] = int_sum(qty)
    aggs["buyers_all"] = user.nunique().cast("int64")
    priced = price.notnull()
    aggs["_amount"] = (price * qty.cast("float64")).sum(where=priced)
    aggs["_priced_units"] = qty.cast("float64").sum(where=priced)
    recent_priced = priced & (ts >= window_start(cutoff, RECENT_PRICE_DAYS))
    aggs["_amount_recent"] = (price * qty.cast("float64")).sum(where=recent_priced)
    aggs["_priced_units_recent"] = qty.cast("float64").sum(where=recent_priced)
    aggs["price_min"] = price.min()
    aggs["price_max"] = price.max()
    aggs["_first"] = ts.min()
    aggs["_last"] = ts.max()
    return inter.group_by(C.ITEM_IDX).aggregate(**aggs)


def _last_price(inter: ir.Table) -> ir.Table:
    """Price at each item's latest priced sale; same-time sales are averaged by quantity.

    Averaging ties (rather than picking one) keeps the result independent of row order, which
    neither engine guarantees, and H&M timestamps are whole days, so ties are common.
    """
    priced = inter.filter(inter[C.PRICE].notnull())
    last = priced.group_by(C.ITEM_IDX).aggregate(_ts=priced[C.TIMESTAMP].max())
    at_last = priced.join(
        last,
        [priced[C.ITEM_IDX] == last[C.ITEM_IDX], priced[C.TIMESTAMP] == last["_ts"]],
    )
    qty = at_last[C.QUANTITY].cast("float64")
    return at_last.group_by(C.ITEM_IDX).aggregate(
        price_last=(at_last[C.PRICE] * qty).sum() / qty.sum()
    )


def _buyers(inter: ir.Table) -> ir.Table:
    """(item_idx, user_idx, _rows): each distinct buyer of each item, with its interaction rows."""
    return inter.group_by([C.ITEM_IDX, C.USER_IDX]).aggregate(_rows=inter.count())


def _repeat_buyers(buyers: ir.Table) -> ir.Table:
    """Per item, its distinct buyers with at least 2 interaction rows of it (rows, not units)."""
    return buyers.group_by(C.ITEM_IDX).aggregate(
        _repeat_buyers=buyers.count(where=buyers["_rows"] >= 2).cast("int64")
    )


def _buyer_age(buyers: ir.Table, users: ir.Table, age: str) -> ir.Table:
    """Mean age per item over its distinct buyers (each buyer once, however often they bought)."""
    ages = users.select(C.USER_IDX, _age=users[age].cast("float64"))
    joined = buyers.join(ages, C.USER_IDX)
    return joined.group_by(C.ITEM_IDX).aggregate(buyer_age_mean=joined["_age"].mean())


def build(src: OfflineTables, cutoff: datetime, options: FeatureOptions) -> GroupFrame:
    """Every catalog item; zeros (counts, shares) or nulls (prices, ages) when never sold."""
    del options  # no knobs here; the signature is shared by every group
    inter = src.interactions_before(cutoff)
    attrs = src.attributes("items", AttributeKind.CATEGORICAL, AttributeKind.NUMERIC)
    # An attribute named like a computed feature keeps its values under attr_<name>.
    renamed = {(f"attr_{a}" if a in FEATURES else a): a for a in attrs}
    base = src.items.select(C.ITEM_IDX, **{new: src.items[old] for new, old in renamed.items()})

    sales = _sales(inter, cutoff)
    t = base.left_join(sales, C.ITEM_IDX).drop(f"{C.ITEM_IDX}_right")
    last = _last_price(inter)
    t = t.left_join(last, C.ITEM_IDX).drop(f"{C.ITEM_IDX}_right")
    buyers = _buyers(inter)
    age = src.manifest.roles.user_age
    if age is not None and age in src.users.columns:
        ages = _buyer_age(buyers, src.users, age)
        t = t.left_join(ages, C.ITEM_IDX).drop(f"{C.ITEM_IDX}_right")
    else:
        t = t.mutate(buyer_age_mean=ibis.null("float64"))
    t = t.left_join(_repeat_buyers(buyers), C.ITEM_IDX).drop(f"{C.ITEM_IDX}_right")

    counts = [f"units_{d}d" for d in WINDOWS] + [f"buyers_{d}d" for d in WINDOWS]
    counts += ["units_prev_7d", "units_all", "buyers_all", "_repeat_buyers"]
    t = t.mutate(**{c: t[c].fill_null(0) for c in counts})
    price_mean = t["_amount"] / t["_priced_units"].nullif(0.0)
    price_recent = t["_amount_recent"] / t["_priced_units_recent"].nullif(0.0)
    # Typed literals: Spark would read 4.0 or 1.0 as DECIMAL and return decimals.
    four, one = (ibis.literal(v, type="float64") for v in (4.0, 1.0))
    t = t.mutate(
        trend_7d=(t["units_7d"] + 1).cast("float64") / (t["units_prev_7d"] + 1).cast("float64"),
        price_mean=price_mean,
        days_since_first_sale=days_before(t["_first"], cutoff),
        days_since_last_sale=days_before(t["_last"], cutoff),
        trend_28d=t["units_7d"].cast("float64") / (t["units_28d"].cast("float64") / four + one),
        repeat_buyer_share=(
            t["_repeat_buyers"].cast("float64") / t["buyers_all"].cast("float64").nullif(0.0)
        ).fill_null(0.0),
        price_recent=price_recent.coalesce(price_mean),
    )
    t = t.select(C.ITEM_IDX, *renamed, *FEATURES)
    features = {a: f"item attribute {old!r} as ingested" for a, old in renamed.items()}
    return GroupFrame(
        name=NAME,
        keys=KEYS,
        table=with_feature_time(t, KEYS, cutoff),
        features=features | FEATURES,
        description="one row per catalog item: attributes, popularity, trend, prices",
    )
