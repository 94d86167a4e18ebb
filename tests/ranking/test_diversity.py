"""Diversity re-rankers: exact orders on hand cases, their rules on random rows, the metrics."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from shortlist.errors import ConfigError
from shortlist.ranking.diversity import (
    MMR,
    Diversifier,
    ExpectedRevenue,
    MaxPerValue,
    RoundRobin,
    distinct_values,
    intra_list_diversity,
)

A, B, C = 0, 1, 2


def rows(*lists: list[int], width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Candidate rows in the given (score) order, padded with -1; scores descending."""
    width = width or max(len(r) for r in lists)
    items = np.full((len(lists), width), -1, np.int32)
    scores = np.full((len(lists), width), np.nan, np.float32)
    for i, r in enumerate(lists):
        items[i, : len(r)] = r
        scores[i, : len(r)] = np.arange(len(r), 0, -1)
    return items, scores


def random_rows(rng, n=300, m=40, n_items=200, pad=True):
    """Rows of distinct items with descending scores and random padding lengths."""
    items = np.stack([rng.choice(n_items, m, replace=False) for _ in range(n)]).astype(np.int32)
    scores = np.sort(rng.normal(size=(n, m)).astype(np.float32), axis=1)[:, ::-1].copy()
    if pad:
        lengths = rng.integers(0, m + 1, n)
        pad = np.arange(m) >= lengths[:, None]
        items[pad], scores[pad] = -1, np.nan
    return items, scores


# pure-Python statements of each rule, to compare the vectorised code against


def round_robin_ref(row: list[int], values) -> list[int]:
    groups: dict[int, list[int]] = {}
    for item in row:  # dicts keep insertion order: values by their best item
        groups.setdefault(int(values[item]), []).append(item)
    out, depth = [], 0
    while len(out) < len(row):
        out += [g[depth] for g in groups.values() if depth < len(g)]
        depth += 1
    return out


def max_per_value_ref(row: list[int], values, limit: int, k: int) -> list[int]:
    top, skipped, count = [], [], Counter()
    for item in row:
        if len(top) < k and count[values[item]] < limit:
            top.append(item)
            count[values[item]] += 1
        else:
            skipped.append(item)
    return top + skipped


def mmr_ref(row: list[int], scores: list[float], vectors, lam: float, k: int) -> list[int]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    lo, hi = min(scores), max(scores)
    rel = {i: (s - lo) / (hi - lo) if hi > lo else 1.0 for i, s in zip(row, scores, strict=True)}
    picked = [row[0]]
    while len(picked) < min(k, len(row)):
        rest = [i for i in row if i not in picked]
        penalty = {i: max(float(unit[i] @ unit[j]) for j in picked) for i in rest}
        picked.append(max(rest, key=lambda i: lam * rel[i] - (1 - lam) * penalty[i]))
    return picked + [i for i in row if i not in picked]


def real(row: np.ndarray) -> list[int]:
    return [int(i) for i in row if i >= 0]


# RoundRobin


def test_round_robin_takes_each_values_best_in_order_of_best_score():
    values = np.array([A, A, B, A, C, B, -1, -1])
    items, scores = rows([0, 1, 2, 3, 4, 5, 6, 7], [6, 7, 3, 0], width=9)
    out = RoundRobin(values).rerank(items, scores, k=12)
    # row 0: best of A, B, C, unknown; then the second best of A, B, unknown; then A's third
    assert out[0].tolist() == [0, 2, 4, 6, 1, 5, 7, 3, -1]
    # row 1: unknown is a value of its own, here the leading one
    assert out[1].tolist() == [6, 3, 7, 0, -1, -1, -1, -1, -1]
    assert out.dtype == np.int32 and out.shape == items.shape


def test_round_robin_follows_scores_not_columns():
    values = np.array([A, A, B])
    items = np.array([[1, 2, 0]], np.int32)
    scores = np.array([[0.5, 0.1, 0.9]], np.float32)  # best first: 0 (A), 1 (A), 2 (B)
    assert RoundRobin(values).rerank(items, scores, k=3).tolist() == [[0, 2, 1]]


