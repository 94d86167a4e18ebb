"""Point-in-time training sets: against a plain-Python join, and blind to the future."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import ibis
import pytest

from shortlist import columns as C
from shortlist.features.base import EVENT_TIME, FEATURE_TIME
from shortlist.features.materialize import materialize_snapshots
from shortlist.features.point_in_time import FeatureSource, store_source, training_set
from shortlist.features.store import FeatureStore
from tests.features.conftest import ingested, random_rows, random_source, requires_spark
from tests.features.reference import Data, close, ref_point_in_time

T0 = datetime(2020, 1, 6)
DAY = timedelta(days=1)


def _snapshots() -> list[dict]:
    """User snapshots at T0, T0+7d, T0+14d; user 2 has none at T0+7d, user 3 none at all."""
    rows = []
    for w in range(3):
        for user in (1, 2):
            if user == 2 and w == 1:
                continue
            ft = T0 + 7 * w * DAY
            rows.append({C.USER_IDX: user, FEATURE_TIME: ft, "units": 10 * w + user, "x": w / 3})
    return rows


def _category_snapshots() -> list[dict]:
    return [
        {C.USER_IDX: u, "attribute": a, FEATURE_TIME: T0 + 7 * w * DAY, "share": u + w / 10}
        for u in (1, 2)
        for a in ("colour", "size")
        for w in range(3)
        if (u, a) != (2, "size")
    ]


def _events() -> list[dict]:
    times = [
        T0 - DAY,  # before any snapshot
        T0,  # exactly at a snapshot: it may use it (it saw only data before T0)
        T0 + 7 * DAY - timedelta(seconds=1),  # a second before the next one
        T0 + 9 * DAY,
        T0 + 30 * DAY,  # long after the last
    ]
    events = []
    for user in (1, 2, 3):
        for t in times:
            events.append({C.USER_IDX: user, "attribute": "size", EVENT_TIME: t, "label": user})
    events.append(dict(events[3]))  # a duplicate event stays two rows
    events.append({C.USER_IDX: 1, "attribute": "colour", EVENT_TIME: T0 + 8 * DAY, "label": 0})
    return [{"eid": i, **e} for i, e in enumerate(events)]


def _check_against_reference(con) -> None:
    events, snaps, cats = _events(), _snapshots(), _category_snapshots()
    users = FeatureSource(ibis.memtable(snaps), (C.USER_IDX,), prefix="u_")
    per_cat = FeatureSource(ibis.memtable(cats), (C.USER_IDX, "attribute"), prefix="c_")
    got = con.to_pyarrow(training_set(events, [users, per_cat])).to_pylist()
    want = ref_point_in_time(events, snaps, [C.USER_IDX], ["units", "x"], "u_")
    want = ref_point_in_time(want, cats, [C.USER_IDX, "attribute"], ["share"], "c_")
    assert len(got) == len(events)
    got_by_id = {r["eid"]: r for r in got}
    assert len(got_by_id) == len(events)
    for w in want:
        g = got_by_id[w["eid"]]
        assert set(g) == set(w)
        for name, value in w.items():
            assert close(g[name], value), f"event {w['eid']} {name}: {g[name]} != {value}"
    # the reference is not vacuous: some events matched, some did not
    assert {w["u_units"] is None for w in want} == {True, False}


def test_training_set_matches_reference_on_duckdb(duck):
    _check_against_reference(duck)


@pytest.mark.pyspark
@requires_spark
def test_training_set_matches_reference_on_pyspark(spark):
    _check_against_reference(spark)


def test_needs_prefixes_and_keys(duck):
    snaps = ibis.memtable(_snapshots())
    events = _events()
    a = FeatureSource(snaps, (C.USER_IDX,))
    with pytest.raises(ValueError, match="prefixes"):
        training_set(events, [a, a])
    with pytest.raises(ValueError, match="key"):
        training_set(events, [FeatureSource(snaps, ("item_idx",))])
    with pytest.raises(ValueError, match="event_time"):
        training_set([{C.USER_IDX: 1, "when": T0}], [a])


# -- no leakage --------------------------------------------------------------------------------

T = datetime(2020, 2, 10)  # the big purchase, and one of the snapshot cutoffs
CUTOFFS = [T - 14 * DAY, T - 7 * DAY, T, T + 7 * DAY, T + 14 * DAY]


def _future_perturbed(rows: list[dict]) -> list[dict]:
    """Same past; from T on: a 50-unit purchase by u1 at T, shuffled items, other quantities."""
    rng = random.Random(11)
    out = []
    for r in rows:
        r = dict(r)
        if datetime.fromisoformat(str(r["timestamp"])) >= T:
            r["item_id"] = f"i{rng.randrange(14)}"
            r["quantity"] = rng.choice([1, 4, 9])
        out.append(r)
    out.append(
        {
            "user_id": "u1",
            "item_id": "i0",
            "timestamp": T.isoformat(),
            "price": "9.5",
            "channel": "web",
            "quantity": 50,
        }
    )
    return out


def _training_set(ws, duck, events: list[dict]):
    materialize_snapshots(ws, CUTOFFS, groups=["items", "users", "history"], con=duck)
    store = FeatureStore(ws)
    sources = [store_source(store, duck, g) for g in ("items", "users", "history")]
    t = training_set(events, sources)
    return duck.to_pyarrow(t.order_by("eid")).to_pylist()


def test_training_set_is_blind_to_the_future(tmp_path, duck):
    rows = random_rows()
    past = ingested(tmp_path / "a", random_source(tmp_path / "src_a", rows))
    future = ingested(tmp_path / "b", random_source(tmp_path / "src_b", _future_perturbed(rows)))
    da, db = Data(past), Data(future)
    user = {u[C.USER_ID]: u[C.USER_IDX] for u in da.users}
    item = {i[C.ITEM_ID]: i[C.ITEM_IDX] for i in da.items}
    assert user == {u[C.USER_ID]: u[C.USER_IDX] for u in db.users}
    assert item == {i[C.ITEM_ID]: i[C.ITEM_IDX] for i in db.items}
    # events right before the big purchase (at T itself), and later ones before the next cutoff
    events = [
        {"eid": n, C.USER_IDX: user[f"u{u}"], C.ITEM_IDX: item["i0"], EVENT_TIME: t, "label": 1}
        for n, (u, t) in enumerate(
            (u, t) for u in range(15) for t in (T, T + 3 * DAY, T + 7 * DAY - timedelta(seconds=1))
        )
    ]
    a = _training_set(past, duck, events)
    b = _training_set(future, duck, events)
    assert len(a) == len(events)
    for ra, rb in zip(a, b, strict=True):
        for name in ra:
            assert close(ra[name], rb[name]), f"event {ra['eid']} {name}: {ra[name]} != {rb[name]}"
        for name, value in ra.items():
            if name.endswith(FEATURE_TIME):
                assert value is not None and value <= ra[EVENT_TIME]
    # u1 at T sees none of the 50 units: its units equal a count of purchases before T
    u1_at_t = next(r for r in a if r[C.USER_IDX] == user["u1"] and r[EVENT_TIME] == T)
    before = sum(
        r[C.QUANTITY] for r in da.inter if r[C.USER_IDX] == user["u1"] and r[C.TIMESTAMP] < T
    )
    assert u1_at_t["users_units_all"] == before
    assert u1_at_t["users_feature_time"] == T
    # ...while the first snapshot after T does see the perturbed future, so the test can fail
    late = {
        ws: {r[C.USER_IDX]: r["units_all"] for r in FeatureStore(ws).read("users", 4).to_pylist()}
        for ws in (past, future)
    }
    assert late[future][user["u1"]] >= late[past][user["u1"]] + 50
