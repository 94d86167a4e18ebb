"""Recommendations for every user, written as a submission file (user id, space-separated items).

Users are scored in batches on a pool of threads (numpy, FAISS, torch and LightGBM release
the GIL for their heavy parts); rows are written in user order as batches complete, so memory
stays at a few batches whatever the number of users.
"""

from __future__ import annotations

import csv
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from shortlist.pipeline.core import Pipeline
from shortlist.progress import track

BATCH = 2048


@dataclass(frozen=True)
class PredictSummary:
    path: Path
    users: int
    seconds: float
    load_seconds: float


def predict(
    pipeline: Pipeline,
    path: Path,
    *,
    user_column: str = "user_id",
    jobs: int = 2,
    users: np.ndarray | None = None,
    k: int | None = None,
) -> PredictSummary:
    """Write `user_column,prediction` rows for `users` (default: every user) to `path`."""
    started = time.perf_counter()
    pipeline.load()
    funnel = pipeline.funnel_
    assert funnel is not None
    if k is not None:
        funnel = replace(funnel, k=k)
    load_seconds = time.perf_counter() - started
    catalog = funnel.catalog
    todo = np.arange(catalog.data.n_users) if users is None else np.asarray(users, np.int64)
    batches = [todo[lo : lo + BATCH] for lo in range(0, len(todo), BATCH)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w", newline="") as f, ThreadPoolExecutor(max(1, jobs)) as pool:
        writer = csv.writer(f)
        writer.writerow([user_column, "prediction"])
        with track("Predicting", total=len(todo)) as advance:
            for batch, out in zip(batches, pool.map(funnel.run, batches), strict=True):
                ids = catalog.item_ids
                for user, row in zip(batch.tolist(), out.items.tolist(), strict=True):
                    writer.writerow(
                        [catalog.user_ids[user], " ".join(ids[i] for i in row if i >= 0)]
                    )
                advance(len(batch))
    tmp.replace(path)
    return PredictSummary(path, len(todo), time.perf_counter() - started, load_seconds)
