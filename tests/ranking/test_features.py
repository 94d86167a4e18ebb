"""Ranking features on a hand-made history, where every value can be worked out by hand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from shortlist.config import AttributeKind, SchemaSettings
from shortlist.data.arrays import US_PER_DAY, Dataset, Interactions
from shortlist.data.candidates import CandidateSet
from shortlist.data.rules import Rules
from shortlist.features.engine import OfflineTables, connect, memory_manifest
from shortlist.ranking.features import KeyTable, RankingFeatures, choose_attributes, group_features

CUTOFF = 100 * US_PER_DAY
CAT = AttributeKind.CATEGORICAL


def dataset() -> Dataset:
    """4 users, 5 items; items 0-2 are 'top', 3-4 'shoe' (colour duplicates kind's split)."""
    rows = [  # user, item, day, quantity, price
        (0, 0, 10, 1, 10.0),
        (0, 0, 95, 2, 12.0),
        (0, 3, 96, 1, 30.0),
        (1, 1, 97, 1, 20.0),
        (2, 1, 98, 1, 20.0),
        (3, 4, 99, 1, 40.0),
    ]
    arr = np.array(rows, dtype=np.float64)
    inter = Interactions(
        arr[:, 0].astype(np.int32),
        arr[:, 1].astype(np.int32),
        (arr[:, 2] * US_PER_DAY).astype(np.int64),
        arr[:, 3].astype(np.int32),
        arr[:, 4].astype(np.float32),
    )
    items = pd.DataFrame(
        {
            "kind": ["top", "top", "top", "shoe", "shoe"],
            "kind_code": [1, 1, 1, 2, 2],  # the same split under another name
            "sku": ["a", "b", "c", "d", "e"],  # one value per item: kept (5 <= max_values)
        }
    )
    users = pd.DataFrame({"age": [30.0, 20.0, np.nan, 50.0]})
    data = Dataset(
        inter,
        4,
        5,
        user_age=users["age"].to_numpy(),
        items=items,
        users=users,
        item_kinds={"kind": CAT, "kind_code": CAT, "sku": CAT},
        user_kinds={"age": AttributeKind.NUMERIC},
    )
    manifest = memory_manifest(data).model_copy(update={"roles": SchemaSettings(user_age="age")})
    return replace(data, manifest=manifest)


def candidates(users: list[int], items: list[list[int]]) -> CandidateSet:
    it = np.array(items, dtype=np.int32)
    ranks = {"src": np.where(it >= 0, np.arange(1, it.shape[1] + 1), 0).astype(np.int16)}
    scores = {"src": np.where(it >= 0, 1.0, np.nan).astype(np.float32)}
    return CandidateSet(np.array(users), it, ranks, scores)


def features(data: Dataset, cutoff: int, **kw) -> RankingFeatures:
    """The ranking features as of `cutoff`, from the feature groups computed on `data`."""
    tables = OfflineTables.from_dataset(connect("duckdb"), data)
    return group_features(tables, data, cutoff, **{"max_values": 10, **kw})


@pytest.fixture
def fitted() -> RankingFeatures:
    return features(dataset(), CUTOFF, affinity_attributes=2)


def column(f: RankingFeatures, X: np.ndarray, name: str) -> np.ndarray:
    return X[:, f.feature_names(["src"], []).index(name)]


def test_duplicate_partitions_are_kept_once(fitted):
    assert list(fitted.item_cats_) == ["kind", "sku"]
    assert fitted.categorical_ == ["item_kind", "item_sku"]


def test_user_item_and_item_values(fitted):
    X, rows, cols = fitted.transform(candidates([0, 1], [[0, 3, -1], [1, 0, 4]]))
    assert rows.tolist() == [0, 0, 1, 1, 1] and cols.tolist() == [0, 1, 0, 1, 2]
    # user 0 bought item 0 three units (days 10 and 95), last 5 days before the cutoff
    assert column(fitted, X, "ui_units").tolist()[:2] == [3.0, 1.0]
    assert column(fitted, X, "ui_days_since_last")[0] == pytest.approx(5.0)
    assert np.isnan(column(fitted, X, "ui_units")[3])  # user 1 never bought item 0
    # item 1: two units this week, two buyers; item 0: 2 units in 28 days, 3 in all
    assert column(fitted, X, "item_units_7d")[2] == 2.0
    assert column(fitted, X, "item_units_28d")[3] == 2.0
    assert column(fitted, X, "item_units_all")[3] == 3.0
    assert column(fitted, X, "item_buyers")[2] == 2.0
    # price in the last 28 days: item 0 sold at 12 only; user 0 paid 10 x 1, 12 x 2, 30 x 1
    # units: 16 a unit (prices are weighted by quantity)
    assert column(fitted, X, "item_price")[0] == pytest.approx(12.0)
    assert column(fitted, X, "price_ratio")[0] == pytest.approx(12.0 / 16.0)
    # item 4's only buyer is 50; user 1 is 20: the gap is -30
    assert column(fitted, X, "age_gap")[4] == pytest.approx(-30.0)


def test_attribute_affinity_counts_units_per_value(fitted):
    X, _, _ = fitted.transform(candidates([0], [[1, 4]]))
    # user 0 bought 3 'top' units and 1 'shoe' of 4: shares 0.75 and 0.25
    assert column(fitted, X, "share_kind").tolist() == [0.75, 0.25]
    assert column(fitted, X, "recent_kind").tolist() == [2.0, 1.0]  # day 10 is too old


def test_source_features_and_context(fitted):
    X, _, _ = fitted.transform(candidates([0, 1], [[0, 3], [1, -1]]))
    assert column(fitted, X, "src_rank").tolist() == [1.0, 2.0, 1.0]
    assert column(fitted, X, "n_sources").tolist() == [1.0, 1.0, 1.0]
    day = column(fitted, X, "day_of_year")
    assert np.all(day == day[0])  # the request's context, identical for every candidate


def test_features_ignore_everything_after_the_cutoff():
    base = dataset()
    early = features(base, 98 * US_PER_DAY)
    # more purchases from day 98 on must not change features fitted before day 98
    inter = base.interactions
    later = Interactions(
        np.append(inter.user, [0, 1]).astype(np.int32),
        np.append(inter.item, [2, 0]).astype(np.int32),
        np.append(inter.time, [99 * US_PER_DAY, 99 * US_PER_DAY]),
        np.append(inter.quantity, [5, 5]).astype(np.int32),
        np.append(inter.price, [1.0, 1.0]).astype(np.float32),
    )
    order = np.argsort(later.time, kind="stable")
    later = Interactions(*(a[order] for a in (later.user, later.item, later.time,
                                              later.quantity, later.price)))  # fmt: skip
    changed = replace(base, interactions=later)
    again = features(changed, 98 * US_PER_DAY)
    cs = candidates([0, 1, 2], [[0, 1, 2], [0, 2, 4], [3, 4, 1]])
    np.testing.assert_array_equal(early.transform(cs)[0], again.transform(cs)[0])


def test_wide_attributes_are_not_features():
    frame = pd.DataFrame({"id": [str(i) for i in range(50)], "g": ["a", "b"] * 25})
    chosen = choose_attributes(frame, {"id": CAT, "g": CAT}, max_values=10)
    assert list(chosen) == ["g"]


def test_key_table_lookup_finds_present_keys_and_nan_for_absent_ones():
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(0, 10**6, 5000))
    table = KeyTable(keys, {"v": keys.astype(float)})
    cases = [
        rng.integers(0, 10**6, 300),  # spread over the whole table
        keys[100:110],  # one short run, as a request's keys are
        np.array([keys[0], keys[-1], 10**6 + 5, -3]),  # both ends and beyond them
        np.array([keys[5]] * 3),
        np.array([], np.int64),
    ]
    for needles in cases:
        got = table.lookup(needles)["v"]
        present = np.isin(needles, keys)
        assert np.array_equal(~np.isnan(got), present)
        assert np.array_equal(got[present], needles[present].astype(np.float32))