def test_round_robin_matches_the_rule_and_spreads_values_on_random_rows():
    rng = np.random.default_rng(1)
    values = rng.integers(-1, 6, 200)
    items, scores = random_rows(rng)
    out = RoundRobin(values).rerank(items, scores, k=12)
    for row_in, row_out in zip(items, out, strict=True):
        assert real(row_out) == round_robin_ref(real(row_in), values)
        n_values = len({int(values[i]) for i in real(row_in)})
        head = real(row_out)[: min(12, n_values)]
        assert len({int(values[i]) for i in head}) == len(head)


# MaxPerValue


def test_max_per_value_skips_over_the_cap_and_puts_the_skipped_after_the_top_k():
    values = np.array([A, A, A, B, A, C])
    items, scores = rows([0, 1, 2, 3, 4, 5])
    out = MaxPerValue(values, limit=2).rerank(items, scores, k=4)
    assert out[0].tolist() == [0, 1, 3, 5, 2, 4]


def test_max_per_value_tops_up_a_row_with_too_few_values():
    values = np.array([A, A, B, A, A])
    items, scores = rows([0, 1, 2, 3, 4], [4, 3, 1], width=6)
    out = MaxPerValue(values, limit=1).rerank(items, scores, k=3)
    # only 0 (A) and 2 (B) pass the cap; the best skipped item (1) fills the third slot
    assert out[0].tolist() == [0, 2, 1, 3, 4, -1]
    assert out[1].tolist() == [4, 3, 1, -1, -1, -1]  # all A: the cap cannot hold, row kept


def test_max_per_value_caps_every_value_on_random_rows():
    rng = np.random.default_rng(2)
    values = rng.integers(-1, 8, 200)
    items, scores = random_rows(rng)
    k, limit = 12, 2
    out = MaxPerValue(values, limit=limit).rerank(items, scores, k=k)
    checked = 0
    for row_in, row_out in zip(items, out, strict=True):
        assert real(row_out) == max_per_value_ref(real(row_in), values, limit, k)
        counts = Counter(int(values[i]) for i in real(row_in))
        if sum(min(c, limit) for c in counts.values()) >= k:  # the cap can be met
            top = Counter(int(values[i]) for i in real(row_out)[:k])
            assert max(top.values()) <= limit and sum(top.values()) == k
            checked += 1
    assert checked > 100


# MMR


def test_mmr_lambda_one_keeps_the_score_order():
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(200, 8))
    items, scores = random_rows(rng)
    out = MMR(vectors, lambda_=1.0).rerank(items, scores, k=12)
    np.testing.assert_array_equal(out, items)


def test_mmr_lambda_zero_picks_the_dissimilar_items():
    x, y, z = np.eye(3)
    vectors = np.array([x, 3 * x, x + 0.01 * y, y, z])  # 0, 1, 2 point the same way
    items, scores = rows([0, 1, 2, 3, 4])
    out = MMR(vectors, lambda_=0.0).rerank(items, scores, k=3)
    # first the top item, then the two orthogonal ones (3 before 4: equal penalty, higher
    # score), then the near-copies in score order
    assert out[0].tolist() == [0, 3, 4, 1, 2]


@pytest.mark.parametrize(("lam", "expected"), [(0.7, [0, 2, 1, 3]), (0.8, [0, 1, 2, 3])])
def test_mmr_trades_relevance_for_dissimilarity_by_lambda(lam, expected):
    x, y, z = np.eye(3)
    vectors = np.array([x, 5 * x, y, z])  # cosine, not dot: 1 is a copy of 0
    items = np.array([[0, 1, 2, 3]], np.int32)
    scores = np.array([[1.0, 0.9, 0.5, 0.0]], np.float32)  # relevance 1, .9, .5, 0
    # second pick: item 1 gains lam*.9 - (1-lam)*1, item 2 gains lam*.5
    # lam .7: .33 < .35 -> 2; lam .8: .52 > .40 -> 1
    assert MMR(vectors, lambda_=lam).rerank(items, scores, k=3)[0].tolist() == expected


def test_mmr_matches_the_rule_on_random_rows():
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(200, 6))
    items, scores = random_rows(rng, n=60, m=25)
    out = MMR(vectors, lambda_=0.5).rerank(items, scores, k=6)
    for i in range(len(items)):
        row = real(items[i])
        expected = mmr_ref(row, scores[i, : len(row)].tolist(), vectors, 0.5, 6) if row else []
        assert real(out[i]) == expected


