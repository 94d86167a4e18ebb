"""The `history` feature group: each user's latest purchases as arrays, most recent first."""

from __future__ import annotations

from datetime import datetime

import ibis

from shortlist import columns as C
from shortlist.features.base import FeatureOptions, GroupFrame, days_before, with_feature_time
from shortlist.features.engine import OfflineTables

NAME = "history"
KEYS = (C.USER_IDX,)

FEATURES: dict[str, str] = {
    "history_items": "item_idx of the user's latest purchases before the cutoff, most recent "
    "first (one entry per interaction row, whatever its quantity; same-time rows by item_idx)",
    "history_days": "days before the cutoff of each history_items entry",
    "history_length": "number of entries in history_items (at most options.history_length)",
}


def build(src: OfflineTables, cutoff: datetime, options: FeatureOptions) -> GroupFrame:
    """Users with at least one purchase before the cutoff; users without one are absent."""
    inter = src.interactions_before(cutoff)
    recency = ibis.window(
        group_by=inter[C.USER_IDX], order_by=[ibis.desc(inter[C.TIMESTAMP]), inter[C.ITEM_IDX]]
    )
    ranked = inter.select(
        C.USER_IDX,
        C.ITEM_IDX,
        _rank=ibis.row_number().over(recency),  # 0 = most recent
        _days=days_before(inter[C.TIMESTAMP], cutoff),
    )
    ranked = ranked.filter(ranked["_rank"] < options.history_length)
    # PySpark cannot order collect(); collecting (rank, ...) structs and sorting the array by
    # its first field gives the same order on both engines.
    entry = ibis.struct(
        {"rank": ranked["_rank"], "item": ranked[C.ITEM_IDX], "days": ranked["_days"]}
    )
    per_user = ranked.group_by(C.USER_IDX).aggregate(_entries=entry.collect())
    entries = per_user["_entries"].sort()
    t = per_user.select(
        C.USER_IDX,
        history_items=entries.map(lambda e: e["item"]),
        history_days=entries.map(lambda e: e["days"]),
        history_length=entries.length().cast("int32"),  # a real cast: Spark says int
    )
    return GroupFrame(
        name=NAME,
        keys=KEYS,
        table=with_feature_time(t, KEYS, cutoff),
        features=dict(FEATURES),
        description=f"each user's last {options.history_length} purchases, most recent first",
    )
