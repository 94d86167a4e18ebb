"""Each feature group on DuckDB against the plain-Python reference and hand-checked values."""

from __future__ import annotations

from datetime import datetime

import ibis
import numpy as np
import pytest

from shortlist import columns as C
from shortlist.errors import ConfigError
from shortlist.features import groups
from shortlist.features.base import FEATURE_TIME, FeatureOptions
from shortlist.features.buckets import AGE_EDGES, age_bucket
from shortlist.features.engine import load_tables
from shortlist.features.users import age_bucket as age_bucket_expr
from tests.conftest import write
from tests.features.conftest import CUTOFF, RANDOM_CUTOFF, ingested, tiny_source
from tests.features.reference import REFERENCES, Data, assert_same, keyed

SECOND = 1 / 86_400  # a second in days


def compute(con, ws, name, cutoff, options=None):
    frame = groups.build(name, load_tables(ws, con), cutoff, options)
    return frame, con.to_pyarrow(frame.table)


def idx(ws, kind: str) -> dict[str, int]:
    d = Data(ws)
    rows, id_col, idx_col = (
        (d.items, C.ITEM_ID, C.ITEM_IDX) if kind == "items" else (d.users, C.USER_ID, C.USER_IDX)
    )
    return {r[id_col]: r[idx_col] for r in rows}


@pytest.mark.parametrize("name", list(groups.GROUPS))
@pytest.mark.parametrize("data", ["tiny", "random"])
def test_group_matches_reference(request, duck, name, data):
    ws = request.getfixturevalue(f"{data}_ws")
    cutoff = CUTOFF if data == "tiny" else RANDOM_CUTOFF
    frame, got = compute(duck, ws, name, cutoff)
    want = REFERENCES[name](Data(ws), cutoff)
    assert got.column_names[: len(frame.keys) + 1] == [*frame.keys, FEATURE_TIME]
    assert set(got.column(FEATURE_TIME).to_pylist()) <= {cutoff}
    rows = keyed(got.drop_columns([FEATURE_TIME]), frame.keys)
    # same columns as the reference defines, and every one of them has a definition
    assert set(next(iter(rows.values()))) == set(next(iter(want.values())))
    assert list(frame.features) == [
        c for c in got.column_names if c not in (*frame.keys, FEATURE_TIME)
    ]
    assert all(frame.features.values())
    assert_same(rows, want)


def test_items_window_edges_by_hand(tiny_ws, duck):
    _, got = compute(duck, tiny_ws, "items", CUTOFF)
    rows = keyed(got, [C.ITEM_IDX])
    ix = idx(tiny_ws, "items")
    a, b, c, d = (rows[(ix[k],)] for k in "ABCD")
    # A: the row exactly at the cutoff is out; 2020-02-29T00:00 (exactly 1 day before) is in 1d
    assert (a["units_1d"], a["buyers_1d"], a["units_7d"], a["buyers_7d"]) == (4, 3, 5, 4)
    assert a["price_mean"] == pytest.approx(42 / 4)  # u3's row has no price
    assert (a["price_min"], a["price_max"], a["price_last"]) == (8, 12, 10)
    assert a["days_since_last_sale"] == pytest.approx(SECOND)
    assert a["days_since_first_sale"] == pytest.approx(1 + SECOND)
    assert a["buyer_age_mean"] == pytest.approx((25 + 61 + 45) / 3)  # u2's age unknown
    # B: 02-23T00:00 is the 7d edge (in); 02-22T23:59:59 and 02-16T00:00 fall in the week before
    assert (b["units_1d"], b["units_7d"], b["buyers_7d"], b["units_prev_7d"]) == (4, 5, 2, 2)
    assert b["trend_7d"] == pytest.approx(6 / 3)
    assert b["price_last"] == pytest.approx((21 + 25 * 3) / 4)  # two sales at the same second
    # C: 02-02T00:00 is the 28d edge (in), a second earlier is out
    assert (c["units_28d"], c["buyers_28d"], c["units_all"], c["buyers_all"]) == (1, 1, 5, 2)
    assert c["days_since_first_sale"] == pytest.approx(273.5)
    # D never sold: zeros and nulls, but present, with its attributes
    assert (d["units_all"], d["units_7d"], d["trend_7d"]) == (0, 0, 1.0)
    assert d["price_mean"] is None and d["days_since_first_sale"] is None
    assert (d["colour"], d["weight"]) == ("green", 1.0)
    assert "title" not in got.column_names  # text attributes are left to the search index