# ExpectedRevenue


def test_expected_revenue_orders_by_probability_times_price():
    price = np.array([1.0, 10.0, 30.0, np.nan, 2.0])  # unknown -> the median, 6 (mean 10.75)
    items = np.array([[0, 3, 1, 2, -1]], np.int32)
    scores = np.array([[2.0, 0.5, 0.0, -1.0, np.nan]], np.float32)
    # sigmoid * price: 0: .88 * 1, 3: .62 * 6 = 3.7, 1: .5 * 10 = 5, 2: .27 * 30 = 8.1
    out = ExpectedRevenue(price).rerank(items, scores, k=3)
    assert out[0].tolist() == [2, 1, 3, 0, -1]


def test_expected_revenue_orders_logits_far_below_zero_correctly():
    price = np.array([1.0, 1e5])
    items = np.array([[0, 1]], np.int32)
    # sigmoid underflows to 0 for both, yet e^-800 < e^-810 * 1e5
    scores = np.array([[-800.0, -810.0]])
    assert ExpectedRevenue(price).rerank(items, scores, k=2).tolist() == [[1, 0]]


def test_expected_revenue_with_probabilities():
    price = np.array([10.0, 1.0, 4.0])
    items = np.array([[1, 2, 0]], np.int32)
    scores = np.array([[0.9, 0.5, 0.05]])  # .9, 2.0, .5
    out = ExpectedRevenue(price, scores_are_logits=False).rerank(items, scores, k=3)
    assert out.tolist() == [[2, 1, 0]]
    with pytest.raises(ValueError, match="scores must be >= 0"):
        ExpectedRevenue(price, scores_are_logits=False).rerank(items, -scores, k=3)


# every re-ranker


def rerankers(n_items: int, rng) -> list[Diversifier]:
    values = rng.integers(-1, 5, n_items)
    return [
        RoundRobin(values),
        MaxPerValue(values, limit=1),
        MMR(rng.normal(size=(n_items, 4)).astype(np.float32), lambda_=0.3),
        ExpectedRevenue(rng.lognormal(size=n_items)),
    ]


def test_every_reranker_keeps_each_rows_items_and_padding_last():
    rng = np.random.default_rng(5)
    items, scores = random_rows(rng)
    for r in rerankers(200, rng):
        assert isinstance(r, Diversifier) and r.name
        out = r.rerank(items, scores, k=12)
        assert out.shape == items.shape and out.dtype == np.int32, r.name
        for row_in, row_out in zip(items, out, strict=True):
            assert sorted(row_in.tolist()) == sorted(row_out.tolist()), r.name
            n_real = int((row_out >= 0).sum())
            assert (row_out[:n_real] >= 0).all() and (row_out[n_real:] == -1).all(), r.name


def test_a_batch_gives_the_same_rows_as_one_request_at_a_time():
    rng = np.random.default_rng(6)
    items, scores = random_rows(rng, n=50)
    for r in rerankers(200, rng):
        batch = r.rerank(items, scores, k=5)
        for i in range(len(items)):
            single = r.rerank(items[i : i + 1], scores[i : i + 1], k=5)
            np.testing.assert_array_equal(single[0], batch[i], err_msg=r.name)


def test_edge_rows_pass_through():
    rng = np.random.default_rng(7)
    for r in rerankers(10, rng):
        empty = np.zeros((0, 5), np.int32)
        assert r.rerank(empty, empty.astype(np.float32), k=3).shape == (0, 5)
        items = np.array([[-1, -1, -1], [4, -1, -1]], np.int32)
        scores = np.array([[np.nan] * 3, [0.3, np.nan, np.nan]], np.float32)
        assert r.rerank(items, scores, k=12).tolist() == items.tolist(), r.name


