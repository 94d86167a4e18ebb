"""`shortlist train retrieval`, `index` and `similar` as a user runs them, on a tiny workspace."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shortlist.data.generator import generate
from shortlist.data.offline import OfflineStore
from shortlist.retrieval.build import index_folder, model_folder
from shortlist.retrieval.index import load_index
from shortlist.retrieval.two_tower import ITEM_VECTORS_FILE
from shortlist.workspace import open_workspace
from tests.conftest import write
from tests.test_cli import shortlist

FAST = "[retrieval]\nepochs = 2\nbatch_size = 512\ndim = 32\nhidden = 64\n"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("index_cmd")
    generate(root / "src", scale="tiny", seed=5)
    write(root / "ws", "shortlist.toml", FAST)
    for args in (
        ["ingest", "--source", str(root / "src"), "--format", "hm"],
        ["train", "retrieval"],
        ["index"],
    ):
        result = shortlist("--workspace", str(root / "ws"), *args)
        assert result.returncode == 0, result.stderr
    return open_workspace(root / "ws")


def similar(ws, *args: str) -> list[dict]:
    result = shortlist("--workspace", str(ws.root), "similar", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def exact_neighbours(ws, item_id: str, k: int, keep: np.ndarray | None = None) -> list[str]:
    """Brute force in numpy: the oracle for the index and its filters."""
    vectors = np.load(model_folder(ws) / ITEM_VECTORS_FILE)
    ids = OfflineStore(ws).sql("SELECT item_id FROM items ORDER BY item_idx").df()["item_id"]
    ids = ids.astype(str).to_numpy()
    me = int(np.flatnonzero(ids == item_id)[0])
    scores = vectors @ vectors[me]
    scores[me] = -np.inf
    if keep is not None:
        scores[~keep] = -np.inf
    order = np.argsort(-scores, kind="stable")[:k]
    return [ids[i] for i in order if np.isfinite(scores[i])]


def test_index_is_saved_and_exact_for_a_small_catalogue(ws):
    index = load_index(index_folder(ws))
    assert index.is_exact
    assert len(index) == OfflineStore(ws).manifest.items.rows


def test_similar_matches_brute_force(ws):
    item = OfflineStore(ws).sql("SELECT item_id FROM items LIMIT 1").fetchall()[0][0]
    got = similar(ws, "--item", item, "--k", "8")
    assert [m["item_id"] for m in got] == exact_neighbours(ws, item, 8)
    assert all(a["score"] >= b["score"] for a, b in zip(got, got[1:], strict=False))


def test_filtered_similar_returns_only_passing_items_and_matches_exact_filtered_search(ws):
    store = OfflineStore(ws)
    items = store.sql("SELECT item_idx, item_id, product_group_name FROM items").df()
    item = str(items.item_id.iloc[0])
    group = items.product_group_name.value_counts().index[1]  # not necessarily the item's own
    got = similar(
        ws, "--item", item, "--k", "10", "--filter", json.dumps({"product_group_name": group})
    )
    keep = (items.sort_values("item_idx").product_group_name == group).to_numpy()
    assert [m["item_id"] for m in got] == exact_neighbours(ws, item, 10, keep)
    assert len(got) == min(10, int(keep.sum()) - (items.product_group_name.iloc[0] == group))


def test_price_range_filter_uses_the_last_sold_price(ws):
    store = OfflineStore(ws)
    prices = store.sql(
        "SELECT i.item_id, arg_max(t.price, t.timestamp) AS p FROM interactions t "
        "JOIN items i USING (item_idx) GROUP BY i.item_id"
    ).df()
    cap = float(prices.p.median())
    item = str(prices.item_id.iloc[0])
    got = similar(ws, "--item", item, "--k", "20", "--filter", json.dumps({"price": {"lte": cap}}))
    cheap = set(prices.item_id[prices.p <= cap].astype(str))
    assert got and all(m["item_id"] in cheap for m in got)


def test_hnsw_index_agrees_with_exact_on_a_small_catalogue(ws, tmp_path):
    item = OfflineStore(ws).sql("SELECT item_id FROM items LIMIT 1 OFFSET 7").fetchall()[0][0]
    exact = similar(ws, "--item", item, "--k", "10")
    result = shortlist("--workspace", str(ws.root), "index", "--exact-below", "0")
    assert result.returncode == 0, result.stderr
    try:
        assert not load_index(index_folder(ws)).is_exact
        hnsw = similar(ws, "--item", item, "--k", "10")
        assert [m["item_id"] for m in hnsw] == [m["item_id"] for m in exact]
        assert [m["score"] for m in hnsw] == pytest.approx([m["score"] for m in exact], abs=1e-5)
    finally:
        assert shortlist("--workspace", str(ws.root), "index").returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--item", "no-such-item"], "unknown item 'no-such-item'"),
        (["--item", "{item}", "--filter", "{oops"], "not valid JSON"),
        (["--item", "{item}", "--filter", '["a"]'], "JSON object"),
        (["--item", "{item}", "--filter", '{"colour": 1}'], "filter field 'colour'"),
        (["--item", "{item}", "--filter", '{"price": {"lte": "x"}}'], "expects a number"),
    ],
)
def test_bad_requests_get_one_line_errors(ws, args, message):
    item = OfflineStore(ws).sql("SELECT item_id FROM items LIMIT 1").fetchall()[0][0]
    result = shortlist(
        "--workspace", str(ws.root), "similar", *[item if a == "{item}" else a for a in args]
    )
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_index_without_a_model_says_what_to_run(tmp_path):
    src = tmp_path / "src"
    write(src, "items.csv", "item_id,colour\nA,red\nB,blue\n")
    write(src, "interactions.csv", "user_id,item_id,timestamp\nu1,A,2020-01-01\n")
    assert (
        shortlist("--workspace", str(tmp_path / "ws"), "ingest", "--source", str(src)).returncode
        == 0
    )
    result = shortlist("--workspace", str(tmp_path / "ws"), "index")
    assert result.returncode == 1
    assert "shortlist train retrieval" in result.stderr
