"""Slow plain-Python versions of the feature groups and the point-in-time join, for checking.

Loops over rows fetched from the offline store; written from the definitions, not the Ibis code.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa

from shortlist import columns as C
from shortlist.data.offline import OfflineStore
from shortlist.features.buckets import AGE_EDGES
from shortlist.workspace import Workspace

Row = dict[str, Any]


def _rows(relation) -> list[Row]:  # type: ignore[no-untyped-def]
    names = relation.columns
    return [dict(zip(names, r, strict=True)) for r in relation.fetchall()]


class Data:
    def __init__(self, ws: Workspace):
        store = OfflineStore(ws)
        self.manifest = store.manifest
        self.items = _rows(store.items())
        self.users = _rows(store.users())
        self.inter = _rows(store.interactions())
        regions = store.rule_table("user_regions")
        self.user_regions = _rows(regions) if regions is not None else []


def _days(ts: datetime, cutoff: datetime) -> float:
    return (cutoff - ts).total_seconds() / 86400


def _wmean(pairs: list[tuple[float, int]]) -> float | None:
    units = sum(q for _, q in pairs)
    return sum(p * q for p, q in pairs) / units if units else None


def ref_items(d: Data, cutoff: datetime) -> dict[tuple, Row]:
    age_col = d.manifest.roles.user_age
    age = {u[C.USER_IDX]: (u[age_col] if age_col else None) for u in d.users}
    attrs = [a for a, k in d.manifest.items.attributes.items() if k != "text"]
    out = {}
    for item in d.items:
        rows = [r for r in d.inter if r[C.ITEM_IDX] == item[C.ITEM_IDX] and r[C.TIMESTAMP] < cutoff]
        f: Row = {a: item[a] for a in attrs}

        def within(lo: int, hi: int = 0, rows=rows) -> list[Row]:
            start, end = cutoff - timedelta(days=lo), cutoff - timedelta(days=hi)
            return [r for r in rows if start <= r[C.TIMESTAMP] < end]

        for n in (1, 7, 28):
            f[f"units_{n}d"] = sum(r[C.QUANTITY] for r in within(n))
            f[f"buyers_{n}d"] = len({r[C.USER_IDX] for r in within(n)})
        f["units_prev_7d"] = sum(r[C.QUANTITY] for r in within(14, 7))
        f["trend_7d"] = (f["units_7d"] + 1) / (f["units_prev_7d"] + 1)
        f["units_all"] = sum(r[C.QUANTITY] for r in rows)
        f["buyers_all"] = len({r[C.USER_IDX] for r in rows})
        priced = [(r[C.PRICE], r[C.QUANTITY]) for r in rows if r[C.PRICE] is not None]
        f["price_mean"] = _wmean(priced)
        f["price_min"] = min((p for p, _ in priced), default=None)
        f["price_max"] = max((p for p, _ in priced), default=None)
        priced_rows = [r for r in rows if r[C.PRICE] is not None]
        last = max((r[C.TIMESTAMP] for r in priced_rows), default=None)
        f["price_last"] = _wmean(
            [(r[C.PRICE], r[C.QUANTITY]) for r in priced_rows if r[C.TIMESTAMP] == last]
        )
        times = [r[C.TIMESTAMP] for r in rows]
        f["days_since_first_sale"] = _days(min(times), cutoff) if times else None
        f["days_since_last_sale"] = _days(max(times), cutoff) if times else None
        ages = [age[u] for u in {r[C.USER_IDX] for r in rows} if age.get(u) is not None]
        f["buyer_age_mean"] = sum(ages) / len(ages) if ages else None
        f["trend_28d"] = f["units_7d"] / (f["units_28d"] / 4 + 1)
        rows_per_buyer: dict[int, int] = defaultdict(int)
        for r in rows:
            rows_per_buyer[r[C.USER_IDX]] += 1
        repeat = sum(1 for n in rows_per_buyer.values() if n >= 2)
        f["repeat_buyer_share"] = repeat / len(rows_per_buyer) if rows_per_buyer else 0.0
        recent = [(r[C.PRICE], r[C.QUANTITY]) for r in within(28) if r[C.PRICE] is not None]
        f["price_recent"] = _wmean(recent) if recent else f["price_mean"]
        out[(item[C.ITEM_IDX],)] = f
    return out


def _bucket(age: float | None) -> int:
    if age is None or math.isnan(age):
        return -1
    for i, (lo, hi) in enumerate(zip(AGE_EDGES[:-1], AGE_EDGES[1:], strict=True)):
        if lo <= age < hi:
            return i
    return -1


def _channel_column(value: str) -> str:
    return "channel_" + re.sub(r"[^0-9a-z]+", "_", value.lower()).strip("_") + "_share"


def ref_users(d: Data, cutoff: datetime) -> dict[tuple, Row]:
    age_col = d.manifest.roles.user_age
    attrs = [a for a, k in d.manifest.users.attributes.items() if k != "text"]
    channels = sorted({r[C.CHANNEL] for r in d.inter if r[C.CHANNEL] is not None})
    out = {}
    for user in d.users:
        rows = [r for r in d.inter if r[C.USER_IDX] == user[C.USER_IDX] and r[C.TIMESTAMP] < cutoff]
        f: Row = {a: user[a] for a in attrs}
        f["age_bucket"] = _bucket(user[age_col]) if age_col else -1
        for n in (7, 28):
            start = cutoff - timedelta(days=n)
            f[f"units_{n}d"] = sum(r[C.QUANTITY] for r in rows if r[C.TIMESTAMP] >= start)
        units = sum(r[C.QUANTITY] for r in rows)
        f["units_all"] = units
        f["items_all"] = len({r[C.ITEM_IDX] for r in rows})
        f["active_days"] = len({r[C.TIMESTAMP].date() for r in rows})
        times = [r[C.TIMESTAMP] for r in rows]
        f["days_since_last_purchase"] = _days(max(times), cutoff) if times else None
        f["days_since_first_purchase"] = _days(min(times), cutoff) if times else None
        f["price_mean"] = _wmean(
            [(r[C.PRICE], r[C.QUANTITY]) for r in rows if r[C.PRICE] is not None]
        )
        for ch in channels:
            via = sum(r[C.QUANTITY] for r in rows if r[C.CHANNEL] == ch)
            f[_channel_column(ch)] = via / units if units else None
        out[(user[C.USER_IDX],)] = f
    return out


def ref_user_category(d: Data, cutoff: datetime, max_values: int = 200) -> dict[tuple, Row]:
    attrs = [
        a
        for a, k in d.manifest.items.attributes.items()
        if k == "categorical"
        and (
            len({i[a] for i in d.items if i[a] is not None}) <= max_values
            or a == d.manifest.roles.item_group
        )
    ]
    item = {i[C.ITEM_IDX]: i for i in d.items}
    total: dict[int, int] = defaultdict(int)
    acc: dict[tuple, Row] = {}
    recent_start = cutoff - timedelta(days=28)
    for r in d.inter:
        if r[C.TIMESTAMP] >= cutoff:
            continue
        total[r[C.USER_IDX]] += r[C.QUANTITY]
        for a in attrs:
            value = item[r[C.ITEM_IDX]][a]
            if value is None:
                continue
            f = acc.setdefault(
                (r[C.USER_IDX], a, str(value)), {"purchases": 0, "_recent": 0, "_last": None}
            )
            f["purchases"] += r[C.QUANTITY]
            if r[C.TIMESTAMP] >= recent_start:
                f["_recent"] += r[C.QUANTITY]
            if f["_last"] is None or r[C.TIMESTAMP] > f["_last"]:
                f["_last"] = r[C.TIMESTAMP]
    return {
        key: {
            "purchases": f["purchases"],
            "share": f["purchases"] / total[key[0]],
            "days_since_last": _days(f["_last"], cutoff),
            "purchases_28d": f["_recent"],
        }
        for key, f in acc.items()
    }


def ref_user_items(d: Data, cutoff: datetime, half_life: float = 30.0) -> dict[tuple, Row]:
    acc: dict[tuple, Row] = {}
    for r in d.inter:
        if r[C.TIMESTAMP] >= cutoff:
            continue
        pair = (r[C.USER_IDX], r[C.ITEM_IDX])
        f = acc.setdefault(pair, {"purchases": 0, "decayed_purchases": 0.0, "_last": None})
        f["purchases"] += r[C.QUANTITY]
        f["decayed_purchases"] += r[C.QUANTITY] * 0.5 ** (_days(r[C.TIMESTAMP], cutoff) / half_life)
        if f["_last"] is None or r[C.TIMESTAMP] > f["_last"]:
            f["_last"] = r[C.TIMESTAMP]
    return {
        key: {
            "purchases": f["purchases"],
            "days_since_last": _days(f["_last"], cutoff),
            "decayed_purchases": f["decayed_purchases"],
        }
        for key, f in acc.items()
    }


def ref_history(d: Data, cutoff: datetime, length: int = 50) -> dict[tuple, Row]:
    per_user: dict[int, list[Row]] = defaultdict(list)
    for r in d.inter:
        if r[C.TIMESTAMP] < cutoff:
            per_user[r[C.USER_IDX]].append(r)
    out = {}
    for user, rows in per_user.items():
        # most recent first; same time: smaller item_idx first
        rows = sorted(rows, key=lambda r: (-r[C.TIMESTAMP].timestamp(), r[C.ITEM_IDX]))[:length]
        out[(user,)] = {
            "history_items": [r[C.ITEM_IDX] for r in rows],
            "history_days": [_days(r[C.TIMESTAMP], cutoff) for r in rows],
            "history_length": len(rows),
        }
    return out


def ref_item_segments(d: Data, cutoff: datetime, days: int = 7) -> dict[tuple, Row]:
    """Units per (item, segment, value) in the window: age buckets, user_regions' regions."""
    age_col = d.manifest.roles.user_age
    value_of: dict[str, dict[int, int]] = {"age": {}, "region": {}}
    for u in d.users:
        bucket = _bucket(u[age_col]) if age_col else -1
        if bucket >= 0:
            value_of["age"][u[C.USER_IDX]] = bucket
    for r in d.user_regions:
        value_of["region"][r[C.USER_IDX]] = r[C.REGION]
    start = cutoff - timedelta(days=days)
    out: dict[tuple, Row] = defaultdict(lambda: {f"units_{days}d": 0})
    for r in d.inter:
        if not start <= r[C.TIMESTAMP] < cutoff:
            continue
        for segment, values in value_of.items():
            if r[C.USER_IDX] in values:
                key = (r[C.ITEM_IDX], segment, values[r[C.USER_IDX]])
                out[key][f"units_{days}d"] += r[C.QUANTITY]
    return dict(out)


