"""Business-rule files (inventory, regions, age limits): ingest in both layouts, bad rows, the
`load_rules` arrays, stores without them, and the generator's files and purchases."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shortlist.data.generator import generate
from shortlist.data.ingest import BadRowsError, ingest
from shortlist.data.offline import OfflineStore
from shortlist.data.rules import load_rules
from shortlist.errors import DataError, RequestError
from shortlist.filtering import (
    AgeAllowedFilter,
    AvailableInRegionFilter,
    FilterChain,
    FilterContext,
    InStockFilter,
)
from shortlist.workspace import open_workspace
from tests.conftest import write

ITEMS = "item_id,size\nA,S\nB,M\nC,L\nD,XL\n"
USERS = "user_id,age\nu1,25\nu2,17\nu3,40\n"
INTERACTIONS = "user_id,item_id,timestamp\nu1,A,2020-01-01\nu2,B,2020-01-02\n"
RULE_FILES = ("inventory", "item_regions", "user_regions", "item_restrictions")


def _generic(tmp_path: Path, **rules: str) -> Path:
    src = tmp_path / "src"
    write(src, "items.csv", ITEMS)
    write(src, "users.csv", USERS)
    write(src, "interactions.csv", INTERACTIONS)
    for name, text in rules.items():
        write(src, f"{name}.csv", text)
    return src


GOOD = {
    "inventory": "item_id,units\nA,5\nB,0\nC,-2\n",  # D untracked
    # A in two regions, B in one (listed twice), C and D everywhere; "east" only has users
    "item_regions": "item_id,region\nA,north\nA, south\nB,west\nB,west\n",
    "user_regions": "user_id,region\nu1,south\nu3,east\n",  # u2 unknown
    "item_restrictions": "item_id,min_age\nB,18\nD,12.5\n",
}


def test_generic_rule_files_load_as_arrays(tmp_path, workspace):
    ingest(workspace, _generic(tmp_path, **GOOD))
    store = OfflineStore(workspace)
    assert {k: v.rows for k, v in store.manifest.rules.items()} == {
        "inventory": 3,
        "item_regions": 3,
        "user_regions": 2,
        "item_restrictions": 2,
    }
    assert store.manifest.regions == ["east", "north", "south", "west"]
    assert store.rule_table("item_regions").order("item_idx, region").fetchall() == [
        (0, 1),
        (0, 2),
        (1, 3),
    ]
    rules = load_rules(store)
    np.testing.assert_array_equal(rules.units, [5, 0, -2, np.nan])
    np.testing.assert_array_equal(rules.min_age, [np.nan, 18, np.nan, 12.5])
    np.testing.assert_array_equal(rules.user_region, [2, -1, 0])
    assert rules.user_region.dtype == np.int32 and rules.units.dtype == np.float64
    assert rules.region_names == ["east", "north", "south", "west"]
    assert rules.region_code("west") == 3
    with pytest.raises(RequestError, match="region: unknown region 'mars' .known: east, north"):
        rules.region_code("mars")
    np.testing.assert_array_equal(
        rules.availability.toarray(),
        [[0, 1, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1], [1, 1, 1, 1]],  # C, D: sold everywhere
    )

    # The filters built from the rules agree with the arrays: u1 (south, 25), u2 (unknown
    # region, 17), u3 (east, 40), each offered every item.
    chain = FilterChain(
        [
            InStockFilter(rules.units),
            AvailableInRegionFilter(rules.availability),
            AgeAllowedFilter(rules.min_age),
        ]
    )
    users = np.array([0, 1, 2])
    ctx = FilterContext(users, region=rules.user_region[users], age=[25, 17, 40])
    out = chain.apply(ctx, np.tile(np.arange(4), (3, 1)))
    assert out.keep.tolist() == [
        [True, False, False, True],  # B: 0 units (and not sold in south); C: oversold
        [True, False, False, True],  # unknown region keeps all; D's limit is 12.5
        [False, False, False, True],  # A not sold in east
    ]


def test_hm_rule_files_keyed_by_article_and_customer(tmp_path, workspace):
    src = tmp_path / "hm"
    write(src, "articles.csv", "article_id,prod_name\n0108775015,Strap top\n0108775044,Top\n")
    write(src, "customers.csv", "customer_id,age\naaa,16.0\nbbb,30.0\n")
    write(
        src,
        "transactions_train.csv",
        "t_dat,customer_id,article_id,price,sales_channel_id\n2020-01-01,aaa,0108775015,0.01,2\n",
    )
    write(src, "inventory.csv", "article_id,units\n0108775044,7\n")
    write(src, "item_regions.csv", "article_id,region\n0108775015,nordics\n")
    write(src, "user_regions.csv", "customer_id,region\nbbb,nordics\naaa,france\n")
    write(src, "item_restrictions.csv", "article_id,min_age,note\n0108775044,18,lace\n")
    ingest(workspace, src, format="hm")
    store = OfflineStore(workspace)
    assert store.manifest.rules["item_restrictions"].ignored_columns == ["note"]
    rules = load_rules(store)
    np.testing.assert_array_equal(rules.units, [np.nan, 7])  # the leading zero is kept
    np.testing.assert_array_equal(rules.min_age, [np.nan, 18])
    assert rules.region_names == ["france", "nordics"]
    np.testing.assert_array_equal(rules.user_region, [0, 1])
    np.testing.assert_array_equal(rules.availability.toarray(), [[0, 1], [1, 1]])

    # H&M ids are named by their own columns in errors
    write(src, "inventory.csv", "article_id,units\n108775044,7\n")
    with pytest.raises(BadRowsError) as err:
        ingest(workspace, src, format="hm")
    assert [str(r) for r in err.value.rejections] == [
        "inventory.csv:2 column 'article_id': unknown item (not in articles.csv): '108775044'"
    ]


def test_parquet_rule_files(tmp_path, workspace):
    src = _generic(tmp_path)
    pq.write_table(pa.table({"item_id": ["A", "C"], "units": [3, 0]}), src / "inventory.parquet")
    pq.write_table(
        pa.table({"item_id": ["A", "B"], "min_age": [16.0, 2.5]}),
        src / "item_restrictions.parquet",
    )
    pq.write_table(pa.table({"user_id": ["u2"], "region": [7]}), src / "user_regions.parquet")
    ingest(workspace, src)
    rules = load_rules(OfflineStore(workspace))
    np.testing.assert_array_equal(rules.units, [3, np.nan, 0, np.nan])
    np.testing.assert_array_equal(rules.min_age, [16, 2.5, np.nan, np.nan])
    assert rules.region_names == ["7"] and rules.user_region.tolist() == [-1, 0, -1]
    assert rules.availability is None

    pq.write_table(
        pa.table({"item_id": ["A", "B"], "units": [1.0, 2.5]}), src / "inventory.parquet"
    )
    with pytest.raises(BadRowsError, match=r"inventory.parquet:2 column 'units': units is not an"):
        ingest(workspace, src)


BAD = {
    "inventory": "item_id,units\nA,5\nB,1.5\nZ,3\nA,2\n,4\nC,lots\nC\nD,\nD,1e12\n",
    "item_regions": "item_id,region\nA,north\nQ,north\nB,\n",
    "user_regions": "user_id,region\nu1,south\nghost,north\nu1,west\n",
    "item_restrictions": "item_id,min_age\nB,-1\nC,adult\nD,nan\nA,18\nA,21\n",
}
BAD_LINES = [
    "inventory.csv:3 column 'units': units is not an integer: '1.5'",
    "inventory.csv:4 column 'item_id': unknown item (not in items.csv): 'Z'",
    "inventory.csv:5 column 'item_id': duplicate item_id 'A' (first at line 2)",
    "inventory.csv:6 column 'item_id': missing item_id",
    "inventory.csv:7 column 'units': units is not an integer: 'lots'",
    "inventory.csv:8 column 'units': wrong number of fields (expected 2, found 1)",
    "inventory.csv:9 column 'units': missing units",
    "inventory.csv:10 column 'units': units out of range: '1e12'",
    "item_regions.csv:3 column 'item_id': unknown item (not in items.csv): 'Q'",
    "item_regions.csv:4 column 'region': missing region",
    "user_regions.csv:3 column 'user_id': unknown user (not in users.csv): 'ghost'",
    "user_regions.csv:4 column 'user_id': duplicate user_id 'u1' (first at line 2)",
    "item_restrictions.csv:2 column 'min_age': negative min_age: '-1'",
    "item_restrictions.csv:3 column 'min_age': min_age is not a number: 'adult'",
    "item_restrictions.csv:4 column 'min_age': min_age is not a number: 'nan'",
    "item_restrictions.csv:6 column 'item_id': duplicate item_id 'A' (first at line 5)",
]


def test_bad_rule_rows_fail_with_file_line_and_column(tmp_path, workspace):
    with pytest.raises(BadRowsError) as err:
        ingest(workspace, _generic(tmp_path, **BAD))
    assert [str(r) for r in err.value.rejections] == BAD_LINES
    assert not workspace.offline.exists()


def test_bad_rule_rows_skip_keeps_the_rest(tmp_path, workspace):
    summary = ingest(workspace, _generic(tmp_path, **BAD), on_bad_rows="skip")
    assert [str(r) for r in summary.rejections] == BAD_LINES
    store = OfflineStore(workspace)
    assert store.rejected().count("*").fetchall()[0][0] == len(BAD_LINES)
    assert store.manifest.rejected["units is not an integer"] == 2
    rules = load_rules(store)
    np.testing.assert_array_equal(rules.units, [5, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(rules.min_age, [18, np.nan, np.nan, np.nan])
    assert rules.region_names == ["north", "south"]
    np.testing.assert_array_equal(rules.user_region, [1, -1, -1])


def test_unknown_user_without_users_file_names_interactions(tmp_path, workspace):
    src = tmp_path / "src"
    write(src, "items.csv", ITEMS)
    write(src, "interactions.csv", INTERACTIONS)
    write(src, "user_regions.csv", "user_id,region\nu2,x\nu3,y\n")
    with pytest.raises(DataError, match=r"user_regions.csv:3 column 'user_id': unknown user \(not "
                       r"in interactions.csv\): 'u3'"):  # fmt: skip
        ingest(workspace, src)
    ingest(workspace, src, on_bad_rows="skip")
    assert load_rules(OfflineStore(workspace)).user_region.tolist() == [-1, 0]


def test_a_missing_rule_column_is_named(tmp_path, workspace):
    src = _generic(tmp_path, inventory="item_id,stock\nA,1\n")
    with pytest.raises(DataError, match=r"inventory.csv:1: missing column 'units'"):
        ingest(workspace, src)
    (src / "inventory.csv").unlink()
    write(src, "inventory.csv", "item_id,units\nA,1\n")
    pq.write_table(pa.table({"item_id": ["A"], "units": [1]}), src / "inventory.parquet")
    with pytest.raises(DataError, match="both inventory.csv and inventory.parquet"):
        ingest(workspace, src)


def test_absent_files_and_old_stores_have_no_rules(tmp_path, workspace):
    src = _generic(tmp_path)
    ingest(workspace, src)
    rules = load_rules(OfflineStore(workspace))
    assert (rules.units, rules.availability, rules.user_region, rules.min_age) == (None,) * 4
    assert rules.region_names == []
    with pytest.raises(RequestError, match="the data has no regions"):
        rules.region_code("north")

    # A store from before the rule tables: its manifest has neither key.
    ingest(workspace, _generic(tmp_path, **GOOD))
    path = workspace.offline / "manifest.json"
    old = json.loads(path.read_text())
    del old["rules"], old["regions"]
    path.write_text(json.dumps(old))
    for name in RULE_FILES:
        (workspace.offline / f"{name}.parquet").unlink()
    store = OfflineStore(workspace)
    assert store.manifest.rules == {} and store.rule_table("inventory") is None
    assert load_rules(store).units is None
    assert store.interactions().count("*").fetchall()[0][0] == 2


def test_changed_rule_file_makes_the_store_stale(tmp_path, workspace):
    from shortlist.data.ingest import is_current

    src = _generic(tmp_path, **GOOD)
    ingest(workspace, src)
    assert is_current(workspace, src)
    write(src, "inventory.csv", "item_id,units\nA,4\n")
    assert not is_current(workspace, src)


# The generator ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    generate(out, scale="tiny", seed=5)
    return out


@pytest.fixture(scope="module")
def db(tiny: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for name in ("articles", "customers", "transactions_train", *RULE_FILES):
        con.execute(
            f"CREATE TABLE {name} AS SELECT * FROM read_csv('{tiny}/{name}.csv', all_varchar=true)"
        )
    return con


def _one(con: duckdb.DuckDBPyConnection, sql: str):
    return con.sql(sql).fetchall()[0][0]


def test_generated_purchases_respect_regions_and_ages(db):
    region_breaks = _one(
        db,
        "SELECT count(*) FROM transactions_train t JOIN user_regions u USING (customer_id) "
        "WHERE t.article_id IN (SELECT article_id FROM item_regions) AND NOT EXISTS (SELECT 1 "
        "FROM item_regions i WHERE i.article_id = t.article_id AND i.region = u.region)",
    )
    age_breaks = _one(
        db,
        "SELECT count(*) FROM transactions_train t JOIN customers c USING (customer_id) "
        "JOIN item_restrictions r USING (article_id) WHERE c.age::DOUBLE < r.min_age::DOUBLE",
    )
    assert region_breaks == 0 and age_breaks == 0
    # ... while the rules had work to do: regional and 18+ articles sell, and minors shop.
    regional = "SELECT article_id FROM item_regions"
    assert _one(db, f"SELECT count(*) FROM transactions_train WHERE article_id IN ({regional})")
    adult = "SELECT article_id FROM item_restrictions"
    assert _one(db, f"SELECT count(*) FROM transactions_train WHERE article_id IN ({adult})")
    minors = "SELECT customer_id FROM customers WHERE age::DOUBLE < 18"
    assert _one(db, f"SELECT count(*) FROM transactions_train WHERE customer_id IN ({minors})")


def test_generated_rule_files_have_the_planned_shares(db):
    articles = _one(db, "SELECT count(*) FROM articles")
    regional = db.sql("SELECT count(*) AS n FROM item_regions GROUP BY article_id").fetchnumpy()[
        "n"
    ]
    assert 0.06 < len(regional) / articles < 0.15 and set(regional) <= {1, 2, 3}
    assert _one(db, "SELECT count(DISTINCT region) FROM user_regions") == 8
    users = _one(db, "SELECT count(*) FROM customers")
    assert 0.97 < _one(db, "SELECT count(*) FROM user_regions") / users < 1.0
    restricted = _one(db, "SELECT count(*) FROM item_restrictions WHERE min_age = '18'")
    assert restricted == _one(db, "SELECT count(*) FROM item_restrictions")
    assert 0.01 < restricted / articles < 0.03
    assert _one(db, "SELECT count(*) FROM customers WHERE age IN ('16.0', '17.0')") >= 10
    units = db.sql("SELECT units::INTEGER AS u FROM inventory").fetchnumpy()["u"]
    assert len(units) == articles
    assert 0.05 < (units == 0).mean() < 0.11 and 0 < (units < 0).sum() < 0.02 * articles
    sold = _one(
        db,
        "SELECT corr(i.units::DOUBLE, s.n) FROM inventory i JOIN (SELECT article_id, count(*) n "
        "FROM transactions_train WHERE t_dat >= '2020-08-26' GROUP BY 1) s USING (article_id) "
        "WHERE i.units::INTEGER > 0",
    )
    assert sold > 0.3  # stock follows recent sales


def test_generated_rule_files_ingest_and_are_deterministic(tiny, tmp_path):
    ws = open_workspace(tmp_path / "ws")
    summary = ingest(ws, tiny, format="hm")
    assert summary.rejections == [] and set(summary.manifest.rules) == set(RULE_FILES)
    rules = load_rules(OfflineStore(ws))
    assert rules.availability.shape == (600, 8) and len(rules.region_names) == 8
    assert np.isnan(rules.units).sum() == 0 and (rules.user_region == -1).sum() > 0

    again = tmp_path / "again"
    generate(again, scale="tiny", seed=5)
    files = sorted(p.name for p in tiny.iterdir())
    assert len(files) == 7 and files == sorted(p.name for p in again.iterdir())
    for name in files:
        assert (tiny / name).read_bytes() == (again / name).read_bytes(), name
