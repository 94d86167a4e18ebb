"""The ranking training set: past weeks' candidates, labelled by what each user bought that week.

For every week W before the cutoff, the retrieval stage and the features are fitted on the
data before W only, the candidates of the users who bought in W are labelled by those
purchases, and users none of whose purchases were retrieved are dropped (they teach a ranker
nothing). Negatives are down-sampled per week; positives are all kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shortlist.data.arrays import US_PER_DAY, Dataset, TrainData
from shortlist.eval.protocol import Targets, targets
from shortlist.progress import track
from shortlist.ranking.features import RankingFeatures
from shortlist.retrieval.sources import TwoTowerSource
from shortlist.retrieval.stage import CandidateSet, Retrieval

WEEK = 7 * US_PER_DAY
CHUNK = 4096  # users featurized at once: bounds memory to a few hundred MB per chunk


@dataclass(frozen=True)
class RankingSet:
    """Rows grouped by request (one user in one week), groups contiguous."""

    X: np.ndarray  # (rows, features) float32
    y: np.ndarray  # (rows,) float32, 1 = bought that week
    group: np.ndarray  # (groups,) rows per group, in row order
    week: np.ndarray  # (groups,) 0 = the latest week before the cutoff, 1 = the one before...
    names: list[str]
    categorical: list[str]

    def weeks(self, keep: np.ndarray) -> RankingSet:
        """The groups whose week is in `keep`."""
        mask = np.isin(self.week, keep)
        row_mask = np.repeat(mask, self.group)
        return RankingSet(
            self.X[row_mask],
            self.y[row_mask],
            self.group[mask],
            self.week[mask],
            self.names,
            self.categorical,
        )

    @property
    def positives(self) -> int:
        return int(self.y.sum())


def two_tower_of(retrieval: Retrieval) -> TwoTowerSource | None:
    for source, _ in retrieval.sources:
        if isinstance(source, TwoTowerSource):
            return source
    return None


def featurize(
    cs: CandidateSet, features: RankingFeatures, retrieval: Retrieval
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature rows for a candidate set (with the two-tower similarity when one is used)."""
    tt = two_tower_of(retrieval)
    sim = tt.similarity(cs.users, cs.items) if tt is not None else None
    return features.transform(cs, sim)


def labels(tg: Targets, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """1.0 where the candidate at (row, item) was bought by tg.users[row] in the window."""
    owner = np.repeat(np.arange(len(tg.users), dtype=np.int64), np.diff(tg.indptr))
    bought = (owner << 32) | tg.items.astype(np.int64)
    return np.isin((rows.astype(np.int64) << 32) | items.astype(np.int64), bought).astype(
        np.float32
    )


def build_ranking_set(
    data: Dataset,
    cutoff: int,
    retrieval: Retrieval,
    make_features: Callable[[], RankingFeatures],
    *,
    weeks: int,
    max_weeks: int,
    min_positive_users: int,
    negatives_per_user: int,
    users_per_week: int = 0,
    seed: int = 0,
) -> RankingSet:
    """Weeks ending at `cutoff`, newest first (how many: `plan_weeks`).

    The retrieval serves every week: sources refit per week; a two-tower source is trained
    once, before the oldest week, and frozen (see TwoTowerSource), so it stays usable after.
    """
    rng = np.random.default_rng(seed)
    planned = plan_weeks(data, cutoff, weeks, max_weeks, min_positive_users, users_per_week)
    tt = two_tower_of(retrieval)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]] = []
    names: list[str] = []
    categorical: list[str] = []
    if tt is not None and planned:
        tt.frozen = True
        tt.fit(TrainData.before(data, cutoff - planned * WEEK))
    with track("Ranking set", total=planned) as advance:
        for w in range(planned):
            week_cut = cutoff - (w + 1) * WEEK
            train = TrainData.before(data, week_cut)
            tg = targets(data.interactions.between(week_cut, week_cut + WEEK))
            if users_per_week and len(tg.users) > users_per_week:
                tg = _subset(tg, np.sort(rng.choice(len(tg.users), users_per_week, replace=False)))
            if len(tg.users) == 0:
                advance(1)
                continue
            retrieval.fit(train)
            features = make_features().fit(train)
            names = features.feature_names(retrieval.names, tt is not None)
            categorical = features.categorical_
            for lo in range(0, len(tg.users), CHUNK):
                part = _subset(tg, np.arange(lo, min(lo + CHUNK, len(tg.users))))
                cs = retrieval.candidates(part.users.astype(np.int64))
                X, rows, cols = featurize(cs, features, retrieval)
                y = labels(part, rows, cs.items[rows, cols])
                X, y, group = _sample(X, y, rows, negatives_per_user, rng)
                parts.append((X, y, group, w))
            advance(1)
    if not parts:
        return RankingSet(
            np.zeros((0, len(names)), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            names,
            categorical,
        )
    return RankingSet(
        np.vstack([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
        np.concatenate([np.full(len(p[2]), p[3]) for p in parts]),
        names,
        categorical,
    )


def _subset(tg: Targets, rows: np.ndarray) -> Targets:
    """The targets of some of the window's users (rows into tg.users, sorted)."""
    starts, ends = tg.indptr[rows], tg.indptr[rows + 1]
    items = np.concatenate([tg.items[a:b] for a, b in zip(starts, ends, strict=True)] or [[]])
    indptr = np.concatenate([[0], np.cumsum(ends - starts)])
    return Targets(tg.users[rows], indptr, items.astype(np.int32))


HIT_RATE = 0.25  # assumed share of a week's buyers with a purchase among their candidates


def plan_weeks(
    data: Dataset,
    cutoff: int,
    weeks: int,
    max_weeks: int,
    min_positive_users: int,
    users_per_week: int = 0,
) -> int:
    """How many weeks before `cutoff` to use: at least `weeks`, more on thin data until about
    `min_positive_users` useful groups are expected, never more than the history allows."""
    first = int(data.interactions.time[0])
    usable = max(0, min(max_weeks, (cutoff - first) // WEEK - 1))
    recent = data.interactions.between(cutoff - 4 * WEEK, cutoff)
    buyers_per_week = max(1.0, len(np.unique(recent.user)) / 4)
    if users_per_week:
        buyers_per_week = min(buyers_per_week, users_per_week)
    needed = int(np.ceil(min_positive_users / (HIT_RATE * buyers_per_week)))
    return int(min(usable, max(weeks, needed)))


def _sample(
    X: np.ndarray, y: np.ndarray, rows: np.ndarray, negatives: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Groups with a positive only; within them all positives and up to `negatives` random
    negatives (kept in their candidate order)."""
    pos_per_row = np.bincount(rows, weights=y)
    keep_group = pos_per_row[rows] > 0
    noise = rng.random(len(y))
    noise[y > 0] = -1.0  # positives first in the draw: always kept
    order = np.lexsort((noise, rows))
    sorted_rows = rows[order]
    starts = np.searchsorted(sorted_rows, sorted_rows, side="left")
    rank_in_row = np.arange(len(order)) - starts
    chosen = np.zeros(len(y), bool)
    chosen[order] = rank_in_row < negatives + pos_per_row[sorted_rows]
    keep = keep_group & chosen
    _, group = np.unique(rows[keep], return_counts=True)
    return X[keep], y[keep], group.astype(np.int64)