REFERENCES = {
    "item_segments": ref_item_segments,
    "items": ref_items,
    "users": ref_users,
    "user_category": ref_user_category,
    "user_items": ref_user_items,
    "history": ref_history,
}


def ref_point_in_time(
    events: list[Row], snapshots: list[Row], keys: list[str], features: list[str], prefix: str
) -> list[Row]:
    """Each event with the snapshot row of the same keys and greatest feature_time <= its time."""
    out = []
    for e in events:
        best = None
        for s in snapshots:
            if all(s[k] == e[k] for k in keys) and s["feature_time"] <= e["event_time"]:
                if best is None or s["feature_time"] > best["feature_time"]:
                    best = s
        row = dict(e)
        for f in features:
            row[prefix + f] = None if best is None else best[f]
        row[prefix + "feature_time"] = None if best is None else best["feature_time"]
        out.append(row)
    return out


# -- comparing results ---------------------------------------------------------------------------


def close(a: Any, b: Any, tol: float = 1e-9) -> bool:
    """Equality with float tolerance; lists elementwise; None (and NaN) only equals None."""
    a = None if isinstance(a, float) and math.isnan(a) else a
    b = None if isinstance(b, float) and math.isnan(b) else b
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, list | tuple) or isinstance(b, list | tuple):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=tol)
    return a == b


def keyed(table: pa.Table, keys: list[str] | tuple[str, ...]) -> dict[tuple, Row]:
    """Rows by key (asserting keys are unique), without the key columns."""
    out: dict[tuple, Row] = {}
    for row in table.to_pylist():
        key = tuple(row.pop(k) for k in keys)
        assert key not in out, f"duplicate key {key}"
        out[key] = row
    return out


def assert_same(got: dict[tuple, Row], want: dict[tuple, Row], skip: tuple[str, ...] = ()) -> None:
    assert set(got) == set(want), f"keys differ: {set(got) ^ set(want)}"
    for key, row in want.items():
        for name, value in row.items():
            if name in skip:
                continue
            assert close(got[key][name], value), (
                f"{key} {name}: got {got[key][name]!r}, want {value!r}"
            )
