"""Candidate sources on hand-made histories, the union's bookkeeping, and cold start."""

from __future__ import annotations

import numpy as np
import pytest

from shortlist.data.arrays import Dataset, TrainData
from shortlist.eval.baselines import CoPurchaseBaseline
from shortlist.retrieval.sources import (
    CoPurchaseSource,
    LiveSignals,
    RepurchaseSource,
    SameGroupSource,
    TrendingSource,
    union,
)
from tests.eval.test_baselines import history


def with_dataset(data: TrainData, **roles) -> TrainData:
    ds = Dataset(data.interactions, data.n_users, data.n_items, data.user_age, **roles)
    return TrainData(data.interactions, data.cutoff, data.n_users, data.n_items, data.user_age, ds)


def test_repurchase_scores_recent_units_higher():
    data = history([(0, 1, 10, 1), (0, 2, 95, 1), (0, 3, 95, 4)])
    items, scores, _ = RepurchaseSource().fit(data).candidates(np.array([0, 1]), 3)
    assert items[0].tolist() == [3, 2, 1]
    assert scores[0, 0] > scores[0, 1] > scores[0, 2] > 0
    assert items[1].tolist() == [-1, -1, -1] and np.isnan(scores[1]).all()


def test_same_group_proposes_other_variants_not_the_bought_one():
    group = np.array([0, 0, 0, 1, 1] + [2] * 15, np.int32)  # items 0-2: one product
    data = with_dataset(history([(0, 0, 95, 1), (1, 2, 99, 3), (2, 1, 99, 1)]), item_group=group)
    items, _, _ = SameGroupSource().fit(data).candidates(np.array([0]), 5)
    # the other two variants of item 0's group, the one selling more first
    assert items[0].tolist() == [2, 1, -1, -1, -1]


def test_same_group_without_the_role_proposes_nothing():
    data = with_dataset(history([(0, 0, 95, 1)]))
    items, _, _ = SameGroupSource().fit(data).candidates(np.array([0]), 3)
    assert (items == -1).all()


def test_trending_by_segment_and_cold_users():
    region = np.array([0, 0, 1, 1, -1] + [0] * 5, np.int32)
    data = with_dataset(
        history([(0, 5, 99, 3), (1, 5, 99, 1), (2, 7, 99, 2), (3, 8, 99, 1)]), user_region=region
    )
    items, _, _ = TrendingSource(segment="region").fit(data).candidates(np.array([9, 2, 4]), 3)
    assert items[0].tolist() == [5, 7, 8]  # region 0: its own top item first
    assert items[1].tolist() == [7, 8, 5]  # region 1
    assert items[2].tolist() == [5, 7, 8]  # no region, no history: global trending


def test_copurchase_source_matches_baskets():
    data = history(
        [
            (1, 1, 90, 1),
            (1, 2, 90, 1),
            (2, 1, 91, 1),
            (2, 3, 91, 1),
            (3, 1, 92, 1),
            (3, 2, 92, 1),
            (0, 1, 98, 1),
        ]
    )
    items, scores, _ = CoPurchaseSource().fit(data).candidates(np.array([0]), 3)
    assert items[0].tolist() == [2, 3, -1]
    assert scores[0, 0] > scores[0, 1]


def test_union_interleaves_by_rank_and_keeps_every_source_rank():
    a = (np.array([[1, 2, 3]], np.int32), None)
    b = (np.array([[2, 4, 1]], np.int32), None)
    items, ranks = union({"a": a, "b": b}, 4)  # type: ignore[dict-item]
    assert items.tolist() == [[1, 2, 4, 3]]
    assert ranks["a"].tolist() == [[1, 2, 0, 3]]
    assert ranks["b"].tolist() == [[3, 1, 2, 0]]
    small, _ = union({"a": a, "b": b}, 2)  # type: ignore[dict-item]
    assert small.tolist() == [[1, 2]]


def _union_by_hand(results, budget):
    """union, one entry at a time: rank 1 of every source, then rank 2, ..."""
    n = next(iter(results.values()))[0].shape[0]
    items = np.full((n, budget), -1)
    ranks = {name: np.zeros((n, budget), int) for name in results}
    depth = max(c.shape[1] for c, _ in results.values())
    for row in range(n):
        slot: dict[int, int] = {}
        for d in range(depth):
            for name, (cand, _) in results.items():
                item = int(cand[row, d]) if d < cand.shape[1] else -1
                if item < 0:
                    continue
                if item not in slot and len(slot) < budget:
                    slot[item] = len(slot)
                    items[row, slot[item]] = item
                if item in slot and ranks[name][row, slot[item]] == 0:
                    ranks[name][row, slot[item]] = d + 1
    return items, ranks


