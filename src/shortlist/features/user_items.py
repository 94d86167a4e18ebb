"""The `user_items` feature group: how much and how lately each user bought each item (long)."""

from __future__ import annotations

from datetime import datetime

import ibis

from shortlist import columns as C
from shortlist.features.base import (
    FeatureOptions,
    GroupFrame,
    days_before,
    int_sum,
    with_feature_time,
)
from shortlist.features.engine import OfflineTables

NAME = "user_items"
KEYS = (C.USER_IDX, C.ITEM_IDX)
# decayed_purchases halves a purchase's weight every HALF_LIFE_DAYS: one bought 30 days before
# the cutoff counts 0.5, 60 days 0.25 (the ranker's recency-weighted repurchase signal).
HALF_LIFE_DAYS = 30.0

FEATURES: dict[str, str] = {
    "purchases": "units the user bought of the item before the cutoff (sum of quantity)",
    "days_since_last": "days from the user's latest purchase of the item to the cutoff",
    "decayed_purchases": "sum over the pair's purchases of quantity * 0.5 ** (days before the "
    f"cutoff / {HALF_LIFE_DAYS:g}): units with a {HALF_LIFE_DAYS:g}-day half-life",
}


def build(src: OfflineTables, cutoff: datetime, options: FeatureOptions) -> GroupFrame:
    """One row per (user, item) the user bought before the cutoff; other pairs are absent."""
    del options  # no knobs here; the signature is shared by every group
    inter = src.interactions_before(cutoff)
    qty = inter[C.QUANTITY].cast("float64")
    # Typed literals: Spark would read 0.5 or 30.0 as DECIMAL.
    half, life = (ibis.literal(v, type="float64") for v in (0.5, HALF_LIFE_DAYS))
    weight = half.pow(days_before(inter[C.TIMESTAMP], cutoff) / life)
    pairs = inter.group_by([C.USER_IDX, C.ITEM_IDX]).aggregate(
        purchases=int_sum(inter[C.QUANTITY]),
        _last=inter[C.TIMESTAMP].max(),
        decayed_purchases=(qty * weight).sum().cast("float64"),
    )
    t = pairs.select(
        C.USER_IDX,
        C.ITEM_IDX,
        purchases=pairs["purchases"],
        days_since_last=days_before(pairs["_last"], cutoff),
        decayed_purchases=pairs["decayed_purchases"],
    )
    return GroupFrame(
        name=NAME,
        keys=KEYS,
        table=with_feature_time(t, KEYS, cutoff),
        features=dict(FEATURES),
        description="user x item purchases and recency, long format; pairs bought before the "
        f"cutoff (decay half-life {HALF_LIFE_DAYS:g} days)",
    )
