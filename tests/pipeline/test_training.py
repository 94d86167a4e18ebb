"""The funnel's training loop: the ranking set of past periods and the LightGBM ranker on it,
on generated data (tiny scale, real engines)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from shortlist.config import Settings
from shortlist.data.arrays import US_PER_DAY, TrainData, load_dataset, targets
from shortlist.data.generator import generate
from shortlist.data.ingest import ingest
from shortlist.data.offline import OfflineStore
from shortlist.pipeline.training import (
    FOLDS,
    Plan,
    build_ranking_set,
    cross_fitted,
    ranking_features,
)
from shortlist.ranking.dataset import RankingSet
from shortlist.ranking.ranker import LightGBMRanker, group_map
from shortlist.retrieval.sources import (
    CoPurchaseSource,
    RepurchaseSource,
    SameGroupSource,
    TrendingSource,
    TwoTowerSource,
)
from shortlist.retrieval.stage import Retrieval
from shortlist.workspace import open_workspace

NEGATIVES = 30
WEEK = 7 * US_PER_DAY


def retrieval() -> Retrieval:
    return Retrieval(
        [
            (RepurchaseSource(), 30),
            (SameGroupSource(), 30),
            (CoPurchaseSource(), 50),
            (TrendingSource(), 50),
        ]
    )


def features(data):
    """The ranking features as of any cutoff, from the feature groups (default settings)."""
    return ranking_features(data, Settings())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ranking")
    generate(root / "src", scale="tiny", seed=2)
    ws = open_workspace(root / "ws")
    ingest(ws, root / "src", format="hm")
    return load_dataset(OfflineStore(ws))


@pytest.fixture(scope="module")
def cutoff(data) -> int:
    return (int(data.interactions.time[-1]) // WEEK) * WEEK


@pytest.fixture(scope="module")
def ranking_set(data, cutoff) -> RankingSet:
    return build_ranking_set(
        data, cutoff, retrieval(), features(data), Plan(5, 7), negatives_per_user=NEGATIVES
    )


def groups(rs: RankingSet):
    start = 0
    for size in rs.group.tolist():
        yield slice(start, start + size)
        start += size


def test_every_group_has_a_purchase_and_few_negatives(ranking_set):
    rs = ranking_set
    assert sorted(set(rs.period.tolist())) == [0, 1, 2, 3, 4]
    assert rs.group.sum() == len(rs.y) == len(rs.X)
    for g in groups(rs):
        assert rs.y[g].sum() >= 1
        assert (rs.y[g] == 0).sum() <= NEGATIVES


def test_labels_are_the_weeks_purchases(data, cutoff):
    rs = build_ranking_set(
        data, cutoff, retrieval(), features(data), Plan(2, 7), negatives_per_user=10_000
    )
    # with every negative kept, week 0's positives are exactly the retrieved purchases
    week_cut = cutoff - WEEK
    tg = targets(data.interactions.between(week_cut, cutoff))
    r = retrieval().fit(TrainData.before(data, week_cut))
    cs = r.candidates(tg.users.astype(np.int64))
    hits = sum(int(np.isin(tg.of(i), cs.items[i]).sum()) for i in range(len(tg.users)))
    assert rs.periods(np.array([0])).positives == hits > 0


def test_context_features_cannot_separate_labels_within_a_request(ranking_set):
    """The leakage guard: context (time of year) is the request's, for positives and negatives
    alike, so a model on context alone scores every candidate of a request the same."""
    rs = ranking_set
    assert "day_of_year" in rs.names
    j = rs.names.index("day_of_year")
    for g in groups(rs):
        assert np.all(rs.X[g, j] == rs.X[g.start, j])
    model = lgb.train(
        {"objective": "binary", "verbosity": -1, "num_threads": 1, "min_data_in_leaf": 5},
        lgb.Dataset(rs.X[:, [j]], rs.y),
        num_boost_round=20,
    )
    scores = model.predict(rs.X[:, [j]])
    for g in groups(rs):
        assert np.ptp(scores[g]) == 0.0


def test_ranker_beats_the_candidates_own_order_on_a_later_week(ranking_set, tmp_path):
    rs = ranking_set
    test, valid = rs.periods(np.array([0])), rs.periods(np.array([1]))
    train = rs.periods(np.array([2, 3, 4]))
    ranker = LightGBMRanker(objective="auto", max_rounds=200, threads=1).fit(train, valid)
    assert ranker.report_["objective"] in ("lambdarank", "binary")
    learned = group_map(ranker.predict(test.X), test.y, test.group)
    # the candidates' own order: the union's interleaving, i.e. row order within a group
    own = group_map(-np.arange(len(test.y), dtype=float), test.y, test.group)
    assert learned > own
    # saved as LightGBM text plus JSON, and loads back to the same scores
    ranker.save(tmp_path / "ranker")
    assert (tmp_path / "ranker" / "ranker.txt").read_text().startswith("tree")
    again = LightGBMRanker.load(tmp_path / "ranker")
    np.testing.assert_allclose(again.predict(test.X), ranker.predict(test.X))
    assert again.importance()[0][1] > 0


def test_group_map_by_hand():
    scores = np.array([0.9, 0.8, 0.1, 0.5, 0.4])
    y = np.array([0, 1, 1, 1, 0], dtype=float)
    # group 1: hits at ranks 2 and 3 -> (1/2 + 2/3) / 2; group 2: hit at rank 1 -> 1
    assert group_map(scores, y, np.array([3, 2])) == pytest.approx(((0.5 + 2 / 3) / 2 + 1) / 2)


@pytest.mark.parametrize("dropped", ["copurchase", "two_tower"])
def test_dropping_a_source_equals_building_without_it(data, cutoff, dropped):
    """What `pipeline_no_<source>` relies on (eval/pipeline_methods.py); the two-tower also
    takes away the similarity column it gives every candidate."""
    from shortlist.config import RetrievalSettings
    from shortlist.eval.pipeline_methods import without_source

    tiny = RetrievalSettings(dim=8, hidden=16, epochs=1, max_epochs=1, min_steps=0)

    def sources(without: str = "") -> Retrieval:
        made = [(RepurchaseSource(), 30), (SameGroupSource(), 30), (CoPurchaseSource(), 50),
                (TwoTowerSource(settings=tiny), 30), (TrendingSource(), 50)]  # fmt: skip
        return Retrieval([(s, k) for s, k in made if s.name != without])

    kw = dict(negatives_per_user=10_000)
    full_sources = sources()
    full = build_ranking_set(data, cutoff, full_sources, features(data), Plan(2, 7), **kw)
    assert "two_tower_similarity" in full.names
    dropped_set = without_source(
        full, dropped, full_sources.names, full_sources.columns_of(dropped)
    )
    direct = build_ranking_set(data, cutoff, sources(dropped), features(data), Plan(2, 7), **kw)
    assert dropped_set.names == direct.names
    assert dropped_set.group.tolist() == direct.group.tolist()
    # rows come in another order within a group (the union interleaves other sources)
    key = lambda rs: np.lexsort(np.nan_to_num(rs.X, nan=-1.0).T[::-1])  # noqa: E731
    np.testing.assert_array_equal(dropped_set.X[key(dropped_set)], direct.X[key(direct)])


def test_thinning_keeps_every_positive_and_the_same_negatives_per_request(ranking_set):
    from shortlist.ranking.dataset import MIN_NEGATIVES

    rs = ranking_set
    assert rs.thin(len(rs.y), np.random.default_rng(0)) is rs  # within budget: as it is
    budget = rs.positives + 25 * len(rs.group)
    thin = rs.thin(budget, np.random.default_rng(0))
    assert thin.positives == rs.positives and len(thin.y) <= budget
    assert thin.group.tolist() != rs.group.tolist() and len(thin.group) == len(rs.group)
    for g, h in zip(groups(rs), groups(thin), strict=True):
        negatives = int((rs.y[g] == 0).sum())
        assert int((thin.y[h] == 0).sum()) == min(negatives, max(25, MIN_NEGATIVES))


def test_feature_groups_computed_ahead_in_a_thread_give_the_same_set(data, cutoff, monkeypatch):
    """On small data the periods' feature groups are computed in a thread ahead of the loop
    (while the two-tower trains): all of them, or one period ahead on larger data; the ranking
    set is the same as computed one at a time, and each period's groups are asked for once,
    in order."""
    import shortlist.pipeline.training as training

    asked: list[int] = []
    groups_of = features(data)

    def counted(start: int):
        asked.append(start)
        return groups_of(start)

    def build():
        asked.clear()
        rs = build_ranking_set(
            data, cutoff, retrieval(), counted, Plan(4, 7), negatives_per_user=NEGATIVES
        )
        assert asked == [cutoff - (p + 1) * WEEK for p in range(4)]
        return rs

    assert training.prefetch_depth(len(data.interactions), 4) == 4  # tiny data: all ahead
    assert training.prefetch_depth(3_000_000, 4) == 1
    assert training.prefetch_depth(30_000_000, 4) == 0
    sets = {}
    for depth in (4, 1, 0):
        monkeypatch.setattr(training, "prefetch_depth", lambda rows, periods, d=depth: d)
        sets[depth] = build()
    for depth in (4, 1):
        for name in ("X", "y", "group", "period"):
            got, want = getattr(sets[depth], name), getattr(sets[0], name)
            assert np.array_equal(got, want, equal_nan=True), (depth, name)
        assert sets[depth].names == sets[0].names


def test_each_request_carries_its_user(ranking_set, data, cutoff):
    rs = ranking_set
    assert rs.user is not None and len(rs.user) == len(rs.group)
    for p in range(5):
        users = rs.user[rs.period == p]
        start = cutoff - (p + 1) * WEEK
        bought = targets(data.interactions.between(start, start + WEEK))
        assert len(users) and np.isin(users, bought.users).all()  # that period's buyers
        assert (np.diff(users) > 0).all()  # each once


class RecordingRanker(LightGBMRanker):
    """The real ranker, keeping what each cross-fitted judge learnt from and the judge."""

    def refit_held_out(self, rs, threads=None):
        judge = super().refit_held_out(rs, threads)
        latest = set((rs.user[rs.period == 0] % FOLDS).tolist())
        (k,) = set(range(FOLDS)) - latest  # the part this judge scores: none of it seen
        self.refits.append((k, rs, judge))  # list.append: safe from the judges' threads
        return judge


def test_the_guards_judge_never_scores_a_user_with_a_model_that_saw_them(ranking_set):
    rs = ranking_set
    train, valid = rs.split(1)
    ranker = RecordingRanker(objective="binary").fit(train, valid)
    ranker.refits = []
    judge = cross_fitted(ranker, rs, 1, Settings())
    assert len(ranker.refits) == FOLDS
    older = np.sort(rs.user[rs.period > 0])
    assert sorted(k for k, _, _ in ranker.refits) == list(range(FOLDS))
    for k, seen, _ in ranker.refits:
        latest = seen.user[seen.period == 0]
        # every older period, and the latest period's other users only
        assert (np.sort(seen.user[seen.period > 0]) == older).all()
        assert set(latest.tolist()) == {u for u in valid.user.tolist() if u % FOLDS != k}
    # each user is scored by the judge of their part
    users = valid.user[np.repeat(np.arange(len(valid.group)), valid.group)]
    scores = judge(valid.X, users)
    for k, _, fold_judge in ranker.refits:
        mine = users % FOLDS == k
        assert mine.any()
        assert np.array_equal(scores[mine], fold_judge(valid.X[mine]))
    # the judges learnt from more than the held-out ranker: their scores differ from it
    assert not np.allclose(scores, ranker.predict_held_out(valid.X))


@pytest.mark.parametrize("favoured", ["lambdarank", "binary"])
def test_the_held_out_requests_choose_the_objective(ranking_set, favoured):
    train, valid = ranking_set.split(1)
    seen = []

    def held_out(score):
        # each objective's booster scores the latest period: the favoured one is told best
        scores = score(valid.X)
        seen.append(scores)
        return 0.9 if len(seen) == 1 + ("lambdarank", "binary").index(favoured) else 0.1

    ranker = LightGBMRanker(objective="auto", max_rounds=50).fit(train, valid, held_out)
    assert ranker.report_["objective"] == favoured
    assert len(seen) == 2 and not np.allclose(seen[0], seen[1])  # two different boosters
    figures = ranker.report_["candidates"]
    assert {o: figures[o]["held_out_map@12"] for o in figures} == {
        "lambdarank": 0.9 if favoured == "lambdarank" else 0.1,
        "binary": 0.9 if favoured == "binary" else 0.1,
    }
    # one objective asked for: nothing to choose, the held-out requests are not scored
    seen.clear()
    LightGBMRanker(objective="binary", max_rounds=20).fit(train, valid, held_out)
    assert seen == []
