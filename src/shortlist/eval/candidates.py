"""Candidate recall: how much of what users bought next the retrieval stage puts in front of
the ranker, per source and for their union, at several candidate budgets."""

from __future__ import annotations

from typing import Any

import numpy as np

from shortlist.data.arrays import Targets, TrainData
from shortlist.retrieval.sources import Candidates, Source, union

BUDGETS = (50, 100, 300, 500)


def _recall(items: np.ndarray, tg: Targets) -> tuple[float, float]:
    """(share of the window's (user, item) purchases found in the rows, mean row length)."""
    rows = np.repeat(np.arange(len(tg.users), dtype=np.int64), np.diff(tg.indptr))
    bought = (rows << 32) | tg.items.astype(np.int64)
    r, c = np.nonzero(items >= 0)
    proposed = (r.astype(np.int64) << 32) | items[r, c].astype(np.int64)
    hits = np.isin(bought, proposed).sum()
    return float(hits / max(1, len(bought))), float((items >= 0).sum(axis=1).mean())


def fit_sources(
    sources: list[Source], train: TrainData, users: np.ndarray, budget: int
) -> dict[str, Candidates]:
    """Fit every source on the past and collect its top-`budget` candidates for `users`."""
    return {s.name: s.fit(train).candidates(users, budget) for s in sources}


def candidate_report(
    results: dict[str, Candidates], tg: Targets, budgets: tuple[int, ...] = BUDGETS
) -> dict[str, dict[str, float]]:
    """Per source and for the union: recall@N and mean candidates per user at each budget N.

    Recall here is micro-averaged: hits over all (user, item) purchases of the window.
    The union at budget N interleaves the sources by rank until N distinct items, so it is
    compared with single sources at the same number of candidates.
    """
    out: dict[str, dict[str, float]] = {}
    for name, found in results.items():
        items = found.items
        out[name] = {}
        for n in budgets:
            rec, size = _recall(items[:, :n], tg)
            out[name][f"recall@{n}"], out[name][f"mean_candidates@{n}"] = rec, size
    out["union"] = {}
    for n in budgets:
        items, _ = union(results, n)
        rec, size = _recall(items, tg)
        out["union"][f"recall@{n}"], out["union"][f"mean_candidates@{n}"] = rec, size
    for stats in out.values():
        stats["mean_candidates"] = stats[f"mean_candidates@{budgets[-1]}"]
    return out


def average(reports: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Mean over windows of each figure."""
    return {
        name: {key: float(np.mean([r[name][key] for r in reports])) for key in reports[0][name]}
        for name in reports[0]
    }
