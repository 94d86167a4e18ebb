"""Ingest of the H&M layout, on the real sample rows (types, zeros, empties, duplicates)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from shortlist.data.ingest import ingest
from shortlist.data.offline import OfflineStore
from shortlist.errors import DataError


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_hm_sample_round_trip(hm_sample, workspace):
    summary = ingest(workspace, hm_sample, format="hm")
    store = OfflineStore(workspace)
    m = store.manifest
    articles, customers = _rows(hm_sample / "articles.csv"), _rows(hm_sample / "customers.csv")
    transactions = _rows(hm_sample / "transactions_train.csv")
    assert (m.items.rows, m.users.rows) == (len(articles), len(customers)) == (105_542, 687)
    # Identical rows are multi-unit purchases: one row each, with the count as quantity.
    counted = Counter(tuple(r.values()) for r in transactions)
    assert m.source_rows == len(transactions) == 16_087
    assert m.interactions.rows == len(counted)
    assert m.merged_duplicates == len(transactions) - len(counted) > 0
    inter = store.interactions()
    assert inter.aggregate("sum(quantity)").fetchall()[0][0] == len(transactions)
    assert max(counted.values()) == inter.aggregate("max(quantity)").fetchall()[0][0]
    assert (m.start.date().isoformat(), m.end.date().isoformat()) == ("2018-09-20", "2020-09-22")
    assert summary.rejections == [] and m.rejected == {}

    # Article ids keep their leading zero; dense ids follow the sorted external ids.
    items = store.items().order("item_idx").fetchdf()
    assert items["item_id"].tolist() == sorted(r["article_id"] for r in articles)
    assert items["item_idx"].tolist() == list(range(len(articles)))
    assert items["item_id"].str.len().eq(10).all() and items["item_id"].str[0].eq("0").all()
    assert m.items.attributes["prod_name"] == "text"
    assert m.items.attributes["product_type_no"] == "categorical"

    # Empty FN/Active mean 0; missing ages stay missing.
    users = store.users().fetchdf().set_index("user_id")
    for c in customers[:50]:
        u = users.loc[c["customer_id"]]
        assert u["FN"] == (1.0 if c["FN"] else 0.0)
        assert u["Active"] == (1.0 if c["Active"] else 0.0)
    assert users["age"].isna().sum() == sum(1 for c in customers if not c["age"])
    assert m.roles.user_age == "age" and m.roles.item_group == "product_code"

    # Every interaction resolves back to the exact source row.
    back = store.con.sql(
        "SELECT u.user_id, i.item_id, strftime(t.timestamp, '%Y-%m-%d') d, t.price, t.channel, "
        f"t.quantity FROM ({inter.sql_query()}) t JOIN ({store.users().sql_query()}) u "
        f"USING (user_idx) JOIN ({store.items().sql_query()}) i USING (item_idx)"
    ).fetchall()
    rebuilt = Counter()
    for user, item, day, price, channel, qty in back:
        rebuilt[(day, user, item, price, channel)] += qty
    expected = Counter()
    for r in transactions:
        key = (
            r["t_dat"],
            r["customer_id"],
            r["article_id"],
            float(r["price"]),
            r["sales_channel_id"],
        )
        expected[key] += 1
    assert rebuilt == expected


def test_hm_partitions_by_month(hm_sample, workspace):
    ingest(workspace, hm_sample, format="hm")
    months = sorted(p.name for p in (workspace.offline / "interactions").iterdir())
    assert months[0] == "month=2018-09" and months[-1] == "month=2020-09"
    assert len(months) == 25
    # A partition only holds its own month.
    bad = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{workspace.offline}/interactions/**/*.parquet', "
        "hive_partitioning=true) WHERE strftime(timestamp, '%Y-%m') <> month"
    ).fetchall()[0][0]
    assert bad == 0


def test_hm_missing_file_is_named(tmp_path, workspace):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "articles.csv").write_text("article_id\n0108775015\n")
    with pytest.raises(DataError, match="missing file customers.csv"):
        ingest(workspace, tmp_path / "src", format="hm")


def test_hm_unknown_article_names_line(hm_sample, tmp_path, workspace):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("articles.csv", "customers.csv"):
        (src / name).symlink_to(hm_sample / name)
    lines = (hm_sample / "transactions_train.csv").read_text().splitlines()
    lines[10] = lines[10].replace(lines[10].split(",")[2], "0999999999")
    (src / "transactions_train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        ingest(workspace, src, format="hm")
    assert (
        "transactions_train.csv:11 column 'item_id': unknown item (not in articles.csv): "
        "'0999999999'" in str(err.value)
    )
