"""Point-in-time correct training sets: each event gets the latest snapshot taken before it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ibis
import ibis.expr.types as ir
from ibis.backends import BaseBackend

from shortlist.features.base import EVENT_TIME, FEATURE_TIME
from shortlist.features.store import FeatureStore


@dataclass(frozen=True)
class FeatureSource:
    """A table of feature snapshots: key columns, feature_time, features.

    Output columns are `prefix + feature` and `prefix + "feature_time"` (the snapshot used), so
    two sources need different prefixes (e.g. "item_" and "user_").
    """

    table: ir.Table
    keys: tuple[str, ...]
    prefix: str = ""
    features: tuple[str, ...] | None = None  # None: every column but keys and feature_time

    def feature_columns(self) -> list[str]:
        if self.features is not None:
            return list(self.features)
        return [c for c in self.table.columns if c not in self.keys and c != FEATURE_TIME]


def store_source(
    store: FeatureStore,
    con: BaseBackend,
    group: str,
    prefix: str | None = None,
    features: Sequence[str] | None = None,
    versions: Sequence[int] | None = None,
) -> FeatureSource:
    """A group's snapshot series from the feature store; prefix defaults to "<group>_"."""
    keys = tuple(store.get(group).keys)
    return FeatureSource(
        table=store.table(con, group, versions),
        keys=keys,
        prefix=f"{group}_" if prefix is None else prefix,
        features=tuple(features) if features is not None else None,
    )


def _check(events: ir.Table, sources: Sequence[FeatureSource], event_time: str) -> None:
    if event_time not in events.columns:
        raise ValueError(f"events have no {event_time!r} column")
    seen = set(events.columns)
    for s in sources:
        missing = [k for k in s.keys if k not in events.columns]
        if missing:
            raise ValueError(f"events lack key column(s) {missing} of a feature source")
        absent = [c for c in (*s.keys, FEATURE_TIME, *s.feature_columns()) if c not in s.table]
        if absent:
            raise ValueError(f"feature source lacks column(s) {absent}")
        out = [s.prefix + c for c in (*s.feature_columns(), FEATURE_TIME)]
        clash = sorted(seen.intersection(out))
        if clash:
            raise ValueError(f"output column(s) {clash} would repeat: give sources prefixes")
        seen.update(out)


def _latest(requests: ir.Table, source: FeatureSource, event_time: str) -> ir.Table:
    """Per distinct (keys, event_time): the source's row with the greatest feature_time <= it.

    A join on the keys with a `<=` condition, then row_number() over each request: unlike
    asof_join this runs on every Ibis backend, PySpark included.
    """
    t = source.table
    feats = t.select(
        *[t[k].name(f"_fk{i}") for i, k in enumerate(source.keys)],
        t[FEATURE_TIME].name("_ft"),
        *[t[c].name(source.prefix + c) for c in source.feature_columns()],
    )
    preds = [requests[k] == feats[f"_fk{i}"] for i, k in enumerate(source.keys)]
    preds.append(feats["_ft"] <= requests[event_time])
    joined = requests.join(feats, preds)
    newest_first = ibis.window(
        group_by=[joined[k] for k in source.keys] + [joined[event_time]],
        order_by=ibis.desc(joined["_ft"]),
    )
    ranked = joined.mutate(_rn=ibis.row_number().over(newest_first))
    best = ranked.filter(ranked["_rn"] == 0)
    return best.select(
        *[best[k].name(f"_lk{i}") for i, k in enumerate(source.keys)],
        best[event_time].name("_let"),
        *[best[source.prefix + c] for c in source.feature_columns()],
        best["_ft"].name(source.prefix + FEATURE_TIME),
    )


def training_set(
    events: ir.Table | Any,
    sources: Sequence[FeatureSource],
    *,
    event_time: str = EVENT_TIME,
) -> ir.Table:
    """Events (any columns: keys, event_time, labels) with each source's features as of then.

    A snapshot with feature_time c was computed from data strictly before c, so taking those
    with c <= event_time never lets an event see itself or anything later. Events without such
    a snapshot get nulls; events are neither dropped nor repeated. Lazy: the caller executes it
    on the backend of the source tables. `events` may be an Ibis table or anything
    ibis.memtable accepts (pandas, pyarrow).
    """
    if not isinstance(events, ir.Table):
        events = ibis.memtable(events)
    _check(events, sources, event_time)
    out = events
    for source in sources:
        requests = events.select(*source.keys, event_time).distinct()
        latest = _latest(requests, source, event_time)
        preds = [out[k] == latest[f"_lk{i}"] for i, k in enumerate(source.keys)]
        preds.append(out[event_time] == latest["_let"])
        out = out.left_join(latest, preds)
        out = out.drop(*[f"_lk{i}" for i in range(len(source.keys))], "_let")
    return out
