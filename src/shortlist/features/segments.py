"""The `item_segments` feature group: each item's recent units within each customer segment.

A customer who has not bought yet is known only by attributes: their age and where they live.
Best sellers within their age bucket (`popular_by_age`) use one of those; the ranker combines
both through these counts (`RankingFeatures`: the item's lift in each of the user's segments,
`lifts` below). Segments:

- `age`: the age bucket of `roles.user_age` (features.buckets.AGE_EDGES), when the data has it;
- `region`: the region of the `user_regions` business-rule table, when the source has one.

A purchase by a customer of unknown age or region counts in no segment of that kind.
"""

from __future__ import annotations

from datetime import datetime

import ibis
import ibis.expr.types as ir
import numpy as np

from shortlist import columns as C
from shortlist.data.arrays import Dataset
from shortlist.features.base import (
    FeatureOptions,
    GroupFrame,
    int_sum,
    window_start,
    with_feature_time,
)
from shortlist.features.buckets import age_bucket as age_buckets
from shortlist.features.engine import OfflineTables
from shortlist.features.users import age_bucket

# Pseudo-units added to what a segment bought of an item and to what it was expected to buy:
# an item a segment bought once, where everyone's shares expected a tenth of a unit, gets a
# lift of (1 + 5) / (0.1 + 5) = 1.18, not 10.
PRIOR_UNITS = 5.0

NAME = "item_segments"
KEYS = (C.ITEM_IDX, "segment", "value")  # by item: an item's records in the online store
WINDOW = 7  # days before the cutoff
SEGMENTS = ("age", "region")

FEATURES: dict[str, str] = {
    f"units_{WINDOW}d": f"units of the item bought in the {WINDOW} days before the cutoff by "
    "customers of the segment (`segment` 'age': value the age bucket; 'region': the region "
    "code of the user_regions table); items a segment did not buy have no row",
}


def _segment_of(src: OfflineTables, segment: str) -> ir.Table | None:
    """(user_idx, value) of the users whose `segment` is known; None without the data."""
    if segment == "age":
        age = src.manifest.roles.user_age
        if age is None or age not in src.users.columns:
            return None
        users = src.users.select(C.USER_IDX, value=age_bucket(src.users[age].cast("float64")))
        return users.filter(users["value"] >= 0)
    regions = src.user_regions
    if regions is None:
        return None
    return regions.select(C.USER_IDX, value=regions[C.REGION].cast("int32"))


def user_segments(dataset: Dataset) -> dict[str, np.ndarray]:
    """Each user's value (int32, -1 unknown) of each segment kind the data has, as `build`
    defines them (`_segment_of`, in Ibis): the age bucket, the user_regions table's region."""
    out: dict[str, np.ndarray] = {}
    if dataset.user_age is not None:
        out["age"] = age_buckets(dataset.user_age).astype(np.int32)
    rules = dataset.rules
    if rules is not None and rules.user_region is not None:
        out["region"] = np.asarray(rules.user_region, np.int32)
    return out


def build(src: OfflineTables, cutoff: datetime, options: FeatureOptions) -> GroupFrame:
    """One row per (item, segment, value) with a purchase in the window."""
    del options  # no knobs here; the signature is shared by every group
    inter = src.interactions_before(cutoff)
    recent = inter.filter(inter[C.TIMESTAMP] >= window_start(cutoff, WINDOW))
    parts = []
    for segment in SEGMENTS:
        users = _segment_of(src, segment)
        if users is None:
            continue
        joined = recent.join(users, C.USER_IDX)
        counts = joined.group_by(["value", C.ITEM_IDX]).aggregate(
            **{f"units_{WINDOW}d": int_sum(joined[C.QUANTITY])}
        )
        parts.append(counts.mutate(segment=ibis.literal(segment, type="string")))
    if parts:
        t = ibis.union(*parts) if len(parts) > 1 else parts[0]
    else:  # no segment known: an empty table of the same columns
        t = recent.select(
            segment=ibis.literal("", type="string"),
            value=ibis.literal(0, type="int32"),
            **{
                C.ITEM_IDX: recent[C.ITEM_IDX],
                f"units_{WINDOW}d": recent[C.QUANTITY].cast("int64"),
            },
        ).limit(0)
    t = t.select(C.ITEM_IDX, "segment", t["value"].cast("int32").name("value"), *FEATURES)
    return GroupFrame(
        name=NAME,
        keys=KEYS,
        table=with_feature_time(t, KEYS, cutoff),
        features=dict(FEATURES),
        description="one row per (item, segment, value) bought recently: units by segment",
    )


def lifts(counts: np.ndarray, prior_units: float = PRIOR_UNITS) -> tuple[np.ndarray, np.ndarray]:
    """From the units of each item bought by each value of a segment kind, `(values, items)`:
    the lift of each (value, item) and each item's share p(i) of all the units.

    The lift is what the value's customers bought of the item over what they would have had
    they bought like everyone, each with A = `prior_units` pseudo-units: (units of i by v + A)
    / (units by v x p(i) + A). Above 1 where the value's customers buy the item more than
    everyone does, towards 1 where the counts are few; 1 for items nobody bought.
    """
    total = float(counts.sum())
    p = counts.sum(axis=0) / max(total, 1.0)
    expected = counts.sum(axis=1, keepdims=True) * p
    return (counts + prior_units) / (expected + prior_units), p
