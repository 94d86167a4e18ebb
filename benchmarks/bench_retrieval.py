"""Retrieval on a real workspace: single-user encoding latency and the item index on the
trained embeddings (recall@100 against exact search, p99, with and without a filter).

Run after `shortlist train retrieval` on the workspace (benchmarks/run.py does both and
measures the training itself as a separate process). One thread, as one request is served.

    python benchmarks/bench_retrieval.py --workspace DIR [--queries Q] [--repeat R] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from shortlist.data.arrays import US_PER_DAY, load_dataset
from shortlist.data.filters import ItemAttributes
from shortlist.data.offline import OfflineStore
from shortlist.retrieval.build import model_folder
from shortlist.retrieval.history import HistoryIndex
from shortlist.retrieval.index import ExactIndex, HNSWIndex
from shortlist.retrieval.two_tower import QUERY_SAMPLE_FILE, TwoTowerModel
from shortlist.workspace import open_workspace

K = 100
TARGETS = {"encode_p99_ms": 1.0, "recall": 0.95, "search_p99_ms": 1.0, "build_seconds": 60.0}


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def encode_latency(
    model: TwoTowerModel, hist: HistoryIndex, day: int, users: np.ndarray, repeat: int
):
    """One user per call, as a request encodes it (history lookup included)."""
    runs = []
    for _ in range(repeat):
        times = []
        for u in users:
            started = time.perf_counter()
            model.encode_users(np.array([u]), np.array([day]), hist)
            times.append(time.perf_counter() - started)
        runs.append(percentiles(times))
    return median_of(runs)


def search(index: Any, queries: np.ndarray, repeat: int, allowed: np.ndarray | None = None):
    runs, found = [], None
    for _ in range(repeat):
        times, rows = [], []
        for q in queries:
            started = time.perf_counter()
            _, ids = index.search(q[None, :], K, allowed=allowed)
            times.append(time.perf_counter() - started)
            rows.append(ids[0])
        runs.append(percentiles(times))
        found = np.vstack(rows)
    return median_of(runs), found


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [
        len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / max(1, int((t >= 0).sum()))
        for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    ws = open_workspace(args.workspace)
    store = OfflineStore(ws)
    data = load_dataset(store)
    assert data.items is not None and data.users is not None
    model = TwoTowerModel.load(model_folder(ws), data.items, data.users)
    hist = HistoryIndex(data.interactions)
    day = int(data.interactions.time[-1]) // US_PER_DAY + 1
    rng = np.random.default_rng(0)
    recent = np.unique(data.interactions.user[-200_000:])  # users a service would see
    users = rng.choice(recent, min(args.queries, len(recent)), replace=False)
    result: dict[str, Any] = {
        "benchmark": "retrieval",
        "workspace": str(ws.root),
        "items": data.n_items,
        "users": data.n_users,
        "dim": int(model.item_vectors_.shape[1]),
        "training": model.history_,
        "encode_one_user": encode_latency(model, hist, day, users, args.repeat),
    }
    queries = model.encode_users(users, np.full(len(users), day), hist)
    vectors = model.item_vectors_
    ids = np.arange(len(vectors), dtype=np.int64)
    exact = ExactIndex().build(vectors, ids)
    started = time.perf_counter()
    hnsw = HNSWIndex().build(vectors, ids)
    result["hnsw_build_seconds"] = time.perf_counter() - started
    sample = model_folder(ws) / QUERY_SAMPLE_FILE
    default_lat, default_found = search(hnsw, queries, 1)
    result["hnsw_default_ef"] = default_lat | {
        "recall": recall(default_found, exact.search(queries, K)[1]),
        "ef_search": hnsw.ef_search,
    }
    # `shortlist index` tunes ef_search on the query sample saved by training: do the same
    result["tuned"] = hnsw.tune(np.load(sample, allow_pickle=False)) if sample.is_file() else None
    attrs = ItemAttributes.from_table(
        store.sql("SELECT * EXCLUDE (item_id) FROM items").df(), id_column="item_idx"
    )
    # A real filter keeping about 10 % of the catalogue: the most common values of one
    # categorical attribute, added until they cover a tenth of the items.
    kinds = store.manifest.items.attributes
    distinct = {
        c: store.sql(f'SELECT count(DISTINCT "{c}") FROM items').fetchall()[0][0]
        for c, k in kinds.items()
        if k.value == "categorical"
    }
    column = next((c for c, n in distinct.items() if 10 <= n <= 200), next(iter(distinct)))
    counts = store.sql(f'SELECT "{column}" v, count(*) n FROM items GROUP BY 1 ORDER BY 2').df()
    chosen = counts.v[(counts.n.cumsum() / counts.n.sum()) <= 0.10].tolist() or [counts.v.iloc[0]]
    filt = {column: {"in": [v.item() if hasattr(v, "item") else v for v in chosen]}}
    mask = attrs.mask(filt)
    scenarios: dict[str, Any] = {}
    for name, allowed in (("unfiltered", None), ("filter", mask)):
        truth_lat, truth = search(exact, queries, args.repeat, allowed)
        lat, found = search(hnsw, queries, args.repeat, allowed)
        scenarios[f"exact, {name}"] = {**truth_lat, "recall": 1.0}
        scenarios[f"hnsw, {name}"] = {**lat, "recall": recall(found, truth)}
    result["filter"] = {"spec": filt, "share": float(mask.mean())}
    result["search"] = scenarios
    result["targets"] = TARGETS
    print(json.dumps(result, indent=2, default=str))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
