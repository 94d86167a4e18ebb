"""The service under load: `shortlist serve` on a built workspace, driven over loopback by `wrk`
(Debian package) from a separate process.

For each number of workers (`--workers`, default 1 and 2) the service is started on a free port
and waited for (/readyz); then, per endpoint and per concurrency (`--concurrency`, default 1, 8
and 32 connections), `wrk` runs a warm-up and a measured run of `--duration` seconds, each
request drawn at random from a fixed list (known users' recommendations; similar items and cart
add-ons of items bought recently). Reported per run: requests/s, p50/p95/p99/max latency (wrk's
own measurement, closed loop: a connection sends its next request when the answer arrives),
errors (non-2xx, socket errors, timeouts), degraded answers, and the share of the server's time
per funnel stage (from /metrics, before and after the run).

    python benchmarks/bench_serve.py --workspace WS [--workers 1 2] [--concurrency 1 8 32]
        [--duration 10] [--online redis://HOST:PORT/DB] [--name full]

Writes results/serve_<name>.json (`make bench-serve` runs it on benchmarks/.data/ws_<scale>).
Targets (issue 14): one client, recommendations, LMDB: p99 <= 15 ms; 2 workers: >= 300
requests/s with p99 <= 50 ms and no errors; with Redis, the same reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from shortlist.data.offline import OfflineStore
from shortlist.workspace import open_workspace

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ENDPOINTS = {
    "recommendations": "/v1/users/{user_id}/recommendations",
    "similar": "/v1/items/{item_id}/similar",
    "cart": "/v1/cart/recommendations",
}
SAMPLES = 2000  # distinct requests per endpoint, drawn from at random

LUA = r"""
local requests = {}
%(requests)s
local n = #requests
local headers = {["Content-Type"] = "application/json"}

setup = function(thread)
  thread:set("seed", math.random(1, 1000000))
end

init = function(args)
  math.randomseed(seed)
end

request = function()
  local r = requests[math.random(n)]
  return wrk.format(r[1], r[2], headers, r[3])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p95_us": %%d, ' ..
    '"p99_us": %%d, "max_us": %%d, "mean_us": %%.1f, "status_errors": %%d, ' ..
    '"connect_errors": %%d, "read_errors": %%d, "write_errors": %%d, "timeouts": %%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, latency.mean, e.status, e.connect, e.read, e.write,
    e.timeout))