def test_segment_lifts_by_hand(fitted):
    # the last 7 days: user 0 (30-40) bought item 0 x2 and item 3, user 1 (20-25) item 1,
    # user 2 (age unknown: no segment) item 1, user 3 (50-60) item 4: 5 units of known age,
    # p = (0.4, 0.2, 0, 0.2, 0.2); no user_regions table, so no region lift
    assert [n for n in fitted.names_ if n.startswith("segment_")] == [
        "segment_age_lift",
        "segment_share",
    ]
    X, _, _ = fitted.transform(candidates([0, 2], [[0, 1, 2], [0, 1, 2]]))
    # user 0's bucket bought 3 units: (units + 5) / (3 x p + 5) pseudo-units each side
    assert column(fitted, X, "segment_age_lift") == pytest.approx(
        [7 / 6.2, 5 / 5.6, 1.0, 1.0, 1.0, 1.0]  # item 2 unsold; user 2's age unknown
    )
    share = [0.4 * 7 / 6.2, 0.2 * 5 / 5.6, 0, 0.4, 0.2, 0]
    assert column(fitted, X, "segment_share") == pytest.approx(share)


def test_segment_lifts_with_regions_multiply():
    data = dataset()
    rules = Rules(None, None, np.array([0, 1, 0, -1], np.int32), ["north", "south"], None)
    f = features(replace(data, rules=rules), CUTOFF, affinity_attributes=2)
    X, _, _ = f.transform(candidates([0, 3], [[0, 1], [0, 1]]))
    # region 0 (users 0 and 2) bought item 0 x2, item 3, item 1: 4 units; region 1 item 1;
    # p over known regions = (0.4, 0.4, 0, 0.2, 0)
    region = column(f, X, "segment_region_lift")
    assert region[:2] == pytest.approx([(2 + 5) / (4 * 0.4 + 5), (1 + 5) / (4 * 0.4 + 5)])
    assert region[2:].tolist() == [1.0, 1.0]  # user 3's region is unknown
    age = column(f, X, "segment_age_lift")
    share = column(f, X, "segment_share")
    mean_p = np.array([0.4, 0.3])  # the two kinds' shares of items 0 and 1, averaged
    assert share[:2] == pytest.approx(mean_p * age[:2] * region[:2])
