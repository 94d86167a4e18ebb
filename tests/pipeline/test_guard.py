"""The guard: the pipeline serves its ranker unless held-out data says, by more than its noise,
that a simple source order (or a blend) beats it; then that order, said in the manifest,
`build`'s output and the trace.

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
from shortlist.pipeline.guard import (
    NewCustomerOrder,
    RankingChoice,
    ValidationRequests,
    choose_ranking,
)
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
guard_blends = false
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


def validation_where(bought: list[int]) -> ValidationRequests:
    """The two users of `candidates` bought `bought` (one item each); the feature of a row
    is its item id."""
    cs = candidates()
    rows, cols = np.nonzero(cs.items >= 0)
    X = cs.items[rows, cols].astype(np.float32)[:, None]
    y = np.isin(cs.items[rows, cols], bought).astype(np.float32)
    tg = Targets(np.array([0, 1], np.int32), np.array([0, 1, 2]), np.array(bought, np.int32))
    v = ValidationRequests()
    assert v.takes(0, 4)
    v.add(cs, X, rows, cols, y, tg, np.random.default_rng(0))
    return v


def perfect(bought: list[int]):
    return lambda X, users: np.isin(X[:, 0], bought).astype(float)


def test_a_ranker_worse_than_a_source_order_is_bypassed():
    v = validation_where([13, 21])  # the repurchase source's #1 for both users
    # this "ranker" puts the lowest item id first: the bought items come late
    choice = choose_ranking(
        v, lambda X, users: -X[:, 0], ["repurchase", "trending"], 2, blends=False
    )
    assert choice.bypassed
    assert choice.order == SourceOrder(("repurchase",))  # the simplest of the perfect orders
    assert choice.order_map == pytest.approx(1.0)
    assert choice.ranker_map == pytest.approx((1 / 4 + 1 / 2) / 2)  # 13 fourth, 21 second
    # the difference per user: 3/4 and 1/2, so its standard error is 1/8: a lead of 5 of them
    assert choice.note.startswith(
        "bypassed: source order: repurchase > union beat the ranker by more than 2 standard "
        "error(s) on the latest period (1.0000 vs 0.3750"
    )


def test_a_tie_serves_the_ranker_whatever_the_switch():
    v = validation_where([13, 21])
    for switch in (0, 2):
        kept = choose_ranking(v, perfect([13, 21]), ["repurchase"], switch=switch, blends=False)
        assert not kept.bypassed and kept.order is None
        assert kept.ranker_map == pytest.approx(1.0) and kept.order_map == pytest.approx(1.0)
        assert kept.note.startswith("ranker: scored as high as every other order")


def test_an_order_ahead_by_less_than_the_switch_leaves_the_ranker_serving():
    v = validation_where([13, 21])  # repurchase's #1 for both: that order scores 1
    # the ranker puts 13 first for the first user, 21 second for the second: AP 1 and 1/2
    score = {10: 1, 11: 1, 12: 1, 13: 5, 20: 5, 21: 4, 22: 1}
    ranker = lambda X, users: np.array([score[int(i)] for i in X[:, 0]], float)  # noqa: E731
    # ahead by 1/4, its standard error 1/4: one standard error
    within = choose_ranking(v, ranker, ["repurchase"], switch=2, blends=False)
    assert within.order is None
    assert within.ranker_map == pytest.approx(0.75) and within.order_map == pytest.approx(1.0)
    assert within.note.startswith(
        "ranker: source order: repurchase > union scored higher on the latest period, but by "
        "no more than 2 standard error(s) (1.0000 vs 0.7500"
    )
    beaten = choose_ranking(v, ranker, ["repurchase"], switch=0, blends=False)
    assert beaten.bypassed and beaten.order == SourceOrder(("repurchase",))


def test_a_ranker_better_than_every_order_serves():
    v = validation_where([11, 22])  # each the trending source's #2: no order gets them first
    choice = choose_ranking(v, perfect([11, 22]), ["repurchase", "trending"], switch=1)
    assert not choice.bypassed
    assert choice.ranker_map == pytest.approx(1.0)
    assert choice.order_map == pytest.approx(0.5)  # trending first: second place for both
    assert choice.note.startswith("ranker: scored higher than every other order")


def test_a_blend_serves_where_a_source_first_and_the_ranker_after_beat_both():
    """One user bought 13 (the repurchase source's only candidate) and 12, which only the
    ranker puts near the top; but the ranker puts 13 last. Repurchase first, the ranker after,
    gets both first."""
    items = np.array([[10, 11, 12, 13]], np.int32)
    ranks = {
        "repurchase": np.array([[0, 0, 0, 1]], np.int16),
        "trending": np.array([[1, 2, 0, 0]], np.int16),
    }
    nan = np.full(items.shape, np.nan, np.float32)
    cs = CandidateSet(np.array([0]), items, ranks, {n: nan for n in ranks})
    rows, cols = np.nonzero(items >= 0)
    X = np.array([[2.0], [3.0], [4.0], [1.0]], np.float32)  # the ranker's score of each item
    y = np.isin(items[rows, cols], [13, 12]).astype(np.float32)
    tg = Targets(np.array([0], np.int32), np.array([0, 2]), np.array([12, 13], np.int32))
    v = ValidationRequests()
    assert v.takes(0, 4)
    v.add(cs, X, rows, cols, y, tg, np.random.default_rng(0))
    choice = choose_ranking(v, lambda X, users: X[:, 0], ["repurchase", "trending"], switch=0)
    assert choice.order == SourceOrder(("repurchase",), "ranker")
    assert not choice.bypassed  # the ranker is scored, after the repurchase candidates
    assert choice.ranker_map == pytest.approx(0.75)  # the ranker alone: 12 first, 13 last
    assert choice.order_map == pytest.approx(1.0)  # the blend: 13, then 12
    assert choice.note.startswith("blend: repurchase > ranker (ranker alone 0.7500)")
    ranked = np.full(items.shape, -np.inf)
    ranked[rows, cols] = X[:, 0]
    order = np.argsort(-choice.order.scores(cs, ranked), axis=1, kind="stable")
    assert np.take_along_axis(items, order, axis=1)[0].tolist() == [13, 12, 11, 10]


def test_the_standard_error_of_a_paired_difference():
    v = validation_where([13, 21])
    v.buyers, v.hits = 4, 2  # two more buyers without a hit: a difference of 0 each
    a, b = np.array([1.0, 0.5]), np.array([0.5, 0.5])
    d = np.array([0.5, 0.0, 0.0, 0.0])
    assert v.mean(a - b) == pytest.approx(d.mean())
    assert v.difference_se(a, b) == pytest.approx(d.std(ddof=1) / 2)


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


def served_equal(ws):
    """A pipeline fitted on the workspace's data and the one `build` saved, loaded, serve the
    same; returns the loaded one and some recent buyers' ids."""
    data = load_dataset(OfflineStore(ws))
    fitted = Pipeline.from_config(ws).fit(data, end_of_data(data))
    loaded = Pipeline.from_config(ws).load()
    assert loaded.ranking_ is not None and fitted.ranking_ is not None
    assert loaded.ranking_.order == fitted.ranking_.order
    users = data.user_ids[np.unique(data.interactions.user[-500:])[:20]]
    for user in users:
        assert fitted.recommend(user).item_ids == loaded.recommend(user).item_ids
    return loaded, users


def test_the_guard_serves_the_better_order_end_to_end(rebuying):
    ws, stdout = rebuying
    assert "bypassed: source order: repurchase" in stdout  # build says so
    manifest = json.loads((ws.root / "models" / "pipeline.json").read_text())
    ranking = manifest["ranking"]
    assert ranking["served"].startswith("source order: repurchase")
    scores = ranking["validation_map@12"]
    assert scores[ranking["served"]] > scores["ranker"]

    loaded, users = served_equal(ws)
    assert loaded.ranking_.bypassed
    assert loaded.funnel_.scorer is None  # a bypassed ranker is not even loaded to score
    for user in users:
        b = loaded.recommend(user)
        rank = next(s for s in b.trace if s["stage"] == "rank")
        assert rank["scorer"] == ranking["served"]
        assert rank["ranker"].startswith("bypassed")
        assert b.items[0].sources.get("repurchase") == 1  # repurchase's candidates first
    result = shortlist("--workspace", str(ws.root), "recommend", "--user", str(users[0]), "--trace")
    assert result.returncode == 0, result.stderr
    assert "bypassed: source order: repurchase" in " ".join(result.stdout.split())

    # with blends, the repurchase candidates first and the ranker after beat the order
    write(ws.root, "shortlist.toml", SETTINGS.replace("guard_blends = false", ""))
    result = shortlist("--workspace", str(ws.root), "train", "pipeline")
    assert result.returncode == 0, result.stderr
    assert "blend: repurchase > ranker" in result.stdout
    loaded, users = served_equal(ws)
    assert not loaded.ranking_.bypassed and loaded.funnel_.scorer is not None
    for user in users:
        b = loaded.recommend(user, explain=True)
        rank = next(s for s in b.trace if s["stage"] == "rank")
        assert rank["scorer"].startswith("blend: repurchase > ranker")
        assert b.items[0].sources.get("repurchase") == 1


def test_map_of_scores_an_order_over_every_buyer():
    v = validation_where([13, 21])
    assert v.map_of(lambda X: np.isin(X[:, 0], [13, 21]).astype(float)) == pytest.approx(1.0)
    # lowest item id first: 13 is user 0's 4th (AP 1/4), 21 user 1's 2nd (AP 1/2)
    assert v.map_of(lambda X: -X[:, 0]) == pytest.approx((1 / 4 + 1 / 2) / 2)
    choice = choose_ranking(v, lambda X, users: -X[:, 0], ["repurchase"], 2, blends=False)
    assert choice.ranker_map == pytest.approx(v.map_of(lambda X: -X[:, 0]))


NAMES = ["item", "user_purchases_all", "segment_share"]


def three_users(
    share_of_item, bought: tuple[int, ...] = (13, 23, 33)
) -> tuple[ValidationRequests, CandidateSet, tuple]:
    """Users 0 and 1 never bought, user 2 bought 5 items; each bought their candidate ending
    in 3 (13, 23, 33), which "the ranker" (lowest item first) puts last. Columns: NAMES."""
    items = np.array([[10, 11, 12, 13], [20, 21, 22, 23], [30, 31, 32, 33]], np.int32)
    ranks = np.tile(np.arange(1, 5, dtype=np.int16), (3, 1))
    cs = CandidateSet(np.array([0, 1, 2]), items, {"trending": ranks},
                      {"trending": np.full(items.shape, np.nan, np.float32)})  # fmt: skip
    rows, cols = np.nonzero(items >= 0)
    item = items[rows, cols]
    history = np.array([0.0, 0.0, 5.0])[rows]
    X = np.stack([item, history, share_of_item(item)], axis=1).astype(np.float32)
    y = np.isin(item, bought).astype(np.float32)
    tg = Targets(np.arange(3, dtype=np.int32), np.arange(4), np.array(bought, np.int32))
    v = ValidationRequests()
    assert v.takes(0, 4)
    v.add(cs, X, rows, cols, y, tg, np.random.default_rng(0))
    return v, cs, (X, rows, cols)


def lowest_first(X, users):
    return -X[:, 0]


def test_customers_who_never_bought_get_the_segment_order_where_it_wins_for_them():
    v, cs, (X, rows, cols) = three_users(lambda item: item % 10)  # x3 has the largest share
    choice = choose_ranking(v, lowest_first, ["trending"], 2, blends=False, names=NAMES)
    assert choice.order is None  # the ranker serves...
    assert choice.ranker_map == pytest.approx(0.25)  # ...each bought item 4th
    assert choice.new_customers == NewCustomerOrder()  # ...and new customers get their own
    assert "; customers who never bought: segment_share alone (1.0000 vs 0.2500, MAP@12 " in (
        choice.note
    )
    ranked = np.full(cs.items.shape, -np.inf)
    ranked[rows, cols] = lowest_first(X, None)
    scores = choice.new_customers.scores(NAMES, X, rows, cols, ranked)
    top = np.take_along_axis(cs.items, np.argsort(-scores, axis=1, kind="stable"), axis=1)
    assert top[:, 0].tolist() == [13, 23, 30]  # user 2 bought before: the ranker's order
    assert RankingChoice.from_dict(choice.to_dict()) == choice  # saved and loaded
    off = choice.without_guard()  # [ranking] guard = false: the ranker for everyone
    assert off.order is None and off.new_customers is None
    assert off.note.startswith("ranker: the guard is off ([ranking] guard); ranker: ")
    # without the columns (or judged on another feature set) nothing changes
    plain = choose_ranking(v, lowest_first, ["trending"], 2, blends=False)
    assert plain.new_customers is None and "never bought" not in plain.note


def test_customers_who_never_bought_keep_the_ranker_where_the_segment_order_does_not_win():
    v, _, _ = three_users(lambda item: -(item % 10))  # x3 has the smallest share: last again
    choice = choose_ranking(v, lowest_first, ["trending"], 0, blends=False, names=NAMES)
    assert choice.order is None and choice.new_customers is None
    assert "; customers who never bought: as the others (segment_share alone 0.2500 vs " in (
        choice.note
    )
    assert RankingChoice.from_dict(choice.to_dict()).new_customers is None


def test_a_bypassed_ranker_leaves_new_customers_to_the_source_order():
    # each bought trending's first (x0), which "the ranker" (highest first) puts last; the
    # segment order would get it first for the new customers, but the source order serves all
    v, _, _ = three_users(lambda item: -(item % 10), bought=(10, 20, 30))
    choice = choose_ranking(v, lambda X, users: X[:, 0], ["trending"], 0, blends=False, names=NAMES)
    assert choice.bypassed and choice.new_customers is None
    assert "never bought" not in choice.note
