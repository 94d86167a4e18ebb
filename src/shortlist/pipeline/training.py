"""The funnel's training loop: the ranker learns from past periods' candidates, as retrieved.

This is where one stage is fitted against another: for every period before the cutoff, the
retrieval stage is fitted on the data before the period, its candidates for the period's
buyers become feature rows, and what they bought labels them. Users none of whose purchases
were retrieved are dropped (they teach a ranker nothing); negatives are sampled per user.

A period is a week, or fewer whole days when the history is too short for `weeks` + 1 weeks
(a shop that just started): the ranker then learns from days, not weeks.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from shortlist.config import Settings
from shortlist.data.arrays import US_PER_DAY, Dataset, Targets, TrainData, from_us, targets
from shortlist.features.affinity import eligible_attributes
from shortlist.features.base import FeatureOptions
from shortlist.features.engine import OfflineTables, connect
from shortlist.features.materialize import write_groups
from shortlist.pipeline.guard import RankingChoice, ValidationRequests, choose_ranking
from shortlist.progress import track
from shortlist.ranking.dataset import RankingSet, labels, sample_negatives
from shortlist.ranking.features import RANKING_GROUPS, RankingFeatures, group_features
from shortlist.ranking.ranker import LightGBMRanker
from shortlist.resources import memory_share, side_by_side, thread_count
from shortlist.retrieval.stage import Retrieval
from shortlist.workspace import Workspace

WEEK_DAYS = 7
CHUNK = 4096  # users featurized at once: bounds memory to a few hundred MB per chunk
HIT_RATE = 0.25  # assumed share of a period's buyers with a purchase among their candidates


@dataclass(frozen=True)
class Plan:
    """How many periods before the cutoff the ranking set spans, and how long each is."""

    periods: int
    days: int

    @property
    def length(self) -> int:
        """One period in microseconds."""
        return self.days * US_PER_DAY


def plan_periods(data: Dataset, cutoff: int, settings: Settings) -> Plan:
    """Weeks when the history holds `weeks` + 1 of them, else periods of whole days (at least
    one) so that `weeks` of them and one more fit. Then how many: at least `weeks`, more on
    thin data until about `min_positive_users` useful requests are expected, up to
    `max_weeks`, and never more than the history allows (one period of history is kept
    before the oldest)."""
    r = settings.ranking
    first = int(data.interactions.time[0]) if len(data.interactions) else cutoff
    span_days = max(0, (cutoff - first) // US_PER_DAY)
    days = int(np.clip(span_days // (r.weeks + 1), 1, WEEK_DAYS))
    length = days * US_PER_DAY
    usable = max(0, min(max(r.weeks, r.max_weeks), span_days // days - 1))
    recent = data.interactions.between(cutoff - 4 * length, cutoff)
    buyers = max(1.0, len(np.unique(recent.user)) / 4)
    if r.users_per_week:
        buyers = min(buyers, r.users_per_week)
    needed = int(np.ceil(r.min_positive_users / (HIT_RATE * buyers)))
    return Plan(int(min(usable, max(r.weeks, needed))), days)


def build_ranking_set(
    data: Dataset,
    cutoff: int,
    retrieval: Retrieval,
    features_at: Callable[[int], RankingFeatures],
    plan: Plan,
    *,
    negatives_per_user: int,
    users_per_period: int = 0,
    seed: int = 0,
    validation: ValidationRequests | None = None,
) -> RankingSet:
    """The periods of `plan` ending at `cutoff`, newest first.

    `validation`, when given, receives the latest period's requests with all their candidates
    (what the guard judges the ranker on, see pipeline/guard.py).

    The retrieval serves every period: sources refit per period; a two-tower source is first
    fitted (trained) before the oldest period and then only moves its cutoff (see
    TwoTowerSource), so it stays usable at the cutoff, unchanged.
    """
    rng = np.random.default_rng(seed)
    parts: list[RankingSet] = []
    names: list[str] = []
    categorical: list[str] = []
    tt = retrieval.two_tower
    starts = [cutoff - (p + 1) * plan.length for p in range(plan.periods)]
    ahead = prefetch_depth(len(data.interactions), len(starts))
    with _Prefetch(features_at, starts, ahead) as groups_at:
        if tt is not None and plan.periods:
            tt.fit(TrainData.before(data, cutoff - plan.periods * plan.length))
        with track("Ranking set", total=plan.periods) as advance:
            for p, start in enumerate(starts):
                train = TrainData.before(data, start)
                tg = targets(data.interactions.between(start, start + plan.length))
                if users_per_period and len(tg.users) > users_per_period:
                    tg = _subset(tg, np.sort(rng.choice(len(tg.users), users_per_period, False)))
                if len(tg.users) == 0:
                    groups_at.skip(p)
                    advance(1)
                    continue
                retrieval.fit(train)
                features = None  # the previous period's, released (see _Prefetch)
                features = groups_at(p)  # the feature groups as of the period's start
                _add_period(
                    parts, retrieval, features, tg, p, plan, validation, negatives_per_user, rng
                )
                names, categorical = parts[-1].names, parts[-1].categorical
                advance(1)
    if not parts:
        empty = np.zeros(0, np.int64)
        return RankingSet(
            np.zeros((0, len(names)), np.float32), empty.astype(np.float32), empty, empty,
            names, categorical,
        )  # fmt: skip
    return RankingSet.concat(parts)


def _add_period(
    parts: list[RankingSet],
    retrieval: Retrieval,
    features: RankingFeatures,
    tg: Targets,
    p: int,
    plan: Plan,
    validation: ValidationRequests | None,
    negatives_per_user: int,
    rng: np.random.Generator,
) -> None:
    """Period `p`'s requests (its buyers' candidates, features, labels; negatives sampled),
    appended to `parts` by chunks of users; the latest periods' also to `validation`."""
    validates = validation is not None and validation.takes(p, plan.periods)
    for lo in range(0, len(tg.users), CHUNK):
        part = _subset(tg, np.arange(lo, min(lo + CHUNK, len(tg.users))))
        cs = retrieval.candidates(part.users.astype(np.int64))
        names = features.feature_names(cs.sources, list(cs.columns))
        X, rows, cols = features.transform(cs)
        y = labels(part, rows, cs.items[rows, cols])
        if validates:
            assert validation is not None
            validation.add(cs, X, rows, cols, y, part, rng)
        buyers = part.users[np.bincount(rows, weights=y, minlength=len(part.users)) > 0]
        X, y, group = sample_negatives(X, y, rows, negatives_per_user, rng)
        period = np.full(len(group), p)
        user = buyers.astype(np.int64)  # sample_negatives keeps these requests, in this order
        parts.append(RankingSet(X, y, group, period, names, features.categorical_, user))


