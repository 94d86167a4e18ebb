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


INDEX_DIR = "index/items"


@dataclass(frozen=True)
class IndexSummary:
    folder: Path
    kind: str
    items: int
    dim: int
    seconds: float


def index_folder(workspace: Workspace) -> Path:
    return workspace.root / INDEX_DIR


def build_item_index(workspace: Workspace, *, exact_below: int | None = None) -> IndexSummary:
    """Index the trained model's item vectors (exact for small catalogues, HNSW above).

    Raises:
        WorkspaceError: no trained model, or it no longer matches the offline store.
    """
    from shortlist.retrieval.index import DEFAULT_EXACT_BELOW, build_index

    started = time.perf_counter()
    vectors = _item_vectors(workspace)
    index = build_index(
        vectors,
        np.arange(len(vectors), dtype=np.int64),
        exact_below=DEFAULT_EXACT_BELOW if exact_below is None else exact_below,
    )
    folder = index_folder(workspace)
    index.save(folder)
    return IndexSummary(
        folder,
        "exact" if index.is_exact else "hnsw",
        len(vectors),
        vectors.shape[1],
        time.perf_counter() - started,
    )


def _item_vectors(workspace: Workspace) -> np.ndarray:
    """The saved catalogue embeddings, checked against the offline store's item count."""
    from shortlist.errors import WorkspaceError
    from shortlist.retrieval.two_tower import ITEM_VECTORS_FILE

    path = model_folder(workspace) / ITEM_VECTORS_FILE
    if not path.is_file():
        raise WorkspaceError(
            f"no two-tower model in {path.parent}: run `shortlist train retrieval` first"
        )
    vectors = np.load(path, allow_pickle=False, mmap_mode="r")
    items = OfflineStore(workspace).manifest.items.rows
    if len(vectors) != items:
        raise WorkspaceError(
            f"the model has {len(vectors):,} item vectors, the offline store {items:,} items: "
            "retrain with `shortlist train retrieval`"
        )
    return np.ascontiguousarray(vectors, dtype=np.float32)
