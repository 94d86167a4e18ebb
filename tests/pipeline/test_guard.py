"""The guard: the pipeline serves its ranker only where held-out data says it beats the simple
source orders; otherwise the best order, said in the manifest, `build`'s output and the trace.

The end-to-end case is made by hand so that the ranker must lose: in the last weeks before the
cutoff every customer only rebuys their last purchase (a change of behaviour the ranker, which
learnt from the older weeks, cannot know), so "repurchase first" wins the validation periods.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from shortlist.data.arrays import Targets, end_of_data, load_dataset
from shortlist.data.candidates import CandidateSet
from shortlist.data.generator import generate
from shortlist.data.offline import OfflineStore
from shortlist.pipeline import Pipeline
from shortlist.pipeline.guard import ValidationRequests, choose_ranking
from shortlist.ranking.heuristics import SourceOrder, source_orders
from shortlist.workspace import open_workspace
from tests.conftest import write
from tests.test_cli import shortlist

SETTINGS = """
[pipeline]
sources = [
  { name = "repurchase", k = 30 },
  { name = "copurchase", k = 30 },
  { name = "trending", k = 30 },
]
filters = []

[ranking]
compiled = false
"""


def candidates() -> CandidateSet:
    """Two users, four candidates each, in union order; "repurchase" proposes the last two."""
    items = np.array([[10, 11, 12, 13], [20, 21, 22, -1]], np.int32)
    rep = np.array([[0, 0, 2, 1], [0, 1, 0, 0]], np.int16)
    tre = np.array([[1, 2, 0, 0], [1, 0, 2, 0]], np.int16)
    nan = np.full(items.shape, np.nan, np.float32)
    return CandidateSet(
        np.array([0, 1]), items, {"repurchase": rep, "trending": tre}, {"repurchase": nan,
        "trending": nan},
    )  # fmt: skip


def test_a_source_order_puts_its_chain_first_each_by_its_rank():
    cs = candidates()
    order = np.argsort(-SourceOrder(("repurchase", "trending")).scores(cs), axis=1, kind="stable")
    ranked = np.take_along_axis(cs.items, order, axis=1)
    assert ranked[0].tolist() == [13, 12, 10, 11]  # repurchase #1, #2, then trending #1, #2
    assert ranked[1].tolist() == [21, 20, 22, -1]  # padding last
    union = np.take_along_axis(
        cs.items, np.argsort(-SourceOrder(()).scores(cs), axis=1, kind="stable"), axis=1
    )
    assert union.tolist() == cs.items.tolist()
    names = [o.name for o in source_orders(["repurchase", "trending"])]
    assert names == [
        "source order: union",
        "source order: repurchase > union",
        "source order: trending > union",
        "source order: repurchase > trending > union",
        "source order: trending > repurchase > union",
    ]


def validation_where_repurchase_is_right() -> ValidationRequests:
    cs = candidates()
    rows, cols = np.nonzero(cs.items >= 0)
    X = cs.items[rows, cols].astype(np.float32)[:, None]  # the feature is the item id itself
    bought = np.array([13, 21])  # the repurchase source's #1 for both users
    y = np.isin(cs.items[rows, cols], bought).astype(np.float32)
    tg = Targets(np.array([0, 1], np.int32), np.array([0, 1, 2]), bought.astype(np.int32))
    v = ValidationRequests()
    assert v.takes(0, 4)
    v.add(cs, X, rows, cols, y, tg, np.random.default_rng(0))
    return v


def test_a_ranker_worse_than_a_source_order_is_bypassed():
    v = validation_where_repurchase_is_right()
    # this "ranker" puts the lowest item id first: the bought items come last
    choice = choose_ranking(v, lambda X: -X[:, 0], ["repurchase", "trending"])
    assert choice.bypassed
    assert choice.order == SourceOrder(("repurchase",))  # the simplest of the perfect orders
    assert choice.order_map == pytest.approx(1.0)
    assert choice.ranker_map == pytest.approx((1 / 4 + 1 / 2) / 2)  # 13 fourth, 21 second
    assert choice.note.startswith("bypassed: source order: repurchase > union scored higher")


def test_a_ranker_at_least_as_good_as_every_order_serves():
    v = validation_where_repurchase_is_right()
    choice = choose_ranking(v, lambda X: np.isin(X[:, 0], [13, 21]).astype(float), ["repurchase"])
    assert not choice.bypassed
    assert choice.ranker_map == pytest.approx(1.0)
    assert choice.note.startswith("ranker: scored at least as high")


def test_the_latest_periods_validate_until_they_hold_enough_buyers():
    v = ValidationRequests(min_buyers=100)
    assert v.takes(0, 12)  # the latest always
    v.buyers = 40
    assert v.takes(1, 12)
    assert v.takes(2, 12)
    assert v.takes(3, 12)
    assert not v.takes(4, 12)  # a third of 12 periods reached
    v = ValidationRequests(min_buyers=100)
    assert v.takes(0, 12)
    v.buyers = 100
    assert not v.takes(1, 12)  # enough buyers
    assert v.periods == 1


@pytest.fixture(scope="module")
def rebuying(tmp_path_factory):
    """A workspace whose customers, in the last three weeks, only rebuy their last purchase."""
    root = tmp_path_factory.mktemp("guard")
    generate(root / "src", scale="tiny", seed=2)
    path = root / "src" / "transactions_train.csv"
    t = pd.read_csv(path, dtype={"customer_id": str, "article_id": str})
    start = pd.Timestamp(t["t_dat"].max()) - pd.Timedelta(days=20)
    recent = pd.to_datetime(t["t_dat"]) >= start
    last = t[~recent].groupby("customer_id")["article_id"].last()
    rebuys = recent & t["customer_id"].isin(last.index)
    t.loc[rebuys, "article_id"] = t.loc[rebuys, "customer_id"].map(last)
    t.to_csv(path, index=False)
    write(root / "ws", "shortlist.toml", SETTINGS)
    result = shortlist("--workspace", str(root / "ws"), "build", "--source", str(root / "src"),
                       "--format", "hm")  # fmt: skip
    assert result.returncode == 0, result.stderr
    return open_workspace(root / "ws"), result.stdout


def test_the_guard_serves_the_better_order_end_to_end(rebuying):
    ws, stdout = rebuying
    assert "bypassed: source order: repurchase" in stdout  # build says so
    manifest = json.loads((ws.root / "models" / "pipeline.json").read_text())
    ranking = manifest["ranking"]
    assert ranking["served"].startswith("source order: repurchase")
    scores = ranking["validation_map@12"]
    assert scores[ranking["served"]] > scores["ranker"]

    data = load_dataset(OfflineStore(ws))
    fitted = Pipeline.from_config(ws).fit(data, end_of_data(data))
    loaded = Pipeline.from_config(ws).load()
    assert loaded.ranking_ is not None and loaded.ranking_.bypassed
    assert loaded.ranking_.order == fitted.ranking_.order
    recent = np.unique(data.interactions.user[-500:])[:20]
    for user in data.user_ids[recent]:
        a, b = fitted.recommend(user), loaded.recommend(user)
        assert a.item_ids == b.item_ids
        rank = next(s for s in b.trace if s["stage"] == "rank")
        assert rank["scorer"] == ranking["served"]
        assert rank["ranker"].startswith("bypassed")
        # repurchase's candidates come first, in its order
        first = b.items[0]
        assert first.sources.get("repurchase") == 1
