"""`shortlist train ranking`: the ranking set before a cutoff, then the LightGBM ranker on it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shortlist.config import Settings
from shortlist.data.arrays import US_PER_DAY, Dataset, load_dataset
from shortlist.data.offline import OfflineStore
from shortlist.ranking.dataset import RankingSet, build_ranking_set
from shortlist.ranking.features import RankingFeatures
from shortlist.ranking.ranker import LightGBMRanker
from shortlist.retrieval.stage import Retrieval, make_retrieval
from shortlist.workspace import Workspace

RANKER_DIR = "models/ranker"


def ranker_folder(workspace: Workspace) -> Path:
    return workspace.root / RANKER_DIR


def end_of_data(data: Dataset) -> int:
    """The midnight after the last interaction: the cutoff of a model trained on everything."""
    return (int(data.interactions.time[-1]) // US_PER_DAY + 1) * US_PER_DAY


def make_features(settings: Settings) -> RankingFeatures:
    r = settings.ranking
    return RankingFeatures(
        max_values=r.max_category_values, affinity_attributes=r.affinity_attributes
    )


def fit_ranker(
    data: Dataset, cutoff: int, retrieval: Retrieval, settings: Settings
) -> tuple[LightGBMRanker, RankingSet]:
    """The ranking set of the weeks before `cutoff` (the latest validates) and the ranker.

    `retrieval` is refitted week by week; a two-tower source in it ends frozen (trained
    before the oldest week), ready to serve at the cutoff without retraining.
    """
    r = settings.ranking
    rs = build_ranking_set(
        data,
        cutoff,
        retrieval,
        lambda: make_features(settings),
        weeks=r.weeks,
        max_weeks=max(r.weeks, r.max_weeks),
        min_positive_users=r.min_positive_users,
        negatives_per_user=r.negatives_per_user,
        users_per_week=r.users_per_week,
        seed=r.seed,
    )
    latest = rs.weeks(np.array([0]))
    older = rs.weeks(np.unique(rs.week[rs.week > 0]))
    ranker = make_ranker(settings).fit(older, latest)
    ranker.report_["weeks"] = len(np.unique(rs.week))
    return ranker, rs


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


@dataclass(frozen=True)
class RankingSummary:
    folder: Path
    report: dict
    importance: list[tuple[str, float]]
    seconds: float


def train_ranking(workspace: Workspace) -> RankingSummary:
    """Train the ranker for the workspace's pipeline on all data and save it."""
    started = time.perf_counter()
    settings = workspace.settings()
    data = load_dataset(OfflineStore(workspace))
    retrieval = make_retrieval(settings.pipeline.sources, settings.retrieval)
    ranker, _ = fit_ranker(data, end_of_data(data), retrieval, settings)
    folder = ranker_folder(workspace)
    ranker.save(folder)
    return RankingSummary(
        folder, ranker.report_, ranker.importance(), time.perf_counter() - started
    )