AHEAD_ALL_ROWS = 1_000_000  # interactions up to which every period's groups are computed ahead


class _Prefetch:
    """The periods' feature groups, `features_at(start)` for each start in order.

    With `ahead` periods (small data, see `prefetch_depth`), one thread computes the next
    `ahead` periods' groups while this one trains the two-tower and makes the periods'
    candidates: the groups are DuckDB queries (which release the GIL) and nothing else here
    uses DuckDB, so the two overlap; up to `ahead` + 1 periods' groups are held at once.
    With 0, each is computed when asked, after the previous one is released."""

    def __init__(
        self, features_at: Callable[[int], RankingFeatures], starts: list[int], ahead: int
    ):
        self.features_at, self.starts, self.ahead = features_at, starts, ahead
        self.pool: ThreadPoolExecutor | None = None
        self.futures: dict[int, Future[RankingFeatures]] = {}
        self.next = 0  # the next period to submit
        if ahead > 0 and starts:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="feature-groups")
            self._top_up(0)

    def _top_up(self, done: int) -> None:
        """Keep periods done+1 .. done+ahead submitted (in order, one thread)."""
        assert self.pool is not None
        while self.next < len(self.starts) and self.next <= done + self.ahead:
            self.futures[self.next] = self.pool.submit(self.features_at, self.starts[self.next])
            self.next += 1

    def __enter__(self) -> _Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def __call__(self, p: int) -> RankingFeatures:
        if self.pool is None:
            return self.features_at(self.starts[p])
        self._top_up(p)
        return self.futures.pop(p).result()  # released once handed over

    def skip(self, p: int) -> None:
        """Period `p` needs no groups (no buyers): not computed, or dropped."""
        if self.pool is not None:
            self._top_up(p)
            self.futures.pop(p).cancel()


def prefetch_depth(interactions: int, periods: int) -> int:
    """Periods' feature groups computed ahead: all of them up to AHEAD_ALL_ROWS interactions
    (the demo, hm-sample: a few MB a period), one where `resources.side_by_side` still
    allows (up to 5 M), none above (full scale: a period's groups are gigabytes)."""
    if interactions <= AHEAD_ALL_ROWS:
        return periods
    return 1 if side_by_side(interactions) else 0


def _subset(tg: Targets, rows: np.ndarray) -> Targets:
    """The targets of some of the window's users (rows into tg.users, sorted)."""
    starts, ends = tg.indptr[rows], tg.indptr[rows + 1]
    items = np.concatenate([tg.items[a:b] for a, b in zip(starts, ends, strict=True)] or [[]])
    indptr = np.concatenate([[0], np.cumsum(ends - starts)])
    return Targets(tg.users[rows], indptr, items.astype(np.int32))


