"""Ranker scoring benchmark: one request's candidates scored by LightGBM vs the compiled trees.

A LightGBM lambdarank model (default 300 trees, 63 leaves, 60 features of which 5 categorical,
10 % missing values) is trained on synthetic requests and saved as text; then each request's
`--rows` candidates are scored one request at a time, on one thread, by
`Booster.predict(raw_score=True)`, by the compiled library (`shortlist.ranking.scoring`, on
float64 and on float32 rows) and, for comparison, by tl2cgen's own `Predictor` on a `DMatrix`
(the same library). Latencies are per request, wall clock and this thread's CPU time (the
machine is shared: CPU time leaves out waiting for a core); p50 and p99 are the medians over
`--repeat` passes. Compile seconds are for a cold cache, per optimisation level; the compiled
scores are checked equal to LightGBM's. Every value is random by default (the worst case for
branch prediction); `--request-features K` makes K numeric features equal within a request.

    python benchmarks/bench_ranker.py [--trees T] [--rows R] [--requests N] [--repeat K]
                                      [--opt-levels O1 O2] [--request-features K] [--out FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from shortlist.ranking.scoring import OPT_LEVEL, CompiledScorer, LightGBMScorer

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"p99_ms": 3.0}  # 300 candidates of one request, one core
N_FEATURES, N_CATEGORICAL, N_CATEGORIES = 60, 5, 40


def make_requests(
    n_groups: int, rows: int, seed: int, shared: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(X (n_groups * rows, 60), graded relevance 0-3); categorical columns come first, then
    `shared` numeric columns equal on all rows of a request (as user features are)."""
    rng = np.random.default_rng(seed)
    n = n_groups * rows
    X = rng.normal(size=(n, N_FEATURES))
    X[:, :N_CATEGORICAL] = rng.integers(0, N_CATEGORIES, (n, N_CATEGORICAL))
    effect = rng.normal(size=(N_CATEGORICAL, N_CATEGORIES))
    w = rng.normal(size=N_FEATURES - N_CATEGORICAL) / np.sqrt(N_FEATURES)
    num = X[:, N_CATEGORICAL:]
    signal = (
        num @ w
        + np.sin(2 * num[:, 0]) * num[:, 1]
        + (num[:, 2] > 0.5) * num[:, 3]
        + sum(effect[c, X[:, c].astype(int)] for c in range(N_CATEGORICAL)) / 2
    )
    X[rng.random(X.shape) < 0.10] = np.nan
    if shared:
        cols = slice(N_CATEGORICAL, N_CATEGORICAL + shared)
        X[:, cols] = np.repeat(X[::rows, cols], rows, axis=0)
    score = signal + rng.normal(scale=0.7, size=n)
    y = np.digitize(score, np.quantile(score, [0.8, 0.93, 0.98]))
    return X, y


def train(trees: int, seed: int, folder: Path) -> tuple[Path, float]:
    X, y = make_requests(300, 100, seed)
    params = {
        "objective": "lambdarank",
        "num_leaves": 63,
        "learning_rate": 0.05,
        "min_data_in_leaf": 20,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambdarank_truncation_level": 20,
        "seed": seed,
        "verbosity": -1,
        "num_threads": 1,  # OpenMP on a shared 2-core machine is many times slower, not faster
    }
    data = lgb.Dataset(X, y, group=[100] * 300, categorical_feature=list(range(N_CATEGORICAL)))
    started = time.perf_counter()
    booster = lgb.train(params, data, num_boost_round=trees)
    seconds = time.perf_counter() - started
    path = folder / "ranker.txt"
    booster.save_model(str(path))
    return path, seconds


