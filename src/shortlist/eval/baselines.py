"""The baselines every funnel stage must beat, as methods with one interface.

A method is fitted on the interactions before a cutoff and then ranks k items for any users.
Every method fills unused slots with what was most bought in the last week, so methods differ
only where they know something more than popularity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Self

import numpy as np
import scipy.sparse as sp

from shortlist.config import RetrievalSettings
from shortlist.data.arrays import Interactions, TrainData
from shortlist.features.buckets import age_bucket
from shortlist.resources import thread_count
from shortlist.retrieval.signals import basket_cooccurrence, decayed_matrix, top_items
from shortlist.retrieval.sources import TwoTowerSource


class Recommender(Protocol):
    """fit on the past, then rank: recommend returns (len(users), k) item ids, -1 padded."""

    name: str

    def fit(self, data: TrainData) -> Self: ...

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray: ...


def trending(data: TrainData, k: int, days: float = 7) -> np.ndarray:
    """Most bought in the last `days`, topped up from longer windows if too few items sold."""
    out: list[int] = []
    for window in (days, 4 * days, None):
        inter = data.last_days(window) if window else data.interactions
        out += [i for i in top_items(inter, data.n_items, k) if i not in set(out)]
        if len(out) >= k:
            break
    return np.asarray(out[:k], dtype=np.int32)


CHUNK = 2048  # users per sparse product: bounds memory when score rows are long


def fill(recs: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Replace -1 slots, in order, with fallback items not already in the row."""
    out = recs.copy()
    for row in out:
        missing = np.flatnonzero(row < 0)
        if len(missing):
            extra = fallback[~np.isin(fallback, row)][: len(missing)]
            row[missing[: len(extra)]] = extra
    return out


def top_k_rows(scores: sp.csr_matrix, k: int) -> np.ndarray:
    """Per row of a sparse score matrix, the k best columns (ties by column id), -1 padded."""
    out = np.full((scores.shape[0], k), -1, dtype=np.int32)
    for r in range(scores.shape[0]):
        lo, hi = scores.indptr[r], scores.indptr[r + 1]
        if lo == hi:
            continue
        cols, vals = scores.indices[lo:hi], scores.data[lo:hi]
        best = np.lexsort((cols, -vals))[:k]
        out[r, : len(best)] = cols[best]
    return out


@dataclass
class Popular:
    """The k items most bought in the last week before the cutoff, for everyone."""

    days: float = 7
    name: str = "popular"
    items_: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))

    def fit(self, data: TrainData) -> Self:
        self.items_ = trending(data, 100, self.days)
        return self

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        row = np.full(k, -1, np.int32)
        row[: min(k, len(self.items_))] = self.items_[:k]
        return np.tile(row, (len(users), 1))


@dataclass
class PopularByAge:
    """Last week's most bought within each age bucket; unknown ages get the global list."""

    days: float = 7
    name: str = "popular_by_age"
    global_: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    by_bucket_: dict[int, np.ndarray] = field(default_factory=dict)
    bucket_: np.ndarray | None = None

    def fit(self, data: TrainData) -> Self:
        self.global_ = trending(data, 100, self.days)
        self.by_bucket_ = {}
        if data.user_age is None:
            self.bucket_ = None
            return self
        self.bucket_ = age_bucket(data.user_age)
        recent = data.last_days(self.days)
        buyer_bucket = self.bucket_[recent.user]
        for b in np.unique(self.bucket_[self.bucket_ >= 0]):
            mask = buyer_bucket == b
            sub = Interactions(
                recent.user[mask], recent.item[mask], recent.time[mask], recent.quantity[mask]
            )
            own = top_items(sub, data.n_items, 100)
            self.by_bucket_[int(b)] = np.concatenate(
                [own, self.global_[~np.isin(self.global_, own)]]
            )
        return self

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        out = np.full((len(users), k), -1, np.int32)
        buckets = self.bucket_[users] if self.bucket_ is not None else np.full(len(users), -1)
        for b in np.unique(buckets):
            items = self.by_bucket_.get(int(b), self.global_)[:k]
            out[np.flatnonzero(buckets == b), : len(items)] = items
        return out


@dataclass
class RepurchaseTrending:
    """The user's own past purchases, recent and frequent first, then last week's trending."""

    half_life_days: float = 30
    name: str = "repurchase_trending"
    scores_: sp.csr_matrix | None = None
    trending_: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))

    def fit(self, data: TrainData) -> Self:
        self.scores_ = decayed_matrix(
            data.interactions, data.cutoff, data.n_users, data.n_items, self.half_life_days
        )
        self.trending_ = trending(data, 100)
        return self

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        assert self.scores_ is not None, "fit first"
        return fill(top_k_rows(self.scores_[users], k), self.trending_)