def feature_options(workspace: Workspace) -> FeatureOptions:
    """The options `shortlist features` and `shortlist materialize` compute the groups with:
    the `[features]` settings, with `user_category` restricted to the item attributes the
    ranker reads (as the pipeline computes it) unless `[features] category_attributes` names
    them: every eligible attribute at full H&M scale needs more than 12 GB (a 5 GB cap fails),
    the ranker's six fit in 5.3 GB.

    Raises:
        WorkspaceError: nothing ingested yet.
    """
    from shortlist.data.arrays import load_dataset
    from shortlist.data.offline import OfflineStore
    from shortlist.ranking.features import ranker_category_attributes

    settings = workspace.settings()
    options = FeatureOptions.from_settings(settings.features)
    if options.category_attributes is not None:
        return options
    data = load_dataset(OfflineStore(workspace, interactions=False), read_interactions=False)
    con = connect("duckdb")  # one count of distinct values per item attribute
    try:
        read = ranker_category_attributes(
            OfflineTables.from_dataset(con, data),
            data,
            max_values=settings.ranking.max_category_values,
            affinity_attributes=settings.ranking.affinity_attributes,
            options=options,
        )
    finally:
        con.disconnect()
    return replace(options, category_attributes=tuple(read))


@dataclass
class RankingGroups:
    """The ranking features of a dataset as of any cutoff: the feature groups (features/, one
    definition per feature) computed on one in-process DuckDB connection over the dataset's
    tables, kept for every period of a ranking set and the final cutoff. Call it with a
    cutoff (µs) for the features as of then; `save` writes the groups as of a cutoff into the
    workspace's feature store, where a loaded pipeline reads them back."""

    data: Dataset
    settings: Settings
    tables: OfflineTables
    options: FeatureOptions

    @classmethod
    def of(cls, data: Dataset, settings: Settings) -> RankingGroups:
        """On one in-process DuckDB connection, capped at `[features] memory_limit` or, when
        unset, a quarter of the machine's memory: the training process holds the dataset, the
        ranking set and the models besides, and DuckDB's own default (80 %) let a full-scale
        `train pipeline` grow past 24 GB. Beyond the cap DuckDB spills to a temporary folder."""
        f = settings.features
        con = connect(
            "duckdb",
            memory_limit=f.memory_limit or memory_share(0.25),
            threads=thread_count(f.threads),
            temp_directory=Path(tempfile.gettempdir()) / f"shortlist-duckdb-{os.getpid()}",
        )
        tables = OfflineTables.from_dataset(con, data)
        return cls(data, settings, tables, FeatureOptions.from_settings(f))

    def __call__(self, cutoff: int) -> RankingFeatures:
        r = self.settings.ranking
        return group_features(
            self.tables,
            self.data,
            cutoff,
            max_values=r.max_category_values,
            affinity_attributes=r.affinity_attributes,
            options=self.options,
        )

    @property
    def eligible(self) -> list[str]:
        """The item attributes the user_category group covers (user x value features)."""
        return eligible_attributes(self.tables, self.options)

    def save(self, workspace: Workspace, cutoff: int) -> dict[str, int]:
        """The ranking groups as of `cutoff`, written as new versions of the feature store
        (what a loaded pipeline reads: the items from the feature store, its users' values from
        the online store); returns the version of each. `user_category` covers the attributes
        the ranker reads, as in training: at full H&M scale every attribute makes it ~8 times
        larger (160 M rows), which the served pipeline never reads."""
        r = self.settings.ranking
        read = RankingFeatures(
            max_values=r.max_category_values, affinity_attributes=r.affinity_attributes
        ).affinity_columns(self.data, self.eligible)
        narrow = replace(self.options, category_attributes=tuple(read))
        written = write_groups(
            workspace, self.tables, from_us(cutoff), names=RANKING_GROUPS, options=narrow
        )
        return {v.path.split("/")[0]: v.version for v in written.written}


def ranking_features(data: Dataset, settings: Settings) -> RankingGroups:
    """The ranking features of `data` as of any cutoff (see RankingGroups)."""
    return RankingGroups.of(data, settings)


def make_ranker(settings: Settings) -> LightGBMRanker:
    r = settings.ranking
    return LightGBMRanker(
        objective=r.objective,
        num_leaves=r.num_leaves,
        learning_rate=r.learning_rate,
        max_rounds=r.max_rounds,
        early_stopping=r.early_stopping,
        min_data_in_leaf=r.min_data_in_leaf,
        seed=r.seed,
        threads=r.threads,
    )


