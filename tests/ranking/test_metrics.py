"""Metrics on hand-computed cases, arithmetic written out."""

from __future__ import annotations

import math

import pytest

from shortlist.ranking.metrics import average_precision, coverage, ndcg, recall


def test_ap_worked_example():
    # hits at ranks 1 and 3: (1/1 + 2/3) / min(2, 12)
    assert average_precision([1, 9, 2], {1, 2}) == pytest.approx((1 + 2 / 3) / 2)


def test_ap_divides_by_min_relevant_and_k():
    # 20 items bought, all 12 predictions hit: sum of P(i) = 12, divided by min(20, 12) = 12
    assert average_precision(list(range(12)), set(range(20))) == 1.0
    # 3 bought, 1 hit at rank 2: (1/2) / 3
    assert average_precision([9, 1, 8], {1, 2, 3}) == pytest.approx(1 / 6)


def test_ap_ignores_hits_after_k():
    assert average_precision([9] * 12 + [1], {1}) == 0.0
    assert average_precision(list(range(100, 111)) + [1], {1}, k=12) == pytest.approx(1 / 12)


def test_ap_duplicates_earn_nothing_but_use_a_slot():
    # [1, 1, 2]: hit at rank 1, repeat at rank 2, hit at rank 3 -> (1/1 + 2/3) / 2
    assert average_precision([1, 1, 2], {1, 2}) == pytest.approx((1 + 2 / 3) / 2)


def test_empty_cases():
    assert average_precision([], {1}) == 0.0
    assert average_precision([1, 2], set()) == 0.0
    assert recall([], {1}) == 0.0 and ndcg([], {1}) == 0.0
    assert coverage([], 10) == 0.0


def test_recall_and_ndcg():
    assert recall([1, 9, 2], {1, 2, 3}) == pytest.approx(2 / 3)
    assert recall([1, 1, 1], {1, 2}) == pytest.approx(1 / 2)
    # hit at rank 2 only, one relevant: (1/log2 3) / (1/log2 2)
    assert ndcg([9, 1], {1}) == pytest.approx(1 / math.log2(3))
    # perfect ordering of 2 relevant items
    assert ndcg([1, 2, 9], {1, 2}) == pytest.approx(1.0)


def test_coverage_ignores_padding():
    assert coverage([[0, 1, -1], [1, 2, -1]], 10) == pytest.approx(3 / 10)
