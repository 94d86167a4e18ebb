"""Ranking metrics at k, exactly as the H&M competition scores MAP@12.

All functions take one user's ranked prediction list and the set of items that user bought in
the target window, and return a float in [0, 1]; averages over users are the caller's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def _dedup(predicted: Sequence[int], k: int) -> list[int]:
    """The first k predictions with repeats dropped (a repeat can never earn a second hit).

    Slots held by repeats still count towards k, as in the competition's apk.
    """
    seen: set[int] = set()
    out = []
    for p in predicted[:k]:
        out.append(-1 if p in seen else p)
        seen.add(p)
    return out


def average_precision(predicted: Sequence[int], relevant: Iterable[int], k: int = 12) -> float:
    """AP@k = sum_{i<=k} P(i) * rel(i) / min(|relevant|, k).

    P(i) is the precision of the first i predictions and rel(i) is 1 when prediction i is
    relevant (and not a repeat). The denominator min(|relevant|, k), not |relevant|, is the H&M
    competition's choice: a user who bought 20 items can still reach 1.0 with 12 hits.
    Example: predicted [a, x, b], relevant {a, b}: (1/1 + 2/3) / min(2, 12) = 0.8333.
    An empty relevant set scores 0 (such users are not scored by the protocol anyway).
    """
    rel = set(relevant)
    if not rel:
        return 0.0
    hits, total = 0, 0.0
    for i, p in enumerate(_dedup(predicted, k), start=1):
        if p in rel:
            hits += 1
            total += hits / i
    return total / min(len(rel), k)


def recall(predicted: Sequence[int], relevant: Iterable[int], k: int = 12) -> float:
    """|top k ∩ relevant| / |relevant|: the share of bought items that were recommended.

    Example: predicted [a, x, b], relevant {a, b, c}: 2 / 3.
    """
    rel = set(relevant)
    if not rel:
        return 0.0
    return len(rel.intersection(predicted[:k])) / len(rel)


def ndcg(predicted: Sequence[int], relevant: Iterable[int], k: int = 12) -> float:
    """Binary-relevance NDCG@k: sum rel(i)/log2(i+1) over the ideal min(|relevant|, k) hits.

    Example: predicted [x, a], relevant {a}: (1/log2(3)) / (1/log2(2)) = 0.6309.
    """
    rel = set(relevant)
    if not rel:
        return 0.0
    dcg = sum(
        1.0 / math.log2(i + 1) for i, p in enumerate(_dedup(predicted, k), start=1) if p in rel
    )
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(rel), k) + 1))
    return dcg / ideal


def coverage(recommended: Iterable[Iterable[int]], n_items: int) -> float:
    """Share of the catalogue that appears in at least one user's list (padding -1 ignored)."""
    seen = {int(i) for items in recommended for i in items if i >= 0}
    return len(seen) / n_items if n_items else 0.0