@pytest.mark.parametrize("budget", [3, 40, 400])
def test_union_equals_the_entry_by_entry_definition(budget):
    """Many users in chunks, sources of other depths, padding anywhere, and a source that
    proposes an item twice (it keeps its best rank)."""
    rng = np.random.default_rng(budget)
    results = {}
    for name, k in (("a", 5), ("b", 30), ("c", 12)):
        cand = rng.integers(0, 60, (23, k)).astype(np.int32)
        cand[rng.random(cand.shape) < 0.25] = -1
        results[name] = (cand, None)
    items, ranks = union(results, budget, chunk=5)  # type: ignore[arg-type]
    want_items, want_ranks = _union_by_hand(results, budget)
    assert (items == want_items).all()
    for name in results:
        assert (ranks[name] == want_ranks[name]).all(), name
    assert (items >= 0).sum() >= 23 * min(budget, 3)  # not a vacuous comparison


def test_copurchase_source_exact_mode_equals_the_baseline_scores():
    rng = np.random.default_rng(0)
    rows = [
        (int(u), int(i), int(d), 1)
        for u, i, d in zip(
            rng.integers(0, 40, 600),
            rng.integers(0, 30, 600),
            rng.integers(40, 100, 600),
            strict=True,
        )
    ]
    data = history(rows, n_users=40, n_items=30)
    users = np.arange(40)
    exact = CoPurchaseSource(neighbours=0, max_seeds=0).fit(data)
    scores = CoPurchaseBaseline().fit(data).scores(users).toarray()  # the exact scores
    items, values, _ = exact.candidates(users, 10)
    for u in users:
        got = items[u][items[u] >= 0]
        order = np.lexsort((np.arange(scores.shape[1]), -scores[u]))
        want = order[scores[u][order] > 0][:10]
        assert got.tolist() == want.tolist()
        assert np.allclose(values[u][: len(got)], scores[u][got])
    # bounded: every seed keeps 3 neighbours and every user 2 seeds; still no seed proposed
    bounded = CoPurchaseSource(neighbours=3, max_seeds=2).fit(data)
    assert (np.diff(bounded.neighbours_.indptr) <= 3).all()
    assert (np.diff(bounded.weights_.indptr) <= 2).all()
    proposed, _, _ = bounded.candidates(users, 10)
    for u in users:
        bought = set(bounded.bought_[u].indices.tolist())
        assert not bought & set(proposed[u][proposed[u] >= 0].tolist())


def live(per_user: list[list[tuple[int, float, float]]], sold=None) -> LiveSignals:
    """Signals from (item, days before the cutoff, units) per user."""
    cols = [[np.array([p[k] for p in purchases]) for purchases in per_user] for k in range(3)]
    return LiveSignals(*(tuple(c) for c in cols), sold=sold)


def test_sources_take_the_purchases_recorded_since_the_cutoff():
    data = history(
        [(1, 1, 90, 1), (1, 2, 90, 1), (2, 1, 91, 1), (2, 3, 91, 1), (0, 4, 98, 1)]
        + [(3, 5, 99, 2)]
    )
    users = np.array([0, 3])
    nothing = live([[], []])
    signals = live([[(1, -0.5, 2.0)], []])  # user 0 bought item 1 half a day after the cutoff
    rep = RepurchaseSource().fit(data)
    unchanged = rep.candidates(users, 3, live=nothing)[0]
    assert unchanged.tolist() == rep.candidates(users, 3)[0].tolist()
    items, scores, _ = rep.candidates(users, 3, live=signals)
    assert items[0].tolist() == [1, 4, -1] and scores[0, 0] == 2.0  # 2 units at weight 1
    cop = CoPurchaseSource().fit(data)
    assert cop.candidates(users, 3)[0][0].tolist() == [-1, -1, -1]  # item 4: never co-bought
    items, _, _ = cop.candidates(users, 3, live=signals)
    assert items[0].tolist() == [2, 3, -1]  # item 1's neighbours, item 1 itself excluded
    assert items[1].tolist() == cop.candidates(users, 3)[0][1].tolist()  # others as before
    trend = TrendingSource().fit(data)
    before = trend.candidates(users, 2)[0][0].tolist()
    sold = (np.array([2, 3]), np.array([1.0, 5.0]))  # item 3 sold 5 units since the cutoff
    items, scores, _ = trend.candidates(users, 2, live=live([[], []], sold))
    assert before[0] == 5 and items[0].tolist() == [3, 5] and scores[0].tolist() == [5.0, 2.0]
    segmented = TrendingSource(segment="age")  # segment lists keep the build's order
    assert segmented.fit(data).candidates(users, 2, live=live([[], []], sold))[0][0, 0] == 5
