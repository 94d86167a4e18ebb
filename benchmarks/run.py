"""`make bench`: speed and memory of the long jobs at full H&M scale, as JSON in results/.

Each measured run is a separate process, so its peak memory (max RSS from wait4) is its own.
Figures are medians over `--repeat` runs; the machine is shared and noisy.

    python benchmarks/run.py [--scale full|medium|small] [--repeat N] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DATA = HERE / ".data"  # generated inputs, several GB at full scale; git-ignored

# Targets from the issues; a benchmark reports against them, it does not fail the build.
TARGETS = {
    "generate": {"seconds": 300, "peak_gb": 8},
    "ingest": {"seconds": 60, "peak_gb": 6},
    "features": None,  # no target given; measured so regressions show
    "evaluate": {"seconds": 600},  # all baselines, one window
    # the funnel against the baselines, one window: every method, the pipeline fitted at the
    # window's cutoff (two-tower, ranking set, ranker, guard); no target given: it must fit
    "evaluate_pipeline": None,
    "train": {"seconds": 1200, "peak_gb": 12},  # two-tower, one epoch (plus loading, validation)
    "index": {"seconds": 60},  # `shortlist index` on the trained item vectors
    # `shortlist train pipeline` (what `build` runs after features): its two-tower, the index,
    # the ranking set, the ranker; no target given; measured so regressions show
    "pipeline": None,
    "predict": {"seconds": 1800},  # `shortlist predict` for every user
    # bench_online.py: `materialize` per backend, then 250 items' features in one batched read
    "online": {"lmdb_p99_ms": 1, "redis_p99_ms": 3},
}


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Wall seconds and peak RSS (GB) of one child process."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"benchmark command failed: {' '.join(cmd)}\n{stderr}")
    return {"seconds": seconds, "peak_gb": usage.ru_maxrss / 1024**2}


def shortlist(*args: str) -> list[str]:
    return [sys.executable, "-m", "shortlist.cli", "--quiet", *args]


def summarize(name: str, scale: str, runs: list[dict[str, float]], extra: dict) -> dict:
    result = {
        "benchmark": name,
        "scale": scale,
        "runs": runs,
        "median_seconds": statistics.median(r["seconds"] for r in runs),
        "max_peak_gb": max(r["peak_gb"] for r in runs),
        "target": TARGETS.get(name) if scale == "full" else None,
        **extra,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    target = result["target"]
    if target:
        result["meets_target"] = result["median_seconds"] <= target["seconds"] and result[
            "max_peak_gb"
        ] <= target.get("peak_gb", float("inf"))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}_{scale}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    verdict = (
        ""
        if not target
        else (
            f"  (target {target['seconds']} s"
            + (f", {target['peak_gb']} GB" if "peak_gb" in target else "")
            + f": {'met' if result['meets_target'] else 'MISSED'})"
        )
    )
    print(
        f"{name:10s} {scale:7s} median {result['median_seconds']:7.1f} s  "
        f"peak {result['max_peak_gb']:5.2f} GB  over {len(runs)} run(s){verdict}  -> {path}"
    )
    return result


def bench_generate(scale: str, repeat: int) -> Path:
    out = DATA / scale
    runs = []
    for _ in range(repeat):
        shutil.rmtree(out, ignore_errors=True)
        runs.append(
            measure(shortlist("generate", "--scale", scale, "--seed", "0", "--out", str(out)))
        )
    size = sum(p.stat().st_size for p in out.glob("*.csv"))
    summarize("generate", scale, runs, {"csv_bytes": size})
    return out


def bench_ingest(scale: str, repeat: int, source: Path) -> None:
    ws = DATA / f"ws_{scale}"
    ws.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "workspace.toml", ws / "shortlist.toml")  # the pipeline benchmarked
    runs = []
    for _ in range(repeat):
        runs.append(
            measure(
                shortlist(
                    "--workspace", str(ws), "ingest", "--source", str(source), "--format", "hm"
                )
            )
        )
    manifest = json.loads((ws / "offline" / "manifest.json").read_text())
    summarize(
        "ingest",
        scale,
        runs,
        {
            "source_rows": manifest["source_rows"],
            "interactions": manifest["interactions"]["rows"],
            "users": manifest["users"]["rows"],
            "items": manifest["items"]["rows"],
        },
    )


def bench_features(scale: str, repeat: int) -> None:
    ws = DATA / f"ws_{scale}"
    runs = [measure(shortlist("--workspace", str(ws), "features")) for _ in range(repeat)]
    summarize("features", scale, runs, {})


PIPELINE_METHODS = "popular,repurchase_trending,copurchase,als,two_tower,pipeline,pipeline_no_guard"


def bench_evaluate(scale: str, repeat: int, name: str = "evaluate", methods: str = "") -> None:
    """`evaluate --windows 1`: the five baselines, or `methods` (the `evaluate_pipeline`
    benchmark: the pipeline next to the baselines and the two-tower alone)."""
    ws = DATA / f"ws_{scale}"
    report = RESULTS / f"{name}_{scale}_report.json"
    chosen = ["--methods", methods] if methods else []
    cmd = shortlist(
        "--workspace", str(ws), "evaluate", "--windows", "1", *chosen, "--json", str(report)
    )
    runs = [measure(cmd) for _ in range(repeat)]
    got = json.loads(report.read_text())["methods"]
    extra: dict = {
        "map@12": {n: m["map@12"] for n, m in got.items()},
        "map@12_se": {n: m["map@12_se"] for n, m in got.items()},
        "compared": {n: m["compared"] for n, m in got.items() if "compared" in m},
        "method_seconds": {n: m["seconds"] for n, m in got.items()},
    }
    if "pipeline" in got:
        extra["ranking"] = got["pipeline"]["per_window"][0].get("ranking")
    summarize(name, scale, runs, extra)


def bench_train(scale: str, repeat: int) -> None:
    """One epoch of the two-tower (`shortlist train retrieval` with epochs = 1)."""
    ws = DATA / f"ws_{scale}"
    cmd = shortlist("--workspace", str(ws), "train", "retrieval")
    runs = [measure(cmd, {"SHORTLIST_RETRIEVAL_EPOCHS": "1"}) for _ in range(repeat)]
    config = json.loads((ws / "models" / "two_tower" / "config.json").read_text())
    summarize("train", scale, runs, {"epochs": config["training"]})


def bench_index(scale: str, repeat: int) -> None:
    """`shortlist index`, then latency and recall on the trained vectors (bench_retrieval.py)."""
    ws = DATA / f"ws_{scale}"
    runs = [measure(shortlist("--workspace", str(ws), "index")) for _ in range(repeat)]
    out = RESULTS / f"retrieval_{scale}.json"
    subprocess.run(
        [
            sys.executable,
            str(HERE / "bench_retrieval.py"),
            "--workspace",
            str(ws),
            "--out",
            str(out),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    detail = json.loads(out.read_text())
    summarize(
        "index",
        scale,
        runs,
        {
            k: detail[k]
            for k in (
                "encode_one_user",
                "hnsw_build_seconds",
                "hnsw_default_ef",
                "tuned",
                "filter",
                "search",
            )
        },
    )
    for name, row in detail["search"].items():
        print(
            f"  {name:20s} recall {row['recall']:.3f}  "
            f"p50 {row['p50_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms"
        )
    enc = detail["encode_one_user"]
    print(f"  encode one user      p50 {enc['p50_ms']:.3f} ms  p99 {enc['p99_ms']:.3f} ms")


def bench_pipeline(scale: str, repeat: int) -> None:
    """`shortlist train pipeline`: the two-tower (trained before the oldest ranking period),
    the index, the ranking set, the LightGBM ranker, saved."""
    ws = DATA / f"ws_{scale}"
    runs = [measure(shortlist("--workspace", str(ws), "train", "pipeline")) for _ in range(repeat)]
    manifest = json.loads((ws / "models" / "pipeline.json").read_text())
    summarize(
        "pipeline",
        scale,
        runs,
        {"report": manifest.get("ranker_report"), "steps_seconds": manifest.get("steps")},
    )


def bench_predict(scale: str, repeat: int) -> None:
    """`shortlist predict` for every user, then one-user latency (bench_pipeline.py)."""
    ws = DATA / f"ws_{scale}"
    out = DATA / f"submission_{scale}.csv"
    cmd = shortlist("--workspace", str(ws), "predict", "--out", str(out))
    runs = [measure(cmd) for _ in range(repeat)]
    detail = RESULTS / f"pipeline_{scale}.json"
    subprocess.run(
        [sys.executable, str(HERE / "bench_pipeline.py"), "--workspace", str(ws), "--out",
         str(detail)],
        check=True,
    )  # fmt: skip
    users = sum(1 for _ in out.open()) - 1
    summarize("predict", scale, runs, {"users": users, "recommend": json.loads(detail.read_text())})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale",
        default=os.environ.get("BENCH_SCALE", "full"),
        choices=["small", "medium", "full"],
    )
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("BENCH_REPEAT", 3)))
    parser.add_argument("--only", nargs="*", default=None, choices=list(TARGETS))
    args = parser.parse_args()
    only = set(args.only or TARGETS)
    source = DATA / args.scale
    if "generate" in only or not (source / "transactions_train.csv").is_file():
        # The generator is slow at full scale: one run unless more are asked for explicitly.
        source = bench_generate(
            args.scale, 1 if args.scale == "full" and not args.only else args.repeat
        )
    if "ingest" in only or not (DATA / f"ws_{args.scale}" / "offline").is_dir():
        bench_ingest(args.scale, args.repeat, source)
    if "features" in only:
        bench_features(args.scale, args.repeat)
    if "evaluate" in only:
        # Minutes per run at full scale: one run unless more are asked for explicitly.
        bench_evaluate(args.scale, 1 if args.scale == "full" and not args.only else args.repeat)
    if "evaluate_pipeline" in only:
        # An hour or more at full scale: one run unless more are asked for explicitly.
        bench_evaluate(
            args.scale,
            1 if args.scale == "full" and not args.only else args.repeat,
            "evaluate_pipeline",
            PIPELINE_METHODS,
        )
    if "train" in only or ("index" in only and not (DATA / f"ws_{args.scale}" / "models").is_dir()):
        # Tens of minutes at full scale: one run unless more are asked for explicitly.
        bench_train(args.scale, 1 if args.scale == "full" and not args.only else args.repeat)
    if "index" in only:
        bench_index(args.scale, args.repeat)
    if "pipeline" in only or (
        "predict" in only and not (DATA / f"ws_{args.scale}" / "models" / "pipeline.json").is_file()
    ):
        bench_pipeline(args.scale, 1 if args.scale == "full" and not args.only else args.repeat)
    if "predict" in only:
        bench_predict(args.scale, 1 if args.scale == "full" and not args.only else args.repeat)
    if "online" in only:
        if "features" not in only and not (DATA / f"ws_{args.scale}" / "features").is_dir():
            bench_features(args.scale, 1)  # the online store is filled from the feature store
        subprocess.run(
            [sys.executable, str(HERE / "bench_online.py"), "--scale", args.scale], check=True
        )
    if not args.only:
        # The synthetic-vector index benchmark (105k items, filters of every selectivity).
        subprocess.run([sys.executable, str(HERE / "bench_index.py")], check=True)


if __name__ == "__main__":
    main()
