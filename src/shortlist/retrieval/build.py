"""Building the retrieval artefacts of a workspace: the trained two-tower model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shortlist.data.offline import OfflineStore
from shortlist.eval.data import US_PER_DAY, load_dataset
from shortlist.retrieval.two_tower import TwoTower
from shortlist.workspace import Workspace

MODEL_DIR = "models/two_tower"


@dataclass(frozen=True)
class TrainSummary:
    folder: Path
    epochs: list[dict[str, float]]
    examples: int
    seconds: float


def model_folder(workspace: Workspace) -> Path:
    return workspace.root / MODEL_DIR


def train_retrieval(workspace: Workspace) -> TrainSummary:
    """Train the two-tower on all purchases (the last `val_days` choose the epoch) and save it.

    Raises:
        WorkspaceError: nothing ingested yet.
    """
    started = time.perf_counter()
    settings = workspace.settings().retrieval
    data = load_dataset(OfflineStore(workspace))
    assert data.items is not None and data.users is not None  # load_dataset always loads them
    cutoff = (int(data.interactions.time[-1]) // US_PER_DAY + 1) * US_PER_DAY
    model = TwoTower(settings).fit(
        data.items, data.item_kinds, data.users, data.user_kinds, data.interactions, cutoff
    )
    folder = model_folder(workspace)
    model.save(folder)
    day = (cutoff // US_PER_DAY) - settings.val_days
    examples = int(
        ((data.interactions.time // US_PER_DAY) >= day - settings.train_days).sum()
        - ((data.interactions.time // US_PER_DAY) >= day).sum()
    )
    return TrainSummary(
        folder, model.history_, max(0, int(np.int64(examples))), time.perf_counter() - started
    )