end
"""


def lua_string(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def requests_for(ws: Any, endpoint: str, rng: random.Random) -> list[tuple[str, str, str | None]]:
    """(method, path, body) for `SAMPLES` requests of the endpoint: known users who bought in
    the last weeks, items they bought."""
    store = OfflineStore(ws)
    if endpoint == "recommendations":
        rows = store.sql(
            "SELECT u.user_id FROM users u JOIN (SELECT user_idx FROM interactions WHERE "
            "timestamp >= (SELECT max(timestamp) FROM interactions) - INTERVAL 28 DAY "
            f"GROUP BY user_idx ORDER BY hash(user_idx) LIMIT {SAMPLES}) USING (user_idx)"
        ).fetchall()
        path = ENDPOINTS[endpoint]
        return [("GET", path.format(user_id=str(r[0])), None) for r in rows]
    rows = store.sql(
        "SELECT it.item_id FROM items it JOIN (SELECT item_idx FROM interactions WHERE "
        "timestamp >= (SELECT max(timestamp) FROM interactions) - INTERVAL 28 DAY "
        f"GROUP BY item_idx ORDER BY hash(item_idx) LIMIT {SAMPLES}) USING (item_idx)"
    ).fetchall()
    items = [str(r[0]) for r in rows]
    rng.shuffle(items)
    if endpoint == "similar":
        return [("GET", ENDPOINTS[endpoint].format(item_id=i) + "?k=12", None) for i in items]
    return [
        ("POST", ENDPOINTS[endpoint], json.dumps({"cart": rng.sample(items, 2), "k": 12}))
        for _ in items
    ]


def write_script(folder: Path, name: str, requests: list[tuple[str, str, str | None]]) -> Path:
    lines = [
        f"requests[{i + 1}] = {{{lua_string(m)}, {lua_string(p)}, "
        f"{lua_string(b) if b is not None else 'nil'}}}"
        for i, (m, p, b) in enumerate(requests)
    ]
    path = folder / f"{name}.lua"
    path.write_text(LUA % {"requests": "\n".join(lines)})
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`shortlist serve` as a subprocess, its log in a file."""

    def __init__(self, ws: Path, workers: int, online: str | None, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        cmd = [sys.executable, "-m", "shortlist.cli", "-q", "--workspace", str(ws), "serve",
               "--port", str(self.port), "--workers", str(workers),
               "--log-level", "warning"]  # fmt: skip
        if online:
            cmd += ["--online", online]
        with open(log, "wb") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.started = time.perf_counter()

    def wait_ready(self, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"shortlist serve exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise SystemExit(f"shortlist serve not ready after {timeout} s")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{self.url}/metrics", timeout=30).text
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for line in text.splitlines():
            m = re.match(r"^(\w+)(?:\{(.*)\})? ([0-9.eE+-]+|NaN)$", line)
            if not m:
                continue
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")))
            out[(m.group(1), labels)] = float(m.group(3))
        return out

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def process_memory(pid: int) -> list[dict[str, Any]]:
    """Memory (MB) of the service's process and its children (forked workers), from
    /proc/PID/smaps_rollup after the runs: resident, proportional share (shared pages divided
    among the processes mapping them: the PSS of all adds up to what they hold together),
    private (pages no other process maps) and, of those, dirty (the heap; for a forked worker,
    the pages it copied from its parent by writing them)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        pids += [int(c) for c in task.read_text().split()]
    out = []
    for p in pids:
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:  # ended meanwhile
            continue
        f = {}
        for line in text.splitlines()[1:]:
            name, value = line.split(":")
            f[name] = int(value.split()[0]) / 1024
        out.append({
            "pid": p,
            "role": "main" if p == pid else "worker",
            "rss_mb": round(f["Rss"], 1),
            "pss_mb": round(f["Pss"], 1),
            "private_mb": round(f["Private_Clean"] + f["Private_Dirty"], 1),
            "private_dirty_mb": round(f["Private_Dirty"], 1),
        })  # fmt: skip
    return out


def delta(after: dict, before: dict, name: str, **match: str) -> dict[tuple, float]:
    """The increase of each series of the metric `name` whose labels include `match`."""
    out = {}
    for (metric, labels), value in after.items():
        if metric != name:
            continue
        d = dict(labels)
        if all(d.get(k) == v for k, v in match.items()):
            out[labels] = value - before.get((metric, labels), 0.0)
    return out


def run_wrk(url: str, script: Path, connections: int, seconds: float) -> dict[str, Any]:
    threads = max(1, min(2, connections))
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s",
           "--timeout", "10s", "-s", str(script), url]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line[len("RESULT ") :])
    seconds_run = raw["duration_us"] / 1e6
    errors = sum(raw[k] for k in ("status_errors", "connect_errors", "read_errors",
                                  "write_errors", "timeouts"))  # fmt: skip
    return {
        "requests": raw["requests"],
        "seconds": round(seconds_run, 2),
        "requests_per_s": round(raw["requests"] / seconds_run, 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "mean_ms": round(raw["mean_us"] / 1000, 3),
        "errors": errors,
        "error_detail": {
            k: raw[k]
            for k in ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts")
        },  # fmt: skip
    }


def stage_shares(after: dict, before: dict, route: str) -> dict[str, float]:
    """Share of the server's stage time per funnel stage, for the route, during the run."""
    sums = delta(after, before, "shortlist_stage_duration_seconds_sum", endpoint=route)
    total = sum(sums.values())
    if total <= 0:
        return {}
    return {dict(k)["stage"]: round(v / total, 3) for k, v in sorted(sums.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", required=True, type=Path)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--endpoints", nargs="+", default=list(ENDPOINTS), choices=list(ENDPOINTS))
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds per measured run")
    parser.add_argument("--warmup", type=float, default=3.0, help="Seconds of warm-up per run")
    parser.add_argument("--online", default=None, help="Serve from this Redis URL")
    parser.add_argument("--name", default=None, help="results/serve_<name>.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    ws = open_workspace(args.workspace)
    if not (ws.root / "models" / "pipeline.json").is_file():
        raise SystemExit(f"{ws.root} is not built: run `shortlist build` (or make bench) first")
    rng = random.Random(0)
    folder = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    scripts = {e: write_script(folder, e, requests_for(ws, e, rng)) for e in args.endpoints}
    n_users = OfflineStore(ws).sql("SELECT count(*) FROM users").fetchall()[0][0]
    n_items = OfflineStore(ws).sql("SELECT count(*) FROM items").fetchall()[0][0]
    runs = []
    starts = {}
    memory: dict[int, list[dict[str, Any]]] = {}
    for workers in args.workers:
        server = Server(ws.root, workers, args.online, folder / f"serve_{workers}.log")
        try:
            starts[workers] = round(server.wait_ready(), 1)
            print(f"{workers} worker(s) ready in {starts[workers]} s", flush=True)
            for endpoint in args.endpoints:
                route = ENDPOINTS[endpoint]
                for connections in args.concurrency:
                    run_wrk(server.url, scripts[endpoint], connections, args.warmup)
                    before = server.metrics()
                    result = run_wrk(server.url, scripts[endpoint], connections, args.duration)
                    after = server.metrics()
                    degraded = sum(delta(after, before, "shortlist_fallbacks_total",
                                         endpoint=route, reason="degraded").values())  # fmt: skip
                    cold = sum(delta(after, before, "shortlist_cold_starts_total",
                                     endpoint=route).values())  # fmt: skip
                    row = {
                        "workers": workers,
                        "endpoint": endpoint,
                        "connections": connections,
                        **result,
                        "degraded": int(degraded),
                        "cold_starts": int(cold),
                        "stage_share": stage_shares(after, before, route),
                    }
                    runs.append(row)
                    print(
                        f"workers={workers} {endpoint:15s} c={connections:<3d} "
                        f"{row['requests_per_s']:8.1f} req/s  p50 {row['p50_ms']:7.2f}  "
                        f"p95 {row['p95_ms']:7.2f}  p99 {row['p99_ms']:7.2f} ms  "
                        f"errors {row['errors']}  degraded {row['degraded']}",
                        flush=True,
                    )
            memory[workers] = process_memory(server.process.pid)
            print(
                f"workers={workers} memory: PSS {sum(m['pss_mb'] for m in memory[workers]):.0f}"
                " MB in all; "
                + "; ".join(
                    f"{m['role']} rss {m['rss_mb']:.0f} pss {m['pss_mb']:.0f} private "
                    f"{m['private_mb']:.0f} (dirty {m['private_dirty_mb']:.0f})"
                    for m in memory[workers]
                ),
                flush=True,
            )
        finally:
            server.stop()
    name = args.name or ws.root.name
    out = {
        "benchmark": "serve",
        "workspace": str(args.workspace),
        "online": args.online or "lmdb",
        "users": int(n_users),
        "items": int(n_items),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "ready_seconds": starts,
        "runs": runs,
        "memory": memory,
        "load_tool": subprocess.run(
            ["wrk", "--version"], capture_output=True, text=True
        ).stdout.splitlines()[0:1],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"serve_{name}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
