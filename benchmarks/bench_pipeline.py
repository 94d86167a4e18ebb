"""`Pipeline.recommend` for one user at a time, in-process and on one thread, as the service will
call it: every source, the filters, the ranker, diversity and the take; p50/p99 in total and
per stage. The workspace's [pipeline] as it was trained (benchmarks/workspace.toml asks for the
two-tower source 300 deep: every user then has at least 300 candidates, as the issue's target
asks; a saved pipeline serves only the sources it was trained with).

Run on a built workspace (`shortlist build`; benchmarks/run.py --only pipeline predict does it).

    python benchmarks/bench_pipeline.py --workspace DIR [--users N] [--repeat R] [--pause S]
        [--out FILE]

Each repeat asks about N other recent buyers; with --pause, S seconds pass between repeats.
The files are read into the page cache and locked there as the service does ([service]
prefetch and lock; SHORTLIST_SERVICE_LOCK=false measures without the lock).

It also reports `Pipeline.load`'s time and memory, and a second process loading the same
workspace while the first still serves: the saved state is memory-mapped, so the second adds
mostly its private memory (`private_mb`); pages of the mapped files are shared (`pss_mb` splits
them between the processes that map them).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from shortlist import columns as C
from shortlist.data.offline import OfflineStore
from shortlist.pipeline import Pipeline
from shortlist.workspace import open_workspace

TARGET_P99_MS = 10.0


def pct(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples)
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99))}


def memory() -> dict[str, float]:
    """This process's memory (MB) from /proc/self/smaps_rollup: resident, proportional share of
    shared pages, private, and the part of the resident set that is mapped files."""
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":")
        fields[name] = int(value.split()[0]) / 1024
    return {
        "rss_mb": round(fields["Rss"], 1),
        "pss_mb": round(fields["Pss"], 1),
        "private_mb": round(fields["Private_Clean"] + fields["Private_Dirty"], 1),
        "shared_mb": round(fields["Shared_Clean"] + fields["Shared_Dirty"], 1),
    }


_LOCKED: list = []  # the locks prefetch_like_serve took: held while the benchmark runs


def prefetch_like_serve(workspace: Path) -> dict:
    """What `shortlist serve` does at each load before it says ready: the files requests read
    through memory maps read into the page cache (`[service] prefetch`), and locked there
    (`[service] lock`) for as long as this process runs."""
    from shortlist.service.engine import lock_workspace, prefetch_workspace

    ws = open_workspace(workspace)
    service = ws.settings().service
    started = time.perf_counter()
    files, size, skipped = prefetch_workspace(ws.root, service.prefetch)
    out = {"files": files, "mib": round(size / 2**20, 1), "skipped": skipped,
           "seconds": round(time.perf_counter() - started, 2)}  # fmt: skip
    if skipped is None and service.lock:
        locked, why = lock_workspace(ws.root, service.prefetch)
        _LOCKED.append(locked)
        out["locked_mib"] = round(locked.bytes / 2**20, 1)
        out["not_locked"] = why
    else:
        out["locked_mib"] = 0.0
        out["not_locked"] = "[service] lock = false" if skipped is None else skipped
    return out


def second_process(workspace: Path, ids: list[str]) -> dict:
    """Load the same workspace in another process (while this one serves), recommend, report."""
    code = (
        "import json, sys, time; from shortlist.pipeline import Pipeline; "
        "from shortlist.workspace import open_workspace; "
        "sys.path.insert(0, 'benchmarks'); from bench_pipeline import memory; "
        "t = time.perf_counter(); "
        f"p = Pipeline.from_config(open_workspace({str(workspace)!r})).load(); "
        "s = time.perf_counter() - t; "
        f"[p.recommend(u) for u in {ids!r}]; "
        "print(json.dumps({'load_seconds': s, **memory()}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def store_cost(pipeline: Pipeline, users: np.ndarray, ids: list[str], repeat: int) -> dict:
    """What reading the users' features from the online store costs a request: the read and
    layout alone (`OnlineUsers.view`, three batched reads), and the whole request with the
    same features held in memory instead (the feature store's saved groups read whole, as
    before the online store was on the request path), runs alternating."""
    from shortlist.features.store import FeatureStore
    from shortlist.pipeline.saved import read_manifest
    from shortlist.ranking.features import RankingFeatures

    funnel = pipeline.funnel_
    online = funnel.features
    if online is None or online.online_ is None:
        return {}
    saved = read_manifest(pipeline.workspace)["features"]
    store = FeatureStore(pipeline.workspace)
    groups = {name: store.read(name, v) for name, v in saved["versions"].items()}
    memory_features = RankingFeatures(
        max_values=online.max_values, affinity_attributes=online.affinity_attributes
    ).from_groups(groups, online.cutoff_, funnel.catalog.data, saved["eligible"])
    del groups
    view = []
    for u in users:
        t = time.perf_counter()
        online.online_.view(np.asarray([u]))
        view.append((time.perf_counter() - t) * 1000)
    totals: dict[str, list[dict]] = {"online": [], "in_memory": []}
    for _ in range(repeat):
        for name, features in (("online", online), ("in_memory", memory_features)):
            funnel.features = features
            times = []
            for user in ids:
                t = time.perf_counter()
                pipeline.recommend(user)
                times.append((time.perf_counter() - t) * 1000)
            totals[name].append(pct(times))
    funnel.features = online
    med = {
        name: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        for name, runs in totals.items()
    }
    return {"online_read": pct(view), "request_online": med["online"],
            "request_in_memory": med["in_memory"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", required=True, type=Path)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--pause", type=float, default=0.0,
        help="seconds between repeats (pages unused that long may be reclaimed meanwhile)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)

    started = time.perf_counter()
    pipeline = Pipeline.from_config(open_workspace(args.workspace)).load()
    load_seconds = time.perf_counter() - started
    funnel = pipeline.funnel_
    assert funnel is not None
    prefetched = prefetch_like_serve(args.workspace)
    after_load = memory()
    # a loaded pipeline reads no interactions: the benchmark picks recent buyers itself, with
    # one query (not the whole dataset, which would count in this process's memory)
    recent = (
        OfflineStore(open_workspace(args.workspace))
        .sql(
            f"SELECT DISTINCT {C.USER_IDX} AS u FROM (SELECT {C.USER_IDX} FROM interactions "
            f"ORDER BY {C.TIMESTAMP} DESC, {C.USER_IDX}, {C.ITEM_IDX} LIMIT 200000) ORDER BY u"
        )
        .fetchnumpy()["u"]
        .astype(np.int64)
    )
    rng = np.random.default_rng(0)
    # each repeat asks about other users, as a service keeps meeting users it has not served
    # for a while (their pages are the ones a reclaim may have dropped; see --pause)
    drawn = rng.choice(recent, min(args.users * args.repeat, len(recent)), replace=False)
    rounds = [drawn[(r * args.users) % len(drawn) :][: args.users] for r in range(args.repeat)]
    users = rounds[0]
    ids = [str(funnel.catalog.user_ids[u]) for u in users]
    for user in ids[:20]:  # warm caches (compiled scorer, FAISS, torch)
        pipeline.recommend(user)

    runs, stages, sources, candidates, proposed = [], {}, {}, [], []
    cpu: list[float] = []  # the thread's processor time per request: what waits do not count
    for r in range(args.repeat):
        if r and args.pause:
            time.sleep(args.pause)
        totals = []
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_majflt
        for user in (str(funnel.catalog.user_ids[u]) for u in rounds[r]):
            t, c = time.perf_counter(), time.thread_time()
            rec = pipeline.recommend(user)
            totals.append((time.perf_counter() - t) * 1000)
            cpu.append((time.thread_time() - c) * 1000)
            for stage in rec.trace:
                stages.setdefault(stage["stage"], []).append(stage["ms"])
                for name, ms in stage.get("source_ms", {}).items():
                    sources.setdefault(name, []).append(ms)
                if "score_ms" in stage:
                    stages.setdefault("score (trees)", []).append(stage["score_ms"])
            candidates.append(rec.trace[0]["out"])
            proposed.append(sum(rec.trace[0]["sources"].values()))
        runs.append(pct(totals))
        runs[-1]["max_ms"] = max(totals)
        runs[-1]["major_faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_majflt - faults
    n_items, n_users = funnel.catalog.data.n_items, funnel.catalog.data.n_users
    first = memory()
    second = second_process(args.workspace, ids[:20])
    cost = store_cost(pipeline, users, ids, args.repeat)
    total = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    result = {
        "benchmark": "recommend_one_user",
        "workspace": str(args.workspace),
        "users": len(ids),
        "repeat": args.repeat,
        "pause_s": args.pause,
        "runs": runs,  # each repeat's own users: p50, p99, max, major page faults
        "items": n_items,
        "all_users": n_users,
        "load_seconds": load_seconds,
        "prefetch": prefetched,  # as the service does before it says ready
        "memory_after_load": after_load,
        # both processes at once: this one after serving, the second after loading and 20 users
        "memory_first_process": first,
        "second_process": second,
        "online_store_cost": cost,
        "scorer": funnel.scorer.name if funnel.scorer is not None else None,
        "sources_config": [(s.name, s.segment, s.k) for s in pipeline.spec.sources],
        "diversify": pipeline.spec.diversify.method,
        "mean_candidates": float(np.mean(candidates)),
        "min_candidates": int(np.min(candidates)),
        "mean_proposed": float(np.mean(proposed)),
        "total": total,
        # the processor time the request's thread used, all rounds together: the wall-clock
        # figures less the waits (for a core, the disk), which a shared machine adds
        "cpu": pct(cpu),
        "stages": {name: pct(v) for name, v in stages.items()},
        "sources": {name: pct(v) for name, v in sources.items()},
        "target_p99_ms": TARGET_P99_MS,
        "meets_target": total["p99_ms"] <= TARGET_P99_MS,
    }
    print(
        f"recommend one user ({result['mean_candidates']:.0f} candidates, at least "
        f"{result['min_candidates']}; {result['scorer']}; diversify {result['diversify']}): "
        f"p50 {total['p50_ms']:.2f} ms  p99 {total['p99_ms']:.2f} ms  "
        f"(target {TARGET_P99_MS} ms: {'met' if result['meets_target'] else 'MISSED'}); "
        f"load {load_seconds:.1f} s"
    )
    print(
        f"  memory: first process rss {first['rss_mb']:.0f} MB (private {first['private_mb']:.0f}"
        f" MB); second process load {second['load_seconds']:.1f} s, rss {second['rss_mb']:.0f}"
        f" MB (private {second['private_mb']:.0f} MB, shared {second['shared_mb']:.0f} MB)"
    )
    print(f"  processor time per request p50 {result['cpu']['p50_ms']:.2f} ms  p99 "
          f"{result['cpu']['p99_ms']:.2f} ms (the thread's own, waits excluded)")  # fmt: skip
    for r, run in enumerate(runs):
        print(
            f"  repeat {r + 1}: p50 {run['p50_ms']:.2f} ms  p99 {run['p99_ms']:.2f} ms  max "
            f"{run['max_ms']:.1f} ms  major page faults {run['major_faults']}"
        )
    if cost:
        print(
            f"  online store: the users' reads p50 {cost['online_read']['p50_ms']:.3f} ms, p99 "
            f"{cost['online_read']['p99_ms']:.3f} ms; request p50/p99 "
            f"{cost['request_online']['p50_ms']:.2f}/{cost['request_online']['p99_ms']:.2f} ms "
            f"against {cost['request_in_memory']['p50_ms']:.2f}/"
            f"{cost['request_in_memory']['p99_ms']:.2f} ms with the features in memory"
        )
    for name, row in {**result["stages"], **result["sources"]}.items():
        print(f"  {name:14s} p50 {row['p50_ms']:7.3f} ms  p99 {row['p99_ms']:7.3f} ms")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
