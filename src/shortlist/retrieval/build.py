"""The retrieval artefacts of a workspace: the trained two-tower model and its item index."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shortlist.data.arrays import end_of_data, load_dataset
from shortlist.data.offline import OfflineStore
from shortlist.errors import WorkspaceError
from shortlist.retrieval.two_tower import CONFIG_FILE, ITEM_VECTORS_FILE, QUERY_SAMPLE_FILE
from shortlist.workspace import Workspace

MODEL_DIR = "models/two_tower"
INDEX_DIR = "index/items"


@dataclass(frozen=True)
class TrainSummary:
    folder: Path
    epochs: list[dict[str, float]]
    examples: int
    seconds: float


@dataclass(frozen=True)
class IndexSummary:
    folder: Path
    kind: str
    items: int
    dim: int
    seconds: float
    tuned: dict[str, float] | None = None  # HNSW: ef_search chosen and its recall@100


def model_folder(workspace: Workspace) -> Path:
    return workspace.root / MODEL_DIR


def index_folder(workspace: Workspace) -> Path:
    return workspace.root / INDEX_DIR


def train_retrieval(workspace: Workspace) -> TrainSummary:
    """Train the two-tower alone on all purchases (the last `val_days` choose the epoch) and
    save it. `shortlist build` does not call this: the pipeline trains its own (see
    `Pipeline.fit`); this is for experiments and `similar` on a workspace without a pipeline.

    Raises:
        WorkspaceError: nothing ingested yet, or nothing to train on.
    """
    from shortlist.retrieval.two_tower import TwoTowerModel

    started = time.perf_counter()
    settings = workspace.settings().retrieval
    data = load_dataset(OfflineStore(workspace))
    assert data.items is not None and data.users is not None  # load_dataset always loads them
    model = TwoTowerModel(settings).fit(
        data.items,
        data.item_kinds,
        data.users,
        data.user_kinds,
        data.interactions,
        end_of_data(data),
    )
    folder = model_folder(workspace)
    model.save(folder)
    return TrainSummary(
        folder, model.history_, int(model.schedule_["examples"]), time.perf_counter() - started
    )


def build_item_index(workspace: Workspace, *, exact_below: int | None = None) -> IndexSummary:
    """Index the saved model's item vectors (exact for small catalogues, HNSW above, its
    search effort tuned on the recent users' vectors saved with the model).

    Raises:
        WorkspaceError: no trained model, or it no longer matches the offline store.
    """
    from shortlist.retrieval.index import index_vectors

    started = time.perf_counter()
    vectors = item_vectors(workspace)
    sample = model_folder(workspace) / QUERY_SAMPLE_FILE
    queries = np.load(sample, allow_pickle=False) if sample.is_file() else None
    index = index_vectors(vectors, queries, exact_below=exact_below)
    folder = index_folder(workspace)
    index.save(folder, model=model_fingerprint(workspace))
    return IndexSummary(
        folder,
        "exact" if index.is_exact else "hnsw",
        len(vectors),
        vectors.shape[1],
        time.perf_counter() - started,
        getattr(index, "tuned_", None),
    )


def model_fingerprint(workspace: Workspace) -> str:
    """The saved two-tower's fingerprint (see TwoTowerModel.save)."""
    path = model_folder(workspace) / CONFIG_FILE
    if not path.is_file():
        raise WorkspaceError(
            f"no two-tower model in {path.parent}: run `shortlist build --source DIR` "
            "(or `shortlist train retrieval`)"
        )
    fingerprint = json.loads(path.read_text()).get("fingerprint")
    if fingerprint is None:
        raise WorkspaceError(
            f"the model in {path.parent} was saved by an older shortlist: retrain it "
            "(`shortlist build`, or `shortlist train retrieval`)"
        )
    return str(fingerprint)


def item_vectors(workspace: Workspace) -> np.ndarray:
    """The saved catalogue embeddings, checked against the offline store's item count."""
    path = model_folder(workspace) / ITEM_VECTORS_FILE
    if not path.is_file():
        raise WorkspaceError(
            f"no two-tower model in {path.parent}: run `shortlist build --source DIR` "
            "(or `shortlist train retrieval`)"
        )
    vectors = np.load(path, allow_pickle=False, mmap_mode="r")
    items = OfflineStore(workspace).manifest.items.rows
    if len(vectors) != items:
        raise WorkspaceError(
            f"the model has {len(vectors):,} item vectors, the offline store {items:,} items: "
            "the data changed since it was trained; run `shortlist build` again"
        )
    return np.ascontiguousarray(vectors, dtype=np.float32)