@dataclass
class CoPurchaseBaseline:
    """Items bought in the same basket (user and day) as the user's recent purchases.

    Co-occurrence counts come from the last `basket_days` of baskets; a user's seeds are their
    purchases weighted by recency. Seeds themselves are not recommended again (that is what
    repurchase does), so this baseline measures what baskets alone reveal.
    """

    basket_days: float = 56
    half_life_days: float = 14
    name: str = "copurchase"
    cooc_: sp.csr_matrix | None = None
    seeds_: sp.csr_matrix | None = None
    trending_: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))

    def fit(self, data: TrainData) -> Self:
        self.cooc_ = basket_cooccurrence(data.last_days(self.basket_days), data.n_items)
        self.seeds_ = decayed_matrix(
            data.interactions, data.cutoff, data.n_users, data.n_items, self.half_life_days
        )
        self.trending_ = trending(data, 100)
        return self

    def scores(self, users: np.ndarray) -> sp.csr_matrix:
        """Co-occurrence scores of `users` (a chunk: rows can hold thousands of items each)."""
        assert self.cooc_ is not None and self.seeds_ is not None, "fit first"
        seeds = self.seeds_[users]
        scores = (seeds @ self.cooc_).tocsr()
        # drop the seeds themselves: elementwise, keep scores where the user has no purchase
        scores = (scores - scores.multiply(seeds > 0)).tocsr()
        scores.eliminate_zeros()
        return scores

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        parts = [
            top_k_rows(self.scores(users[lo : lo + CHUNK]), k) for lo in range(0, len(users), CHUNK)
        ]
        recs = np.vstack(parts) if parts else np.full((0, k), -1, np.int32)
        return fill(recs, self.trending_)


@dataclass
class ALS:
    """Implicit-feedback matrix factorisation (the `implicit` package), the usual first try.

    Trained on the last `weeks` of purchases (units as confidence); users without purchases
    in that span get trending items. Already bought items are not filtered: people rebuy.
    """

    factors: int = 64
    iterations: int = 15
    regularization: float = 0.05
    alpha: float = 10.0
    weeks: float = 12
    seed: int = 0
    name: str = "als"
    model_: object | None = None
    matrix_: sp.csr_matrix | None = None
    trending_: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))

    def fit(self, data: TrainData) -> Self:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        recent = data.last_days(7 * self.weeks)
        self.matrix_ = sp.csr_matrix(
            (recent.quantity.astype(np.float32), (recent.user, recent.item)),
            shape=(data.n_users, data.n_items),
        )
        # implicit parallelises itself; a multi-threaded BLAS underneath only fights it (and
        # implicit checks for that when the model is built, so build it inside the limit too).
        with threadpool_limits(1, "blas"):
            self.model_ = AlternatingLeastSquares(
                factors=self.factors,
                iterations=self.iterations,
                regularization=self.regularization,
                alpha=self.alpha,
                random_state=self.seed,
                calculate_training_loss=False,
                num_threads=thread_count(),
            )
            self.model_.fit(self.matrix_, show_progress=False)  # type: ignore[attr-defined]
        self.trending_ = trending(data, 100)
        return self

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        assert self.model_ is not None and self.matrix_ is not None, "fit first"
        out = np.full((len(users), k), -1, np.int32)
        known = np.diff(self.matrix_.indptr)[users] > 0
        if known.any():
            ids, _ = self.model_.recommend(  # type: ignore[attr-defined]
                users[known], self.matrix_[users[known]], N=k, filter_already_liked_items=False
            )
            out[known, : ids.shape[1]] = ids
        return fill(out, self.trending_)


@dataclass
class TwoTowerNearest:
    """The two-tower model's nearest items alone, no popularity fill.

    Not a baseline to beat but a measure of the retrieval model, trained per window with the
    workspace's [retrieval] settings and searched exactly (the index's own recall against exact
    search is the index benchmark's business); `source` may be a window's two-tower already
    trained.
    """

    settings: RetrievalSettings | None = None
    source: TwoTowerSource | None = None
    name: str = "two_tower"

    def fit(self, data: TrainData) -> Self:
        self.source = (self.source or TwoTowerSource(settings=self.settings, exact=True)).fit(data)
        return self

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        assert self.source is not None, "fit first"
        return self.source.candidates(users, k).items


BASELINES = {
    "popular": Popular,
    "popular_by_age": PopularByAge,
    "repurchase_trending": RepurchaseTrending,
    "copurchase": CoPurchaseBaseline,
    "als": ALS,
}
