"""`Pipeline.search` for one request at a time, in-process and on one thread (torch, FAISS,
BLAS), as the service calls it: the query embedded by all-MiniLM-L6-v2, BM25, the semantic
index, the filters, and for a known user the personal order (their candidates, the ranker's
features and trees); p50/p99 in total, per kind of request and per stage. Also the time to
index the catalogue for search (BM25 and the sentence embeddings of every item, on the
machine's cores, as `shortlist build` does it).

    python benchmarks/bench_search.py --workspace DIR [--build-index] [--link-from BUILT]
                                      [--requests N] [--users N] [--out FILE]

--link-from BUILT: make DIR a scratch workspace over a built one that stays untouched: its
offline store, feature store, models and item index linked (read only), its ranker folder
and online store copied (they are written when opened: the compiled trees' cache, LMDB's lock
file); --build-index then writes the search index into DIR alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from shortlist import columns as C
from shortlist.data.offline import OfflineStore
from shortlist.workspace import open_workspace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import memory, pct, prefetch_like_serve  # noqa: E402

TARGET_P99_MS = 30.0
LINKED = ("offline", "features", "models/two_tower", "models/state", "index/items")
COPIED = ("shortlist.toml", "models/pipeline.json", "models/ranker", "online")


def link_workspace(built: Path, scratch: Path) -> None:
    """A scratch workspace over `built` (see the module's docstring)."""
    scratch.mkdir(parents=True, exist_ok=True)
    for part in LINKED:
        target = scratch / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to((built / part).resolve())
    for part in COPIED:
        source, target = built / part, scratch / part
        if target.exists() or not source.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.lock"))
        else:
            shutil.copy2(source, target)


def queries_of(items, facets: list[str], fields: list[str], n: int, seed: int = 0) -> list[dict]:
    """n requests' queries of four kinds, from the catalogue: a product type, a colour and a
    product type, four words of a description, and a misspelt product type."""
    rng = np.random.default_rng(seed)
    out = []
    rows = rng.integers(0, len(items), size=n)
    long_text = fields[-1] if fields else None
    for i, row in enumerate(rows.tolist()):
        kind = ("type", "colour type", "phrase", "typo")[i % 4]
        values = [items[f].iloc[row] for f in facets[:2]]
        kind_value = str(values[0]) if values and values[0] is not None else "dress"
        if kind == "colour type" and len(values) > 1:
            q = f"{values[1]} {kind_value}"
        elif kind == "phrase" and long_text is not None:
            words = re.findall(r"\w+", str(items[long_text].iloc[row]))
            start = int(rng.integers(0, max(len(words) - 4, 1)))
            q = " ".join(words[start : start + 4]) or kind_value
        elif kind == "typo" and len(kind_value) > 4:
            at = int(rng.integers(1, len(kind_value) - 1))
            q = kind_value[:at] + kind_value[at + 1 :]
        else:
            q = kind_value
        out.append({"kind": kind, "query": q})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", required=True, type=Path)
    parser.add_argument("--link-from", type=Path, help="a built workspace to link (read only)")
    parser.add_argument("--build-index", action="store_true", help="index the items first")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the requests (medians)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.link_from is not None:
        link_workspace(args.link_from, args.workspace)
    ws = open_workspace(args.workspace)
    result: dict = {"benchmark": "search_one_request", "workspace": str(args.workspace)}

    if args.build_index:  # on every core, as `shortlist build` indexes
        from shortlist import resources
        from shortlist.retrieval.text import build_text_index

        resources.configure(ws.settings())
        started = time.perf_counter()
        built = build_text_index(ws, force=True)
        result["index"] = {
            "seconds": round(time.perf_counter() - started, 1),
            "steps": built.seconds,
            "items": built.items,
            "items_per_second_embedded": round(built.items / built.seconds["embedding"], 1)
            if "embedding" in built.seconds
            else None,
            "threads": resources.configure(ws.settings()),
            "cpu_count": os.cpu_count(),
            "fields": built.fields,
            "facets": built.facets,
            "semantic_index": built.semantic,
        }
        print(f"search index: {built.items:,} items in {result['index']['seconds']} s "
              f"({built.seconds})", flush=True)  # fmt: skip

    from shortlist import resources
    from shortlist.pipeline import Pipeline

    started = time.perf_counter()
    pipeline = Pipeline.from_config(ws).load()
    result["load_seconds"] = round(time.perf_counter() - started, 2)
    result["prefetch"] = prefetch_like_serve(args.workspace)  # as the service does
    resources.set_threads(1)  # one thread from here (the load sized the pools to the cores)
    text = pipeline.text_
    if text is None:
        sys.exit(f"no search index: {pipeline.text_error_}")
    started = time.perf_counter()
    text.embed("warm up")  # the sentence model loads at the first query
    result["model_load_seconds"] = round(time.perf_counter() - started, 2)
    result["memory_after_load"] = memory()
    funnel = pipeline.funnel_
    recent = (
        OfflineStore(ws)
        .sql(
            f"SELECT DISTINCT {C.USER_IDX} AS u FROM (SELECT {C.USER_IDX} FROM interactions "
            f"ORDER BY {C.TIMESTAMP} DESC, {C.USER_IDX}, {C.ITEM_IDX} LIMIT 200000) ORDER BY u"
        )
        .fetchnumpy()["u"]
        .astype(np.int64)
    )
    rng = np.random.default_rng(0)
    users = rng.choice(recent, min(args.users, len(recent)), replace=False)
    ids = [str(funnel.catalog.user_ids[u]) for u in users]
    items = funnel.catalog.data.items
    requests = queries_of(items, text.facets, text.fields, args.requests)
    for r in requests[:20]:  # warm caches (compiled trees, FAISS, torch)
        pipeline.search(r["query"], ids[0])
        pipeline.search(r["query"])

    runs: list[dict[str, dict[str, float]]] = []
    stages: dict[str, list[float]] = {}
    matches, personalized = [], 0
    for _ in range(args.repeat):
        totals: dict[str, list[float]] = {}
        for i, r in enumerate(requests):
            user = ids[i % len(ids)] if i % 2 == 0 else None  # half known users, half anonymous
            started = time.perf_counter()
            found = pipeline.search(r["query"], user)
            ms = (time.perf_counter() - started) * 1000
            who = "known user" if user is not None else "anonymous"
            for key in ("all", who, f"{who}, {r['kind']}"):
                totals.setdefault(key, []).append(ms)
            personalized += found.personalized
            matches.append(found.total)
            for stage in found.trace:
                stages.setdefault(stage["stage"], []).append(stage["ms"])
                if "embed_ms" in stage:
                    stages.setdefault("query embedding", []).append(stage["embed_ms"])
        runs.append({key: pct(v) for key, v in totals.items()})
    median = {
        key: {m: statistics.median(run[key][m] for run in runs) for m in runs[0][key]}
        for key in runs[0]
    }
    result.update(
        {
            "items": funnel.catalog.data.n_items,
            "all_users": funnel.catalog.data.n_users,
            "requests": len(requests),
            "repeat": args.repeat,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "users": len(ids),
            "threads": 1,
            "personalized_share": round(personalized / max(args.repeat * len(requests) // 2, 1), 3),
            "matches": {
                "median": float(np.median(matches)),
                "p99": float(np.percentile(matches, 99)),
            },
            "scorer": funnel.scorer.name if funnel.scorer is not None else None,
            "sources_config": [(s.name, s.segment, s.k) for s in pipeline.spec.sources],
            "search_settings": text.settings.model_dump(),
            "total": median["all"],  # medians over the runs of each run's p50 and p99
            "by_kind": {k: v for k, v in median.items() if k != "all"},
            "runs": [run["all"] for run in runs],
            "stages": {name: pct(v) for name, v in stages.items()},
            "memory_after_requests": memory(),
            "target_p99_ms": TARGET_P99_MS,
        }
    )
    result["meets_target"] = result["total"]["p99_ms"] <= TARGET_P99_MS
    total = result["total"]
    print(
        f"search, one request on one thread ({result['items']:,} items; median "
        f"{result['matches']['median']:.0f} matches): p50 {total['p50_ms']:.2f} ms  p99 "
        f"{total['p99_ms']:.2f} ms (target {TARGET_P99_MS} ms: "
        f"{'met' if result['meets_target'] else 'MISSED'})"
    )
    for name, v in result["by_kind"].items():
        print(f"  {name:28s} p50 {v['p50_ms']:7.2f} ms  p99 {v['p99_ms']:7.2f} ms")
    for name, v in result["stages"].items():
        print(f"  stage {name:22s} p50 {v['p50_ms']:7.2f} ms  p99 {v['p99_ms']:7.2f} ms")
    if args.out:
        if "index" not in result and args.out.is_file():  # keep the last index build's figures
            previous = json.loads(args.out.read_text()).get("index")
            if previous:
                result["index"] = {**previous, "measured": "by an earlier run (--build-index)"}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