def fit_ranker(
    data: Dataset,
    cutoff: int,
    retrieval: Retrieval,
    settings: Settings,
    features_at: Callable[[int], RankingFeatures] | None = None,
) -> tuple[LightGBMRanker, RankingSet, RankingChoice]:
    """The ranking set of the periods before `cutoff` (the latest validates), the ranker, and
    what the guard chose to serve after it (the ranker, or a source order that scored higher
    on the latest period: see pipeline/guard.py).

    `retrieval` is refitted period by period; a two-tower source in it ends trained before
    the oldest period, ready to serve at the cutoff without retraining.
    """
    r = settings.ranking
    plan = plan_periods(data, cutoff, settings)
    validation = ValidationRequests()
    rs = build_ranking_set(
        data,
        cutoff,
        retrieval,
        features_at or ranking_features(data, settings),
        plan,
        negatives_per_user=r.negatives_per_user,
        users_per_period=r.users_per_week,
        seed=r.seed,
        validation=validation,
    )
    ranker = train_ranker(
        rs, settings, max(1, validation.periods), validation.map_of if validation.parts else None
    )
    ranker.report_["period_days"] = plan.days
    judge = cross_fitted(ranker, rs, max(1, validation.periods), settings)
    choice = choose_ranking(
        validation, judge, retrieval.names, r.guard_switch, r.guard_blends, rs.names
    )
    if not r.guard:
        choice = choice.without_guard()
    ranker.held_out_ = None  # judged; the refit on every period is what serves
    return ranker, rs, choice


FOLDS = 2  # the validating periods' users split in this many parts for the guard's judge


def cross_fitted(
    ranker: LightGBMRanker, rs: RankingSet, valid_periods: int, settings: Settings
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The ranker the guard judges, `(X, users) -> scores`: for each of FOLDS parts of the
    users (user_idx modulo FOLDS), the held-out winner's objective and rounds trained on the
    older periods and on the validating periods' requests of the other users.

    The served ranker learns from every period, the validating ones included; a judge that
    learnt from the older periods alone learnt from fewer, which on a short history is most
    of what there is (3 days of history: one period of one day, against two), and the guard
    then held the ranker's order worse than it serves. Cross-fitting by users keeps the judge
    close to the served ranker while no user is scored by a model that saw their purchases.
    """
    train, valid = rs.split(valid_periods)
    if valid.user is None or not len(valid.group):
        return lambda X, users: ranker.predict_held_out(X)
    r = settings.ranking
    # the older periods as the held-out ranker learnt from them (train_ranker's thinning)
    older = train.thin(r.max_rows - len(valid.y), np.random.default_rng(r.seed))
    # small sets (the ranker trained single-threaded): the parts side by side, one per core
    threads = 1 if ranker.threads_ == 1 and thread_count() > 1 else None
    with track(
        f"Guard: the ranker cross-fitted on {FOLDS} parts of the users", total=FOLDS
    ) as advance:

        def judge_of(k: int) -> Callable[[np.ndarray], np.ndarray] | None:
            others = valid.groups(valid.user % FOLDS != k)
            part = RankingSet.concat([older, others]) if len(older.group) else others
            judge = ranker.refit_held_out(part, threads) if others.positives else None
            advance(1)
            return judge

        if threads == 1:
            with ThreadPoolExecutor(min(FOLDS, thread_count())) as pool:
                judges = list(pool.map(judge_of, range(FOLDS)))
        else:
            judges = [judge_of(k) for k in range(FOLDS)]

    def scores(X: np.ndarray, users: np.ndarray) -> np.ndarray:
        out = ranker.predict_held_out(X) if any(j is None for j in judges) else np.empty(len(X))
        fold = users % FOLDS
        for k, judge in enumerate(judges):
            at = fold == k
            if judge is not None and at.any():
                out[at] = judge(X[at])
        return out

    return scores


def train_ranker(
    rs: RankingSet,
    settings: Settings,
    valid_periods: int = 1,
    held_out: Callable[[Callable[[np.ndarray], np.ndarray]], float] | None = None,
) -> LightGBMRanker:
    """The ranker on a ranking set: the latest `valid_periods` validate as they are, the older
    ones train, thinned to the `[ranking] max_rows` budget. `held_out` (the guard's
    validation requests, `ValidationRequests.map_of`) chooses between the objectives."""
    r = settings.ranking
    train, valid = rs.split(valid_periods)
    train = train.thin(r.max_rows - len(valid.y), np.random.default_rng(r.seed))
    ranker = make_ranker(settings).fit(train, valid, held_out)
    ranker.report_["periods"] = len(np.unique(rs.period))
    ranker.report_["valid_periods"] = valid_periods
    return ranker
