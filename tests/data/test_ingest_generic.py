"""Ingest of the generic layout: file formats, timestamps, typing, and every bad-input path."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shortlist.data.ingest import BadRowsError, ingest
from shortlist.data.offline import OfflineStore
from shortlist.errors import ConfigError, DataError
from tests.conftest import write

ITEMS = """
item_id,colour_code,price_band,title,weight
A,01,3,Soft cotton jersey top with straps,1.5
B,02,2,Slim denim trousers in blue,2
C,03,1,Wool coat with a wide collar,3.25
"""
USERS = """
user_id,age,region
u1,25,north
u2,,south
"""


def _source(tmp_path, interactions: str, items: str = ITEMS, users: str | None = USERS):
    src = tmp_path / "src"
    write(src, "items.csv", items)
    if users is not None:
        write(src, "users.csv", users)
    write(src, "interactions.csv", interactions)
    return src


def test_iso_dates_datetimes_and_offsets_become_utc(tmp_path, workspace):
    src = _source(
        tmp_path,
        """
        user_id,item_id,timestamp,price,channel
        u1,A,2020-01-01,1.5,web
        u1,B,2020-01-02T10:30:00,2,store
        u2,C,2020-01-03T10:30:00+02:00,3,web
    """,
    )
    ingest(workspace, src)
    got = OfflineStore(workspace).interactions().order("timestamp").fetchall()
    assert [r[2] for r in got] == [
        datetime(2020, 1, 1),
        datetime(2020, 1, 2, 10, 30),
        datetime(2020, 1, 3, 8, 30),
    ]
    assert [r[4] for r in got] == ["web", "store", "web"]
    assert all(r[5] == 1 for r in got)  # quantity defaults to 1


def test_unix_seconds(tmp_path, workspace):
    src = _source(
        tmp_path,
        """
        user_id,item_id,timestamp
        u1,A,1577836800
        u2,B,1577923200.5
    """,
    )
    ingest(workspace, src)
    got = OfflineStore(workspace).interactions().order("timestamp").fetchall()
    assert [r[2] for r in got] == [datetime(2020, 1, 1), datetime(2020, 1, 2, 0, 0, 0, 500000)]
    assert [r[3] for r in got] == [None, None]  # no price column: missing, not zero


def test_attribute_typing_and_override(tmp_path, workspace):
    src = _source(tmp_path, "user_id,item_id,timestamp\nu1,A,2020-01-01\n")
    ingest(workspace, src)
    kinds = OfflineStore(workspace).manifest.items.attributes
    # leading zeros and code-like names are labels; words make text; plain numbers are numeric
    assert kinds == {
        "colour_code": "categorical",
        "price_band": "numeric",
        "title": "text",
        "weight": "numeric",
    }
    assert OfflineStore(workspace).manifest.users.attributes == {
        "age": "numeric",
        "region": "categorical",
    }
    workspace.root.mkdir(exist_ok=True)
    workspace.config_path.write_text('[ingest.item_attributes]\nprice_band = "categorical"\n')
    ingest(workspace, src)
    store = OfflineStore(workspace)
    assert store.manifest.items.attributes["price_band"] == "categorical"
    items = store.items().order("item_idx").fetchdf()
    assert items["price_band"].tolist() == ["3", "2", "1"]
    assert items["weight"].tolist() == [1.5, 2.0, 3.25]
    assert items["colour_code"].tolist() == ["01", "02", "03"]


def test_override_of_unknown_column_is_named(tmp_path, workspace):
    src = _source(tmp_path, "user_id,item_id,timestamp\nu1,A,2020-01-01\n")
    workspace.root.mkdir()
    workspace.config_path.write_text('[ingest.item_attributes]\ncolor = "numeric"\n')
    with pytest.raises(DataError, match=r"ingest.item_attributes.color names no column"):
        ingest(workspace, src)
    workspace.config_path.write_text('[ingest.item_attributes]\ntitle = "number"\n')
    with pytest.raises(ConfigError, match=r"ingest.item_attributes.title"):
        ingest(workspace, src)


def test_without_users_file_users_come_from_interactions(tmp_path, workspace):
    src = _source(
        tmp_path, "user_id,item_id,timestamp\nzed,A,2020-01-01\namy,B,2020-01-01\n", users=None
    )
    ingest(workspace, src)
    store = OfflineStore(workspace)
    assert store.users().order("user_idx").fetchall() == [(0, "amy"), (1, "zed")]
    assert store.manifest.users.source is None


def test_parquet_sources_with_integer_ids(tmp_path, workspace):
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"item_id": [10, 20], "size": ["S", "M"]}), src / "items.parquet")
    pq.write_table(
        pa.table(
            {
                "user_id": [7, 8, 7],
                "item_id": [10, 20, 99],
                "timestamp": pa.array(
                    [datetime(2021, 5, 1), datetime(2021, 5, 2), datetime(2021, 5, 3)]
                ),
                "quantity": [1, 3, 1],
            }
        ),
        src / "interactions.parquet",
    )
    with pytest.raises(
        BadRowsError, match=r"interactions.parquet:3 column 'item_id': unknown item"
    ):
        ingest(workspace, src)
    ingest(workspace, src, on_bad_rows="skip")
    store = OfflineStore(workspace)
    rows = store.interactions().order("timestamp").fetchall()
    assert [(r[0], r[1], r[5]) for r in rows] == [(0, 0, 1), (1, 1, 3)]
    assert store.items().order("item_idx").fetchall() == [(0, "10", "S"), (1, "20", "M")]
    assert store.rejected().fetchall() == [
        (
            "interactions",
            "interactions.parquet",
            "row 3",
            "item_id",
            "unknown item (not in items.parquet): '99'",
            "99",
        )
    ]


def test_duplicate_rows_merge_into_quantity(tmp_path, workspace):
    src = _source(
        tmp_path,
        """
        user_id,item_id,timestamp,price,quantity
        u1,A,2020-01-01,1.5,1
        u1,A,2020-01-01,1.5,2
        u1,A,2020-01-02,1.5,1
    """,
    )
    ingest(workspace, src)
    store = OfflineStore(workspace)
    assert [r[5] for r in store.interactions().order("timestamp").fetchall()] == [3, 1]
    assert (store.manifest.source_rows, store.manifest.merged_duplicates) == (3, 1)


BAD = """
user_id,item_id,timestamp,price,quantity
u1,A,2020-01-01,1.5,1
u1,A,not-a-date,1.5,1
u2,B,2020-01-02,cheap,1
u1,Z,2020-01-02,1,1
ghost,B,2020-01-02,1,1
u2,C
u2,C,2020-01-03,-1,1
u2,C,2020-01-03,1,0
,C,2020-01-03,1,1
u2,C,2020-01-04,2,1
"""


def test_bad_rows_fail_with_file_line_and_column(tmp_path, workspace):
    src = _source(tmp_path, BAD)
    with pytest.raises(BadRowsError) as err:
        ingest(workspace, src)
    lines = [str(r) for r in err.value.rejections]
    assert lines == [
        "interactions.csv:3 column 'timestamp': cannot parse 'not-a-date' as timestamptz",
        "interactions.csv:4 column 'price': cannot parse 'cheap' as double",
        "interactions.csv:5 column 'item_id': unknown item (not in items.csv): 'Z'",
        "interactions.csv:6 column 'user_id': unknown user (not in users.csv): 'ghost'",
        "interactions.csv:7 column 'timestamp': wrong number of fields (expected 5, found 2)",
        "interactions.csv:8 column 'price': negative price: '-1.0'",
        "interactions.csv:9 column 'quantity': quantity below 1: '0'",
        "interactions.csv:10 column 'user_id': missing user id",
    ]
    assert "9 bad row(s)" not in str(err.value) and "8 bad row(s)" in str(err.value)
    assert "--on-bad-rows skip" in str(err.value)
    assert not workspace.offline.exists()  # nothing half-written


def test_bad_rows_skip_keeps_the_rest_and_every_reason(tmp_path, workspace):
    src = _source(tmp_path, BAD)
    summary = ingest(workspace, src, on_bad_rows="skip")
    store = OfflineStore(workspace)
    assert store.manifest.interactions.rows == 2
    assert store.manifest.source_rows == 10
    assert sum(store.manifest.rejected.values()) == 8 == len(summary.rejections)
    rejected = store.rejected().order("location").fetchall()
    assert [r[2] for r in rejected] == [f"line {n}" for n in (10, 3, 4, 5, 6, 7, 8, 9)]
    assert rejected[3][4] == "unknown item (not in items.csv): 'Z'"


def test_failed_ingest_keeps_previous_store(tmp_path, workspace):
    good = _source(tmp_path, "user_id,item_id,timestamp\nu1,A,2020-01-01\n")
    ingest(workspace, good)
    bad = tmp_path / "bad"
    write(bad, "items.csv", ITEMS)
    write(bad, "interactions.csv", "user_id,item_id,timestamp\nu1,Q,2020-01-01\n")
    with pytest.raises(BadRowsError):
        ingest(workspace, bad)
    assert OfflineStore(workspace).manifest.interactions.rows == 1


def test_duplicate_and_missing_item_ids(tmp_path, workspace):
    src = _source(
        tmp_path,
        "user_id,item_id,timestamp\nu1,A,2020-01-01\n",
        items="item_id,size\nA,S\nB,M\nA,L\n,XL\n",
    )
    with pytest.raises(BadRowsError) as err:
        ingest(workspace, src)
    assert [str(r) for r in err.value.rejections] == [
        "items.csv:4 column 'item_id': duplicate item_id 'A' (first at line 2)",
        "items.csv:5 column 'item_id': missing item_id",
    ]
    ingest(workspace, src, on_bad_rows="skip")
    assert OfflineStore(workspace).items().order("item_idx").fetchall() == [
        (0, "A", "S"),
        (1, "B", "M"),
    ]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "missing file items.csv (or items.parquet)"),
        ({"items.csv": ITEMS}, "missing file interactions.csv"),
        (
            {"items.csv": "sku,size\n1,S\n", "interactions.csv": "user_id,item_id,timestamp\n"},
            "items.csv:1: missing column 'item_id' (the header has: sku, size)",
        ),
        (
            {"items.csv": ITEMS, "interactions.csv": "user_id,item,timestamp\nu1,A,2020-01-01\n"},
            "interactions.csv:1: missing column 'item_id'",
        ),
        (
            {"items.csv": ITEMS, "items.parquet": "", "interactions.csv": "x\n"},
            "both items.csv and items.parquet exist",
        ),
        (
            {"items.csv": "", "interactions.csv": "user_id,item_id,timestamp\n"},
            "items.csv:1: empty file",
        ),
    ],
)
def test_missing_files_and_columns_are_named(tmp_path, workspace, files, message):
    src = tmp_path / "src"
    src.mkdir()
    for name, text in files.items():
        (src / name).write_text(text.lstrip("\n"))
    with pytest.raises(DataError) as err:
        ingest(workspace, src)
    assert message in str(err.value)


def test_no_valid_interactions(tmp_path, workspace):
    src = _source(tmp_path, "user_id,item_id,timestamp\n")
    with pytest.raises(DataError, match="no valid interactions"):
        ingest(workspace, src)
