"""What the ranker reads from the feature groups: the columns added for it, by hand and against the
reference, and groups computed from in-memory frames (from_frames + compute_groups)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from shortlist import columns as C
from shortlist.data.schema import Manifest
from shortlist.errors import ConfigError
from shortlist.features import groups
from shortlist.features.base import FEATURE_TIME
from shortlist.features.engine import OfflineTables
from shortlist.features.materialize import compute_groups, materialize
from shortlist.features.store import FeatureStore
from shortlist.features.user_items import HALF_LIFE_DAYS
from shortlist.workspace import Workspace, open_workspace
from tests.features.conftest import CUTOFF, RANDOM_CUTOFF, frames, in_memory
from tests.features.reference import REFERENCES, assert_same, keyed

Row = dict[str, Any]


def index(ws: Workspace) -> tuple[dict[str, int], dict[str, int]]:
    _, items, users, _ = frames(ws)
    return (
        dict(zip(items[C.ITEM_ID], items[C.ITEM_IDX].astype(int), strict=True)),
        dict(zip(users[C.USER_ID], users[C.USER_IDX].astype(int), strict=True)),
    )


@pytest.mark.parametrize("data", ["tiny", "random"])
def test_from_frames_gives_what_the_store_path_writes(request, tmp_path, duck, data):
    source = request.getfixturevalue(f"{data}_ws")
    cutoff = CUTOFF if data == "tiny" else RANDOM_CUTOFF
    ws = open_workspace(tmp_path / "ws")
    shutil.copytree(source.offline, ws.offline)
    written = materialize(ws, cutoff, con=duck)
    got = compute_groups(in_memory(duck, ws), cutoff)
    assert list(got) == list(groups.GROUPS)
    store = FeatureStore(ws)
    for version in written.written:
        name = version.path.split("/")[0]
        want = store.read(name)
        # same columns and types as the files, same values
        assert [(f.name, f.type) for f in got[name].schema] == [
            (f.name, f.type) for f in want.schema
        ]
        assert got[name].num_rows == want.num_rows
        assert_same(keyed(got[name], version.keys), keyed(want, version.keys))


def test_compute_groups_subset_and_string_cutoff(tiny_ws, duck):
    tables = in_memory(duck, tiny_ws)
    got = compute_groups(tables, "2020-03-01T01:00:00+01:00", ["history", "items"])
    assert list(got) == ["items", "history"]  # materialization order
    assert set(got["items"].column(FEATURE_TIME).to_pylist()) == {CUTOFF}
    with pytest.raises(ConfigError, match="unknown feature group"):
        compute_groups(tables, CUTOFF, ["nope"])


def test_from_frames_checks_columns(tiny_ws, duck):
    manifest, items, users, inter = frames(tiny_ws)
    with pytest.raises(ConfigError, match="quantity"):
        OfflineTables.from_frames(duck, manifest, items, users, inter.drop_columns([C.QUANTITY]))


def test_new_item_columns_by_hand(tiny_ws, duck):
    rows = keyed(compute_groups(in_memory(duck, tiny_ws), CUTOFF, ["items"])["items"], [C.ITEM_IDX])
    ix, _ = index(tiny_ws)
    a, b, c, d = (rows[(ix[k],)] for k in "ABCD")
    # rows per buyer, not units: A's u1 bought once before the cutoff (the second row is at it);
    # B: u1 and u3 twice, u2 once; C: u5 twice, u1 one row of 3 units
    assert [x["repeat_buyer_share"] for x in (a, b, c, d)] == pytest.approx([0, 2 / 3, 1 / 2, 0])
    assert a["trend_28d"] == pytest.approx(5 / (5 / 4 + 1))
    assert c["trend_28d"] == 0.0 and d["trend_28d"] == 0.0
    assert a["price_recent"] == pytest.approx(42 / 4)  # every sale of A is recent
    assert c["price_recent"] == 30  # 02-02T00:00 is in the 28 days, 31 a second earlier is not
    assert c["price_mean"] == pytest.approx(166 / 5)
    assert d["price_recent"] is None  # never sold


def test_user_category_purchases_28d_by_hand(tiny_ws, duck):
    got = compute_groups(in_memory(duck, tiny_ws), CUTOFF, ["user_category"])["user_category"]
    rows = keyed(got, [C.USER_IDX, "attribute", "value"])
    _, ux = index(tiny_ws)
    # u1's red: A one second before the cutoff (in), C in 2019 (out)
    assert rows[(ux["u1"], "colour", "red")]["purchases"] == 4
    assert rows[(ux["u1"], "colour", "red")]["purchases_28d"] == 1
    # u5's red: A (1 unit) and C at 02-02T00:00 (the edge, in); C a second earlier is out
    assert rows[(ux["u5"], "colour", "red")]["purchases_28d"] == 2
    assert got.schema.field("purchases_28d").type == pa.int64()


# -- hand-made interactions through from_frames -----------------------------------------------


@dataclass
class Frames:
    """What the reference functions read (the fields of tests.features.reference.Data)."""

    manifest: Manifest
    items: list[Row]
    users: list[Row]
    inter: list[Row]
    user_regions: list[Row] = field(default_factory=list)  # tiny has no regions table


def edge_rows(ix: dict[str, int], ux: dict[str, int]) -> list[Row]:
    day = timedelta(days=1)

    def row(user: str, item: str, when: datetime, qty: int, price: float | None) -> Row:
        return {
            C.USER_IDX: ux[user],
            C.ITEM_IDX: ix[item],
            C.TIMESTAMP: when,
            C.QUANTITY: qty,
            C.PRICE: price,
        }

    return [
        row("u1", "A", CUTOFF - 30 * day, 1, 10.0),  # exactly one half-life before: weight 0.5
        row("u1", "A", CUTOFF, 5, 99.0),  # at the cutoff: not seen
        row("u2", "A", CUTOFF - 2 * day, 1, None),  # u2 buys A twice (rows), no price
        row("u2", "A", CUTOFF - day, 1, None),
        row("u3", "B", CUTOFF - 40 * day, 3, 20.0),  # one row of 3 units: not a repeat buyer
        row("u3", "C", CUTOFF - 100 * day, 1, 100.0),
        row("u4", "C", CUTOFF - 3 * day, 2, 5.0),
        row("u5", "C", CUTOFF - 28 * day, 1, 8.0),  # the 28-day edge: in
    ]


def test_edge_cases_from_hand_made_frames(tiny_ws, duck):
    ix, ux = index(tiny_ws)
    inter = edge_rows(ix, ux)
    # pandas, zone-aware times (converted to naive UTC) and no channel column at all
    frame = pd.DataFrame(inter)
    frame[C.TIMESTAMP] = pd.to_datetime(frame[C.TIMESTAMP]).dt.tz_localize("UTC")
    frame[C.TIMESTAMP] = frame[C.TIMESTAMP].dt.tz_convert("Europe/Paris")
    got = compute_groups(in_memory(duck, tiny_ws, frame), CUTOFF)

    items = keyed(got["items"], [C.ITEM_IDX])
    a, b, c, d = (items[(ix[k],)] for k in "ABCD")
    assert a["repeat_buyer_share"] == 0.5  # u2 twice; u1's second row is at the cutoff
    assert a["units_all"] == 3
    assert a["price_recent"] == 10  # no priced sale of A in 28 days: price_mean
    assert (b["repeat_buyer_share"], b["price_recent"]) == (0.0, 20.0)
    assert c["price_recent"] == pytest.approx((2 * 5 + 8) / 3)
    assert c["price_mean"] == pytest.approx((2 * 5 + 8 + 100) / 4)
    assert (d["repeat_buyer_share"], d["price_recent"], d["units_all"]) == (0.0, None, 0)

    pairs = keyed(got["user_items"], [C.USER_IDX, C.ITEM_IDX])
    u1a = pairs[(ux["u1"], ix["A"])]
    assert (u1a["purchases"], u1a["days_since_last"]) == (1, 30.0)
    assert u1a["decayed_purchases"] == 0.5 and HALF_LIFE_DAYS == 30
    u2a = pairs[(ux["u2"], ix["A"])]
    assert u2a["purchases"] == 2 and u2a["days_since_last"] == 1.0
    assert u2a["decayed_purchases"] == pytest.approx(0.5 ** (1 / 30) + 0.5 ** (2 / 30))
    assert pairs[(ux["u3"], ix["B"])]["decayed_purchases"] == pytest.approx(3 * 0.5 ** (4 / 3))
    assert (ux["u1"], ix["B"]) not in pairs and len(pairs) == 6
    assert got["user_items"].schema.field("purchases").type == pa.int64()
    assert got["user_items"].schema.field("decayed_purchases").type == pa.float64()

    users = keyed(got["users"], [C.USER_IDX])
    assert users[(ux["u1"],)]["units_all"] == 1  # the row at the cutoff is not seen
    assert not [c for c in got["users"].column_names if c.startswith("channel_")]

    # every group against the plain-Python reference on the same rows
    manifest, item_frame, user_frame, _ = frames(tiny_ws)
    ref = Frames(
        manifest,
        item_frame.astype(object).where(item_frame.notna(), None).to_dict("records"),
        user_frame.astype(object).where(user_frame.notna(), None).to_dict("records"),
        [{**r, C.CHANNEL: None} for r in inter],
    )
    for name, table in got.items():
        keys = groups.KEYS[name]
        assert_same(keyed(table.drop_columns([FEATURE_TIME]), keys), REFERENCES[name](ref, CUTOFF))


def test_many_cutoffs_on_one_tables_equal_a_fresh_compilation_each(tiny_ws, duck):
    """On DuckDB a group is compiled once and later cutoffs rewrite its literals (after the
    rewrite reproduced Ibis' own SQL once): the tables at every cutoff equal those computed by
    a fresh compilation, on fresh tables, at that cutoff."""
    from shortlist.features.engine import connect

    tables = in_memory(duck, tiny_ws)
    cutoffs = [CUTOFF - timedelta(days=d) for d in (0, 3, 10, 45)]
    got = [compute_groups(tables, c) for c in cutoffs]
    templates = {k[1]: v for k, v in tables.memo.items() if k[0] == "sql"}
    assert set(templates) == set(groups.GROUPS) and all(t.trusted for t in templates.values())
    for cutoff, tables_at in zip(cutoffs, got, strict=True):
        fresh = compute_groups(in_memory(connect("duckdb"), tiny_ws), cutoff)  # compiled there
        for name, table in tables_at.items():
            keys = list(groups.KEYS[name])
            assert table.schema == fresh[name].schema
            assert_same(keyed(table, keys), keyed(fresh[name], keys))
            assert set(table.column(FEATURE_TIME).to_pylist()) <= {cutoff}
