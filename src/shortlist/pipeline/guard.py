"""The guard: serve the ranker only where held-out data says it beats the simple orderings.

On thin data (a few dozen buyers a week) a ranker learns noise, and a funnel can order its
candidates worse than "the customer's own purchases, most recent first". The pipeline must
never serve that. So, at fit time, the latest period before the cutoff (the ranker's
validation period, or the latest few together when one holds fewer than 300 buyers) is
scored as the evaluation scores a window: MAP@12 of the ranker's order of every candidate
against each source order (ranking/heuristics.py). The ranker judged there learnt from the
older periods only. The pipeline serves the ranker (refitted on every period) only when it
scores at least as high as the best source order; otherwise it serves that order, and says
so in `build`'s output, the saved manifest and every trace.

Known bias: the ranker's number of rounds was chosen on the same periods (early stopping),
which favours it slightly; choosing the best of several orders on them favours the orders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shortlist.data.arrays import Targets
from shortlist.data.candidates import CandidateSet
from shortlist.ranking.heuristics import SourceOrder, source_orders
from shortlist.ranking.metrics import average_precision

K = 12
MAX_USERS = 2000  # validation requests kept (those with a purchase among their candidates)
MIN_BUYERS = 300  # the latest periods validate together until they hold this many buyers...
MAX_SHARE = 1 / 3  # ...but never more than this share of the periods (at least the latest)


@dataclass
class ValidationRequests:
    """The latest period's requests with every candidate (not only sampled negatives): the
    candidate sets, their feature rows, and what each user bought in the period. Only users
    with a purchase among their candidates are kept: the others score 0 whatever the order.
    `buyers` counts every buyer of the period, so MAP figures are over all of them."""

    parts: list[tuple[CandidateSet, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]] = field(
        default_factory=list
    )  # (candidates, X, rows, cols, bought items per user)
    buyers: int = 0
    kept: int = 0
    periods: int = 0  # the latest periods taken: the ranker judged here learnt from the others
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

    def map_of(self, score: Any) -> float:
        """MAP@12 over the period's buyers of the order `score(part) -> (n, m)` gives."""
        if not self.buyers:
            return 0.0
        total = 0.0
        for cs, X, rows, cols, bought in self.parts:
            scores = score(cs, X, rows, cols)
            top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
            items = np.take_along_axis(cs.items, top, axis=1)
            valid = np.take_along_axis(np.isfinite(scores), top, axis=1)
            for row, ok, rel in zip(items.tolist(), valid.tolist(), bought, strict=True):
                ranked = [i for i, v in zip(row, ok, strict=True) if v]
                total += average_precision(ranked, rel.tolist(), K)
        return total / self.buyers


@dataclass(frozen=True)
class RankingChoice:
    """What the pipeline serves after the ranker: the ranker, or a source order."""

    order: SourceOrder | None  # None: the ranker
    ranker_map: float  # MAP@12 on the validation period
    order_map: float  # of the best source order
    best_order: str
    buyers: int  # the validation periods' buyers
    note: str
    periods: int = 1  # the latest periods that validated

    @property
    def bypassed(self) -> bool:
        return self.order is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "served": self.order.name if self.order is not None else "ranker",
            "chain": list(self.order.chain) if self.order is not None else None,
            "validation_map@12": {"ranker": self.ranker_map, self.best_order: self.order_map},
            "validation_buyers": self.buyers,
            "validation_periods": self.periods,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RankingChoice:
        order = SourceOrder(tuple(d["chain"])) if d.get("chain") is not None else None
        scores = dict(d["validation_map@12"])
        ranker_map = float(scores.pop("ranker"))
        best, order_map = next(iter(scores.items())) if scores else ("-", 0.0)
        return cls(
            order,
            ranker_map,
            float(order_map),
            best,
            int(d["validation_buyers"]),
            d["note"],
            int(d.get("validation_periods", 1)),
        )


def choose_ranking(
    validation: ValidationRequests, ranker_scores: Any, sources: list[str]
) -> RankingChoice:
    """The ranker, unless a source order scores higher on the validation requests.

    `ranker_scores(X) -> scores` is the ranker that learnt from the older periods only.
    """

    def by_ranker(cs: CandidateSet, X: np.ndarray, rows: np.ndarray, cols: np.ndarray):
        scores = np.full(cs.items.shape, -np.inf)
        if len(X):
            scores[rows, cols] = ranker_scores(X)
        return scores

    ranker_map = validation.map_of(by_ranker)
    orders = {
        o: validation.map_of(lambda cs, *_, o=o: o.scores(cs)) for o in source_orders(sources)
    }
    best = max(orders, key=lambda o: orders[o])  # first of equals: the simplest
    order_map = orders[best]
    n = validation.periods
    where = f"the latest {n} periods" if n > 1 else "the latest period"
    over = f"MAP@12 over {validation.buyers} buyers"
    if order_map > ranker_map:
        figures = f"({order_map:.4f} vs {ranker_map:.4f}, {over})"
        note = f"bypassed: {best.name} scored higher on {where} {figures}"
        return RankingChoice(best, ranker_map, order_map, best.name, validation.buyers, note, n)
    note = (
        f"ranker: scored at least as high as the best simple order, {best.name}, on {where} "
        f"({ranker_map:.4f} vs {order_map:.4f}, {over})"
    )
    return RankingChoice(None, ranker_map, order_map, best.name, validation.buyers, note, n)
