"""The guard: the ranker serves unless held-out data says, beyond its noise, that a simple
order of the candidates does better.

On thin data (a few dozen buyers a week) a ranker learns noise, and a funnel can order its
candidates worse than "the customer's own purchases, most recent first". The pipeline must
never serve that. So, at fit time, the latest period before the cutoff (the ranker's
validation period, or the latest few together when one holds fewer than 300 buyers) is
scored as the evaluation scores a window: MAP@12 of every candidate's order. The ranker
(cross-fitted: each half of those periods' users scored by a ranker that learnt from the
older periods and the other half, see pipeline/training.py `cross_fitted`) is set against the
simple source orders (ranking/heuristics.py) and the blends (one source's candidates first,
the ranker after).
The ranker serves (refitted on every period) unless the best of those orders beats it by
more than `[ranking] guard_switch` standard errors of the paired per-buyer difference; then
that order serves. `build`'s output, the saved manifest and every trace say which and why.

Customers who never bought are judged apart as well: where the ranker (or blend) serves, the
held-out buyers with no purchase before their period are scored under the `segment_share`
order alone (the item's share of what the customer's segments buy, ranking/features.py),
which is all a segment can say of them; if it beats what serves for them by more than the
same margin, those customers get it (`NewCustomerOrder`), the others what serves. The ranker
learns segment features from periods with less history than the cutoff has (on 3 days of
data, from 1 and 2 days), and can weigh them below what they are worth when it serves.

Why a margin on the ranker's side: the best of some forty orders, picked on the same
buyers, scores above its true worth (the winner's curse), and the ranker judged here learnt
from less than the one that serves. With no margin (whichever scored highest
served), the served order did worse than the ranker alone on the scored week in 14 of the 18
measured windows where the two differed (README, Evaluation). The ranker's number of
rounds was chosen on the same periods (early stopping), which favours it slightly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from shortlist.data.arrays import Targets
from shortlist.data.candidates import CandidateSet
from shortlist.progress import track
from shortlist.ranking.heuristics import SourceOrder, source_orders
from shortlist.ranking.metrics import average_precision

K = 12
MAX_USERS = 2000  # validation requests kept (those with a purchase among their candidates)
MIN_BUYERS = 300  # the latest periods validate together until they hold this many buyers...
MAX_SHARE = 1 / 3  # ...but never more than this share of the periods (at least the latest)


@dataclass
class ValidationRequests:
    """The validation periods' requests with every candidate (not only sampled negatives): the
    candidate sets, their feature rows, and what each user bought. Only users with a purchase
    among their candidates are kept (at most MAX_USERS): the others score 0 whatever the
    order. `buyers` counts every buyer of the periods, so MAP figures are over all of them."""

    parts: list[tuple[CandidateSet, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]] = field(
        default_factory=list
    )  # (candidates, X, rows, cols, bought items per user)
    buyers: int = 0
    hits: int = 0  # buyers with a purchase among their candidates (`kept` of them are kept)
    kept: int = 0
    periods: int = 0  # the latest periods taken (the judge learnt from the others, cross-fitted)
    min_buyers: int = MIN_BUYERS

    def takes(self, period: int, periods: int) -> bool:
        """Whether `period` (0 = the latest) validates: the latest always; older ones while
        the buyers so far are fewer than `min_buyers` and a third of the periods is not
        reached. Periods are offered newest first."""
        if period != self.periods:
            return False
        take = period == 0 or (
            self.buyers < self.min_buyers and period < max(1, int(periods * MAX_SHARE))
        )
        self.periods += int(take)
        return take

    def add(
        self,
        cs: CandidateSet,
        X: np.ndarray,
        rows: np.ndarray,
        cols: np.ndarray,
        y: np.ndarray,
        tg: Targets,
        rng: np.random.Generator,
    ) -> None:
        """One chunk of the period's users (`tg` their targets, `y` the labels of X's rows)."""
        self.buyers += len(tg.users)
        hit = np.bincount(rows, weights=y, minlength=len(cs)) > 0
        users = np.flatnonzero(hit)
        self.hits += len(users)
        room = MAX_USERS - self.kept
        if room <= 0 or not len(users):
            return
        if len(users) > room:
            users = np.sort(rng.choice(users, room, replace=False))
        keep_rows = np.isin(rows, users)
        sub_rows = np.searchsorted(users, rows[keep_rows])
        sub = CandidateSet(
            cs.users[users],
            cs.items[users],
            {n: r[users] for n, r in cs.ranks.items()},
            {n: s[users] for n, s in cs.scores.items()},
            {},
            {n: c[users] for n, c in cs.columns.items()},
        )
        bought = [tg.of(int(u)) for u in users]
        self.parts.append((sub, X[keep_rows], sub_rows, cols[keep_rows], bought))
        self.kept += len(users)

    def aps(self, score: Any) -> np.ndarray:
        """AP@12 of each kept user under the order `score(part, cs, X, rows, cols) -> (n, m)`
        (`part`: the index of the chunk of requests)."""
        out: list[float] = []
        for part, (cs, X, rows, cols, bought) in enumerate(self.parts):
            scores = score(part, cs, X, rows, cols)
            top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
            items = np.take_along_axis(cs.items, top, axis=1)
            valid = np.take_along_axis(np.isfinite(scores), top, axis=1)
            for row, ok, rel in zip(items.tolist(), valid.tolist(), bought, strict=True):
                ranked = [i for i, v in zip(row, ok, strict=True) if v]
                out.append(average_precision(ranked, rel.tolist(), K))
        return np.asarray(out)

    def map_of(self, score: Any) -> float:
        """MAP@12 over every buyer of the candidates ordered by `score(X) -> scores`."""

        def order(part: int, cs: CandidateSet, X: np.ndarray, rows: Any, cols: Any) -> np.ndarray:
            scores = np.full(cs.items.shape, -np.inf)
            if len(X):
                scores[rows, cols] = score(X)
            return scores

        return self.mean(self.aps(order)) if self.parts else 0.0

    def mean(self, per_user: np.ndarray) -> float:
        """The mean over every buyer of a per-kept-user figure (0 for buyers without a hit;
        the kept users stand for all those with one)."""
        if not self.buyers or not len(per_user):
            return 0.0
        return float(per_user.mean()) * self.hits / self.buyers

    def difference_se(self, a: np.ndarray, b: np.ndarray) -> float:
        """Standard error of mean(a) - mean(b) over the buyers (paired, per user)."""
        if self.buyers < 2 or not len(a):
            return 0.0
        d = a - b
        mean, square = self.mean(d), self.mean(d**2)
        var = max(0.0, square - mean**2) * self.buyers / (self.buyers - 1)
        return float(np.sqrt(var / self.buyers))


@dataclass(frozen=True)
class NewCustomerOrder:
    """Customers with no purchase known (the `history` feature 0 or missing) ordered by the
    `by` feature alone, the others as before. Per user: every row of a request has the same
    user features. Items the feature does not know (NaN) come after the others."""

    by: str = "segment_share"
    history: str = "user_purchases_all"

    @property
    def name(self) -> str:
        return f"{self.by} for customers who never bought"

    def applies(self, names: Sequence[str]) -> bool:
        return self.by in names and self.history in names

    def new_rows(self, names: Sequence[str], X: np.ndarray) -> np.ndarray:
        """Whether each row's user has no purchase known."""
        return ~(X[:, list(names).index(self.history)] > 0)

    def scores(
        self,
        names: Sequence[str],
        X: np.ndarray,
        rows: np.ndarray,
        cols: np.ndarray,
        scores: np.ndarray,
    ) -> np.ndarray:
        """`scores` (n, m) with the new customers' candidates scored by the feature."""
        new = self.new_rows(names, X)
        if not new.any():
            return scores
        out = scores.copy()
        by = X[new, list(names).index(self.by)]
        out[rows[new], cols[new]] = np.where(np.isnan(by), -1.0, by)
        return out

    def to_dict(self) -> dict[str, str]:
        return {"by": self.by, "history": self.history}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> NewCustomerOrder:
        return cls(d["by"], d["history"])