def timed(fn: Callable[[np.ndarray], Any], requests: list[np.ndarray], n: int, repeat: int):
    """Per-request latencies over `repeat` passes of `n` requests: median p50/p99 (ms), wall
    clock and this thread's CPU time (the machine is shared: CPU time leaves out waiting)."""
    runs: dict[str, list[float]] = {"p50_ms": [], "p99_ms": [], "cpu_p50_ms": [], "cpu_p99_ms": []}
    for _ in range(3):
        fn(requests[0])  # warm-up
    for _ in range(repeat):
        gc.collect()
        wall, cpu = np.empty(n), np.empty(n)
        for i in range(n):
            X = requests[i % len(requests)]
            t, c = time.perf_counter(), time.thread_time()
            fn(X)
            wall[i], cpu[i] = time.perf_counter() - t, time.thread_time() - c
        for name, lat in (("", wall), ("cpu_", cpu)):
            runs[f"{name}p50_ms"].append(float(np.percentile(lat, 50) * 1e3))
            runs[f"{name}p99_ms"].append(float(np.percentile(lat, 99) * 1e3))
    return {key: statistics.median(values) for key, values in runs.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=300)
    parser.add_argument("--rows", type=int, default=300, help="candidates per request")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="timing passes; medians reported")
    parser.add_argument(
        "--opt-levels",
        nargs="+",
        default=[OPT_LEVEL.lstrip("-")],
        help="compiler optimisation levels to compile and time (O1 O2 O3)",
    )
    parser.add_argument(
        "--request-features",
        type=int,
        default=0,
        help="numeric features equal on all rows of a scored request (user-level features; "
        "their splits are then predictable). 0: every value random, the worst case",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "ranker_scoring.json")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "benchmark": "ranker_scoring",
        "command": " ".join(
            ["python", "benchmarks/bench_ranker.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "trees": args.trees,
        "num_leaves": 63,
        "features": N_FEATURES,
        "categorical": N_CATEGORICAL,
        "rows": args.rows,
        "request_features": args.request_features,
        "requests": args.requests,
        "repeat": args.repeat,
        "threads": 1,
        "targets": TARGETS,
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_path, result["train_seconds"] = train(args.trees, args.seed, folder)
        X, _ = make_requests(100, args.rows, args.seed + 1, args.request_features)
        requests = [
            np.ascontiguousarray(X[i * args.rows : (i + 1) * args.rows]) for i in range(100)
        ]
        reference = LightGBMScorer(model_path)
        result["trees"] = reference.booster.num_trees()
        want = reference.predict(X)
        print(
            f"{result['trees']} trees, 63 leaves, {N_FEATURES} features; "
            f"{args.rows} rows per request, {args.requests} requests x {args.repeat}"
        )
        scenarios: dict[str, Any] = {}
        scenarios["lightgbm"] = timed(reference.predict, requests, args.requests, args.repeat)
        base = scenarios["lightgbm"]
        result["compile"] = {}
        for level in (f"-{o.lstrip('-')}" for o in args.opt_levels):
            cache = folder / f"compiled{level}"
            compiled = CompiledScorer(model_path, cache, opt_level=level)
            started = time.perf_counter()
            again = CompiledScorer(model_path, cache, opt_level=level)
            load_ms = (time.perf_counter() - started) * 1e3
            assert not again.compiled_now
            got = compiled.predict(X)
            max_rel = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-6)))
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
            result["compile"][level] = {
                "seconds": compiled.compile_seconds,
                "cached_load_ms": load_ms,
                "library_mb": compiled.library.stat().st_size / 1e6,
                "max_rel_diff": max_rel,
            }
            name = f"compiled {level}"
            scenarios[name] = timed(compiled.predict, requests, args.requests, args.repeat)
            if level.lstrip("-") == args.opt_levels[-1].lstrip("-"):
                # the ranking features are float32: read as they are, no conversion
                requests32 = [r.astype(np.float32) for r in requests]
                scenarios[f"{name}, float32 rows"] = timed(
                    compiled.predict, requests32, args.requests, args.repeat
                )
                scenarios["tl2cgen Predictor+DMatrix"] = predictor_timing(
                    compiled.library, requests, args
                )
            print(
                f"  compile {level}: {compiled.compile_seconds:6.1f} s, cached load "
                f"{load_ms:5.1f} ms, max relative difference {max_rel:.1e}"
            )
        print(f"  {'':28s}     wall p50/p99 ms      cpu p50/p99 ms   speedup (p50)")
        for name, s in scenarios.items():
            s["speedup"] = base["p50_ms"] / s["p50_ms"]
            s["cpu_speedup"] = base["cpu_p50_ms"] / s["cpu_p50_ms"]
            s["meets_target"] = bool(s["p99_ms"] <= TARGETS["p99_ms"])
            print(
                f"  {name:28s} {s['p50_ms']:7.3f} {s['p99_ms']:7.3f}    "
                f"{s['cpu_p50_ms']:7.3f} {s['cpu_p99_ms']:7.3f}    x{s['speedup']:5.1f}  "
                f"{'meets' if s['meets_target'] else 'misses'} 3 ms p99"
            )
        result["scenarios"] = scenarios
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "lightgbm": lgb.__version__,
        "platform": platform.platform(),
        "load_average_1min": os.getloadavg()[0],  # other work on the machine while measuring
    }
    result["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")
    return result


def predictor_timing(library: Path, requests: list[np.ndarray], args: argparse.Namespace):
    """tl2cgen's own runtime on the same library, a DMatrix built per request."""
    import tl2cgen

    predictor = tl2cgen.Predictor(library, nthread=1)

    def predict(X: np.ndarray) -> np.ndarray:
        return predictor.predict(tl2cgen.DMatrix(X), pred_margin=True)

    return timed(predict, requests, args.requests, args.repeat)


if __name__ == "__main__":
    main()