def test_an_item_with_a_nan_score_ranks_last_among_the_real_items():
    items = np.array([[0, 1, 2, -1]], np.int32)
    scores = np.array([[np.nan, 1.0, 0.5, np.nan]], np.float32)
    for r in [
        RoundRobin(np.arange(3)),
        MaxPerValue(np.arange(3), limit=1),
        MMR(np.eye(3), lambda_=1.0),
        ExpectedRevenue(np.ones(3)),
    ]:
        assert r.rerank(items, scores, k=2).tolist() == [[1, 2, 0, -1]], r.name


# metrics


def test_intra_list_diversity_on_hand_cases():
    x, y = np.eye(2)
    vectors = np.array([x, 2 * x, y])
    recs = np.array([[0, 1, 2, -1], [0, -1, -1, -1], [2, 0, -1, -1]])
    # row 0: pairs (0,1) 0, (0,2) 1, (1,2) 1 -> 2/3; row 1 has one item: ignored; row 2: 1
    assert intra_list_diversity(recs, vectors=vectors) == pytest.approx((2 / 3 + 1) / 2)
    assert intra_list_diversity(recs, vectors=vectors, k=2) == pytest.approx((0 + 1) / 2)
    values = np.array([A, A, B])
    assert intra_list_diversity(recs, values=values) == pytest.approx((2 / 3 + 1) / 2)
    assert np.isnan(intra_list_diversity(recs[1:2], values=values))


def test_distinct_values_on_hand_cases():
    values = np.array([A, A, B, -1, C])
    recs = np.array([[0, 1, 2, 3], [4, 4, -1, -1], [-1, -1, -1, -1]])
    assert distinct_values(recs, values, k=12) == pytest.approx((3 + 1 + 0) / 3)
    assert distinct_values(recs, values, k=2) == pytest.approx((1 + 1 + 0) / 3)


def test_round_robin_raises_distinct_values_over_the_score_order():
    rng = np.random.default_rng(8)
    values = rng.integers(0, 6, 200)
    items, scores = random_rows(rng, pad=False)
    before = distinct_values(items, values)
    after = distinct_values(RoundRobin(values).rerank(items, scores, k=12), values)
    most = np.mean([len(set(values[row].tolist())) for row in items])  # at most 6 < k
    assert after == pytest.approx(most) and before < most - 0.5


# errors


@pytest.mark.parametrize(
    "build",
    [
        lambda: MaxPerValue(np.array([0, 1]), limit=0),
        lambda: MaxPerValue(np.array([0, 1]), limit=1.5),
        lambda: RoundRobin(np.array([0.0, 1.0])),  # codes must be integers
        lambda: RoundRobin(np.array([[0, 1]])),
        lambda: RoundRobin(np.array([0, -2])),
        lambda: MMR(np.ones((3, 2)), lambda_=1.5),
        lambda: MMR(np.ones((3, 2)), lambda_=-0.1),
        lambda: MMR(np.ones(3)),
        lambda: MMR(np.array([[1.0, np.nan]])),
        lambda: ExpectedRevenue(np.array([1.0, -2.0])),
        lambda: ExpectedRevenue(np.array([[1.0]])),
        lambda: ExpectedRevenue(np.array(["a", "b"])),
        lambda: ExpectedRevenue(np.array([np.nan])),
        lambda: ExpectedRevenue(np.array([1.0]), scores_are_logits="yes"),
    ],
)
def test_bad_settings_raise_config_error(build):
    with pytest.raises(ConfigError):
        build()


def test_bad_requests_raise_value_error():
    rr = RoundRobin(np.array([0, 1, 2]))
    items, scores = rows([0, 1, 2])
    with pytest.raises(ValueError, match="item idx 7 is beyond the 3 items"):
        rr.rerank(np.array([[0, 7]]), np.array([[1.0, 0.5]]), k=2)
    with pytest.raises(ValueError, match="item idx 5 is beyond"):
        intra_list_diversity(np.array([[0, 5]]), values=np.array([0, 1]))
    with pytest.raises(ValueError, match="k must be"):
        rr.rerank(items, scores, k=0)
    with pytest.raises(ValueError, match="scores have shape"):
        rr.rerank(items, scores[:, :2], k=2)
    with pytest.raises(ValueError, match="integer matrix"):
        rr.rerank(items[0], scores[0], k=2)
    with pytest.raises(ValueError, match="exactly one"):
        intra_list_diversity(items)