def test_users_by_hand(tiny_ws, duck):
    _, got = compute(duck, tiny_ws, "users", CUTOFF)
    rows = keyed(got, [C.USER_IDX])
    ix = idx(tiny_ws, "users")
    u1, u2, u3, u4 = (rows[(ix[k],)] for k in ("u1", "u2", "u3", "u4"))
    assert (u1["units_7d"], u1["units_all"], u1["items_all"], u1["active_days"]) == (3, 6, 3, 3)
    assert u1["price_mean"] == pytest.approx((10 + 20 + 35 * 3 + 21) / 6)
    assert u1["channel_web_share"] == pytest.approx(5 / 6)
    assert u1["channel_store_share"] == pytest.approx(1 / 6)
    assert u1["days_since_first_purchase"] == pytest.approx(273.5)
    # 02-22T23:59:59 is just outside the 7 days; a null channel counts in no share
    assert (u2["units_7d"], u2["units_all"]) == (2, 3)
    assert u2["channel_store_share"] == pytest.approx(2 / 3) and u2["channel_web_share"] == 0
    assert [u1["age_bucket"], u2["age_bucket"], u3["age_bucket"], u4["age_bucket"]] == [2, -1, 6, 0]
    assert (u4["units_all"], u4["days_since_last_purchase"], u4["channel_web_share"]) == (
        0,
        None,
        None,
    )
    assert u4["region"] == "east"


def test_user_category_and_history_by_hand(tiny_ws, duck):
    _, cat = compute(duck, tiny_ws, "user_category", CUTOFF)
    rows = keyed(cat, [C.USER_IDX, "attribute", "value"])
    u1 = idx(tiny_ws, "users")["u1"]
    assert rows[(u1, "colour", "red")]["purchases"] == 4  # A once, C three times
    assert rows[(u1, "colour", "red")]["share"] == pytest.approx(4 / 6)
    assert rows[(u1, "colour", "blue")]["days_since_last"] == pytest.approx(SECOND)
    assert {k[1] for k in rows} == {"colour", "section"}  # weight is numeric, title text
    _, hist = compute(duck, tiny_ws, "history", CUTOFF)
    ix = idx(tiny_ws, "items")
    h = keyed(hist, [C.USER_IDX])[(u1,)]
    # A and B at the same second: by item_idx; the purchase at the cutoff itself is not there
    same_second = sorted([ix["A"], ix["B"]])
    assert h["history_items"] == [*same_second, ix["B"], ix["C"]]
    assert h["history_days"] == pytest.approx([SECOND, SECOND, 7, 273.5])
    u4 = idx(tiny_ws, "users")["u4"]
    assert (u4,) not in keyed(hist, [C.USER_IDX])  # never bought: absent


def test_options_limit_history_and_category_width(tiny_ws, duck):
    options = FeatureOptions(history_length=2, max_category_values=2)
    _, hist = compute(duck, tiny_ws, "history", CUTOFF, options)
    assert max(hist.column("history_length").to_pylist()) == 2
    want = Data(tiny_ws)
    from tests.features.reference import ref_history, ref_user_category

    assert_same(
        keyed(hist.drop_columns([FEATURE_TIME]), [C.USER_IDX]), ref_history(want, CUTOFF, 2)
    )
    frame, cat = compute(duck, tiny_ws, "user_category", CUTOFF, options)
    assert set(cat.column("attribute").to_pylist()) == {"section"}  # colour has 3 values
    assert "section" in frame.description
    got = keyed(cat.drop_columns([FEATURE_TIME]), [C.USER_IDX, "attribute", "value"])
    assert_same(got, ref_user_category(want, CUTOFF, max_values=2))
    chosen = FeatureOptions(category_attributes=("colour",))
    _, cat = compute(duck, tiny_ws, "user_category", CUTOFF, chosen)
    assert set(cat.column("attribute").to_pylist()) == {"colour"}
    with pytest.raises(ConfigError, match="weight"):
        compute(
            duck, tiny_ws, "user_category", CUTOFF, FeatureOptions(category_attributes=("weight",))
        )


def test_without_age_role(tmp_path, duck):
    src = tiny_source(tmp_path / "src")
    write(src, "users.csv", "user_id,years\nu1,25\nu2,30\nu3,40\nu5,50\n")
    ws = ingested(tmp_path / "ws", src)
    assert ws and Data(ws).manifest.roles.user_age is None
    _, items = compute(duck, ws, "items", CUTOFF)
    assert set(items.column("buyer_age_mean").to_pylist()) == {None}
    _, users = compute(duck, ws, "users", CUTOFF)
    assert set(users.column("age_bucket").to_pylist()) == {-1}
    # no age and no user_regions table: no segment, an empty table with the group's columns
    frame, segments = compute(duck, ws, "item_segments", CUTOFF)
    assert segments.num_rows == 0
    assert segments.column_names == [*frame.keys, FEATURE_TIME, *frame.features]


def test_age_bucket_expression_matches_numpy(duck):
    ages = [-1.0, 0.0, 19.99, 20.0, 24.5, 25.0, 30.0, 45.0, 59.9, 60.0, 199.0, 200.0, float("nan")]
    t = ibis.memtable({"age": [None if np.isnan(a) else a for a in ages]})
    got = duck.to_pyarrow(t.select(b=age_bucket_expr(t.age))).column("b").to_pylist()
    assert got == age_bucket(np.array(ages)).tolist()
    assert len(set(got)) == len(AGE_EDGES)  # every bucket and -1 reached


def test_unknown_group(tiny_ws, duck):
    with pytest.raises(ConfigError, match="unknown feature group"):
        groups.build("nope", load_tables(tiny_ws, duck), datetime(2020, 1, 1))
