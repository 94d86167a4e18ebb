"""Building the retrieval artefacts of a workspace: the trained two-tower model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shortlist.data.arrays import US_PER_DAY, Dataset, load_dataset
from shortlist.data.offline import OfflineStore
from shortlist.retrieval.two_tower import TwoTower
from shortlist.workspace import Workspace

MODEL_DIR = "models/two_tower"
QUERY_SAMPLE_FILE = "query_sample.npy"  # recent users' vectors: what `index` tunes search on
QUERY_SAMPLE = 1000


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
    np.save(folder / QUERY_SAMPLE_FILE, _query_sample(model, data, cutoff), allow_pickle=False)
    return TrainSummary(
        folder, model.history_, int(model.schedule_["examples"]), time.perf_counter() - started
    )


def _query_sample(model: TwoTower, data: Dataset, cutoff: int) -> np.ndarray:
    """Vectors of up to QUERY_SAMPLE users who bought in the last 28 days, as of the cutoff."""
    from shortlist.retrieval.history import HistoryIndex

    inter = data.interactions
    recent = np.unique(inter.user[inter.time >= cutoff - 28 * US_PER_DAY])
    rng = np.random.default_rng(0)
    users = rng.choice(recent, min(QUERY_SAMPLE, len(recent)), replace=False)
    day = cutoff // US_PER_DAY
    return model.encode_users(users, np.full(len(users), day), HistoryIndex(inter))


INDEX_DIR = "index/items"


@dataclass(frozen=True)
class IndexSummary:
    folder: Path
    kind: str
    items: int
    dim: int
    seconds: float
    tuned: dict[str, float] | None = None  # HNSW: ef_search chosen and its recall@100


def index_folder(workspace: Workspace) -> Path:
    return workspace.root / INDEX_DIR


def build_item_index(workspace: Workspace, *, exact_below: int | None = None) -> IndexSummary:
    """Index the trained model's item vectors (exact for small catalogues, HNSW above).

    Raises:
        WorkspaceError: no trained model, or it no longer matches the offline store.
    """
    from shortlist.retrieval.index import DEFAULT_EXACT_BELOW, HNSWIndex, build_index

    started = time.perf_counter()
    vectors = item_vectors(workspace)
    index = build_index(
        vectors,
        np.arange(len(vectors), dtype=np.int64),
        exact_below=DEFAULT_EXACT_BELOW if exact_below is None else exact_below,
    )
    tuned = None
    sample = model_folder(workspace) / QUERY_SAMPLE_FILE
    if isinstance(index, HNSWIndex) and sample.is_file():
        tuned = index.tune(np.load(sample, allow_pickle=False), k=min(100, len(vectors)))
    folder = index_folder(workspace)
    index.save(folder)
    return IndexSummary(
        folder,
        "exact" if index.is_exact else "hnsw",
        len(vectors),
        vectors.shape[1],
        time.perf_counter() - started,
        tuned,
    )


def item_vectors(workspace: Workspace) -> np.ndarray:
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