@dataclass(frozen=True)
class RankingChoice:
    """What orders the candidates: the ranker, a blend, or a simple source order."""

    order: SourceOrder | None  # None: the ranker; a blend (order.needs_ranker) uses it too
    ranker_map: float  # MAP@12 on the validation periods of the ranker alone (`learnt`)
    order_map: float  # of the best other order (a simple source order or a blend)
    best_order: str  # its name
    buyers: int  # the validation periods' buyers
    note: str
    periods: int = 1  # the latest periods that validated
    learnt: str = "ranker"  # what `ranker_map` scores (manifests of before stop 25: a blend)
    new_customers: NewCustomerOrder | None = None  # their own order, when it won for them

    def without_guard(self) -> RankingChoice:
        """The ranker for everyone (`[ranking] guard = false`), what the guard found kept in
        the note."""
        if self.order is None and self.new_customers is None:
            return self
        note = f"ranker: the guard is off ([ranking] guard); {self.note}"
        return replace(self, order=None, new_customers=None, note=note)

    @property
    def bypassed(self) -> bool:
        """Whether the ranker is not scored at all (a source order serves alone)."""
        return self.order is not None and not self.order.needs_ranker

    def to_dict(self) -> dict[str, Any]:
        return {
            "served": self.order.name if self.order is not None else "ranker",
            "chain": list(self.order.chain) if self.order is not None else None,
            "then": self.order.then if self.order is not None else None,
            "validation_map@12": {self.learnt: self.ranker_map, self.best_order: self.order_map},
            "learnt": self.learnt,
            "validation_buyers": self.buyers,
            "validation_periods": self.periods,
            "note": self.note,
            "new_customers": self.new_customers.to_dict() if self.new_customers else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RankingChoice:
        order = (
            SourceOrder(tuple(d["chain"]), d.get("then") or "union")
            if d.get("chain") is not None
            else None
        )
        scores = dict(d["validation_map@12"])
        learnt = d.get("learnt", "ranker")
        ranker_map = float(scores.pop(learnt))
        best, order_map = next(iter(scores.items())) if scores else ("-", 0.0)
        new = d.get("new_customers")
        return cls(
            order,
            ranker_map,
            float(order_map),
            best,
            int(d["validation_buyers"]),
            d["note"],
            int(d.get("validation_periods", 1)),
            learnt,
            NewCustomerOrder.from_dict(new) if new else None,
        )


def choose_ranking(
    validation: ValidationRequests,
    ranker_scores: Any,
    sources: list[str],
    switch: float,
    blends: bool = True,
    names: Sequence[str] = (),
) -> RankingChoice:
    """What serves after the ranker, judged on the validation requests: the ranker, unless
    another order (a simple source order or, with `blends`, a source's candidates first and
    the ranker ordering the rest) scores higher by more than `switch` standard errors of the
    paired per-buyer difference (0: higher at all); then the best-scoring such order.

    `ranker_scores(X, users) -> scores` is the ranker judged (pipeline/training.py,
    `cross_fitted`), `users` each row's user. `names`: the columns of X; with the ones
    `NewCustomerOrder` reads, customers who never bought are judged apart too (see above).
    """
    orders = source_orders(sources, ranker=blends)
    with track(
        f"Guard: the ranker against {len(orders)} source orders and blends", total=len(orders) + 1
    ) as advance:
        ranked = []
        for cs, X, rows, cols, _ in validation.parts:
            scores = np.full(cs.items.shape, -np.inf)
            if len(X):
                scores[rows, cols] = ranker_scores(X, cs.users[rows].astype(np.int64))
            ranked.append(scores)
        ranker = validation.aps(lambda i, *_: ranked[i])
        advance(1)
        others: dict[SourceOrder, np.ndarray] = {}
        for o in orders:
            others[o] = validation.aps(lambda i, cs, *_, o=o: o.scores(cs, ranked[i]))
            advance(1)
    best = max(others, key=lambda o: validation.mean(others[o]))  # first of equals: simplest
    ranker_map, best_map = validation.mean(ranker), validation.mean(others[best])
    se = validation.difference_se(others[best], ranker)
    n = validation.periods
    where = f"the latest {n} periods" if n > 1 else "the latest period"
    figures = f"MAP@12 over {validation.buyers} buyers, standard error of the difference {se:.4f}"
    lead = best_map - ranker_map
    if lead > switch * se:
        beat = (
            f"{best.name} (ranker alone {ranker_map:.4f}): beat the ranker alone"
            if best.needs_ranker
            else f"bypassed: {best.name} beat the ranker"
        )
        note = (
            f"{beat} by more than {switch:g} standard error(s) on {where} "
            f"({best_map:.4f} vs {ranker_map:.4f}, {figures})"
        )
        choice = RankingChoice(best, ranker_map, best_map, best.name, validation.buyers, note, n)
        return _with_new_customers(choice, validation, ranked, names, switch)
    if lead > 0:
        note = (
            f"ranker: {best.name} scored higher on {where}, but by no more than {switch:g} "
            f"standard error(s) ({best_map:.4f} vs {ranker_map:.4f}, {figures})"
        )
    else:
        than = "higher than" if lead < 0 else "as high as"
        note = (
            f"ranker: scored {than} every other order on {where}, the best of them "
            f"{best.name} ({ranker_map:.4f} vs {best_map:.4f}, {figures})"
        )
    choice = RankingChoice(None, ranker_map, best_map, best.name, validation.buyers, note, n)
    return _with_new_customers(choice, validation, ranked, names, switch)


def _with_new_customers(
    choice: RankingChoice,
    validation: ValidationRequests,
    ranked: list[np.ndarray],
    names: Sequence[str],
    switch: float,
) -> RankingChoice:
    """`choice` with the new customers' own order when, for the held-out buyers who never
    bought (those with a purchase among their candidates), it beats what `choice` serves them
    by more than `switch` standard errors of the paired difference (and by anything at 0)."""
    cold = NewCustomerOrder()
    if choice.bypassed or not cold.applies(names) or not validation.parts:
        return choice
    order = choice.order

    def served(cs: CandidateSet, scores: np.ndarray) -> np.ndarray:
        return scores if order is None else order.scores(cs, scores)

    new_users = []
    for cs, X, rows, _cols, _ in validation.parts:
        flag = np.zeros(len(cs), bool)
        flag[rows] = cold.new_rows(names, X)
        new_users.append(flag)
    new = np.concatenate(new_users)
    if new.sum() < 2:
        return choice
    now = validation.aps(lambda i, cs, *_: served(cs, ranked[i]))[new]
    alone = validation.aps(
        lambda i, cs, X, rows, cols: served(cs, cold.scores(names, X, rows, cols, ranked[i]))
    )[new]
    d = alone - now
    se = float(d.std(ddof=1) / np.sqrt(len(d)))
    lead = float(d.mean())
    figures = (
        f"{alone.mean():.4f} vs {now.mean():.4f}, MAP@12 over the {len(d)} held-out buyers who "
        f"never bought and have a purchase among their candidates, standard error of the "
        f"difference {se:.4f}"
    )
    if lead > switch * se and lead > 0:
        note = f"{choice.note}; customers who never bought: {cold.by} alone ({figures})"
        return replace(choice, new_customers=cold, note=note)
    note = f"{choice.note}; customers who never bought: as the others ({cold.by} alone {figures})"
    return replace(choice, note=note)
