"""Run methods through the last-week protocol over several windows and collect the metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import mean
from typing import Any

import numpy as np

from shortlist import resources
from shortlist.config import Settings
from shortlist.data.arrays import Dataset, Targets, TrainData, from_us, targets
from shortlist.errors import ConfigError
from shortlist.eval.baselines import BASELINES, Recommender, TwoTowerNearest
from shortlist.eval.candidates import BUDGETS, average, candidate_report, fit_sources
from shortlist.eval.pipeline_methods import PipelineFamily, pipeline_methods
from shortlist.eval.protocol import Window, windows
from shortlist.eval.uncertainty import compare, standard_error, window_spread
from shortlist.progress import say, scope, track
from shortlist.ranking.metrics import average_precision, coverage, ndcg, recall
from shortlist.retrieval.sources import TwoTowerSource, default_sources
from shortlist.workspace import Workspace

MethodFactory = Callable[[], Recommender]


TWO_TOWER = "two_tower"  # top-k straight from the two-tower model's nearest items (TwoTowerNearest)
ABLATIONS = "pipeline_ablations"  # every pipeline variant
DEEP = 100  # every method also ranks this many items, for recall@100 (retrieval quality)


def resolve_methods(
    names: Sequence[str] | None, settings: Settings | None = None
) -> dict[str, MethodFactory]:
    """Method factories by name (default: every baseline), rejecting unknown names.

    Pipeline-family names (see eval/pipeline_methods.py) use `settings` (the workspace's);
    "pipeline_ablations" stands for all of them.
    """
    settings = settings or Settings()
    family = PipelineFamily(settings)
    variants = pipeline_methods(settings)
    available: dict[str, MethodFactory] = dict(BASELINES)  # type: ignore[arg-type]
    available[TWO_TOWER] = lambda: TwoTowerNearest(settings.retrieval)
    available.update({name: family.factory(name) for name in variants})
    chosen = list(names) if names else list(BASELINES)
    if ABLATIONS in chosen:
        at = chosen.index(ABLATIONS)
        chosen[at : at + 1] = [v for v in variants if v not in chosen]
    unknown = [n for n in chosen if n not in available]
    if unknown:
        raise ConfigError(
            f"unknown method '{unknown[0]}' (choose from {', '.join(available)})", key="methods"
        )
    return {n: available[n] for n in chosen}


def score(recs: np.ndarray, tg: Targets, k: int, deep: int = DEEP) -> dict[str, Any]:
    """Mean metrics over the window's users (rows of `recs` follow `tg.users`).

    MAP, recall and NDCG at `k` on the first k columns; recall at `deep` on up to `deep`.
    "aps" and "recalls" hold the per-user AP@k and recall@k (for the uncertainty).
    """
    aps, recalls, ndcgs, deep_recalls = [], [], [], []
    for i, row in enumerate(recs.tolist()):
        rel = tg.of(i).tolist()
        aps.append(average_precision(row, rel, k))
        recalls.append(recall(row, rel, k))
        ndcgs.append(ndcg(row, rel, k))
        deep_recalls.append(recall(row, rel, deep))
    return {
        "map": float(np.mean(aps)),
        "recall": float(np.mean(recalls)),
        "ndcg": float(np.mean(ndcgs)),
        "recall_deep": float(np.mean(deep_recalls)),
        "aps": np.asarray(aps),
        "recalls": np.asarray(recalls),
    }


def evaluate(
    data: Dataset,
    methods: dict[str, MethodFactory],
    *,
    n_windows: int = 1,
    holdout_days: int = 7,
    k: int = 12,
    candidates: bool = False,
    settings: Settings | None = None,
    compare_to: str | None = None,
    jobs: int = 1,
    reload: Reload | None = None,
) -> dict[str, Any]:
    """Every method on every window; the result follows the `shortlist evaluate --json` contract.

    Every method's figures carry their standard error over users and their spread over
    windows; every method is compared, paired on the same users, with `compare_to` (default:
    the run's best baseline): the ratio of MAP@k with its 95 % bootstrap interval and the
    windows won (see eval/uncertainty.py).

    Methods see `TrainData.before(data, cutoff)` only, with the business rules that hold in
    the past (`Rules.as_of_past`: regions and age limits, not the end-of-data inventory).
    With `candidates`, also the candidate sources' recall (see eval/candidates.py), reported
    under "candidates"; `settings` are the workspace's (its [retrieval] for the two-tower).

    With `jobs` > 1 and `reload` (a picklable function returning the same `data` and
    `methods`, e.g. `WorkspaceData`), windows are evaluated side by side in `jobs` processes,
    each window whole in one of them, each process with its share of the threads: the figures
    are those of one process evaluating them in turn with that many threads. A window's
    training is mostly single-threaded (about 1.2 of 2 cores busy), so two processes finish
    12 windows in about half the time (hm-sample: 4 min 48 s against 10 min 24 s).

    Raises:
        ConfigError: bad protocol arguments, or a window with no history before it.
    """
    if n_windows < 1 or holdout_days < 1 or k < 1:
        raise ConfigError("windows, holdout days and k must be at least 1")
    if compare_to is not None and compare_to not in methods:
        raise ConfigError(
            f"--compare-to '{compare_to}' is not one of the methods run ({', '.join(methods)})",
            key="compare_to",
        )
    settings = settings or Settings()
    inter = data.interactions
    wins = windows(int(inter.time[-1]), holdout_days, n_windows)
    if wins[0].cutoff <= int(inter.time[0]):
        raise ConfigError(
            f"{n_windows} window(s) of {holdout_days} days leave no history before the first "
            f"cutoff {from_us(wins[0].cutoff):%Y-%m-%d}; use fewer windows or shorter ones",
            key="windows",
        )
    data = _past_rules(data)
    per_method: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
    per_window_candidates: list[dict[str, dict[str, float]]] = []
    jobs = min(jobs, len(wins)) if reload is not None else 1
    with track("Evaluating", total=len(wins) * len(methods)) as advance:
        if jobs > 1:
            assert reload is not None
            done = _windows_side_by_side(wins, jobs, reload, k, candidates, settings, advance)
        else:
            done = []
            for i, win in enumerate(wins, 1):
                rows: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
                where = _where(i, len(wins), win)
                cands = _evaluate_window(
                    data, win, methods, k, rows, advance, candidates, settings, where
                )
                done.append((rows, cands))
    for rows, cands in done:  # in window order
        for name in methods:
            per_method[name].extend(rows[name])
        if cands is not None:
            per_window_candidates.append(cands)
    extra = {"candidates": average(per_window_candidates)} if per_window_candidates else {}
    return {
        "dataset": {
            "users": data.n_users,
            "items": data.n_items,
            "interactions": len(inter),
            "start": from_us(int(inter.time[0])).isoformat(),
            "end": from_us(int(inter.time[-1])).isoformat(),
        },
        "protocol": {
            "holdout_days": holdout_days,
            "windows": n_windows,
            "k": k,
            "cutoffs": [from_us(w.cutoff).isoformat() for w in wins],
        },
        "methods": _with_comparisons(
            {name: _summary(rows, k) for name, rows in per_method.items()},
            per_method,
            k,
            compare_to,
        ),
        **extra,
    }


def evaluate_workspace(
    workspace: Workspace,
    methods: Sequence[str] | None = None,
    *,
    source: str | Path | None = None,
    format: str | None = None,
    n_windows: int = 1,
    holdout_days: int = 7,
    k: int = 12,
    candidates: bool = False,
    compare_to: str | None = None,
    user_part: tuple[int, int] | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """`evaluate` on a workspace's offline store (ingesting `source` first unless the store
    already holds it unchanged), methods named (default: every baseline), with the
    workspace's settings. `user_part` (i, n) keeps part i of n of the users (by a hash of
    their id, see Dataset.user_part) and their interactions: a disjoint population. `jobs`:
    processes evaluating windows side by side (0: `default_jobs`, what the CLI uses). They are
    spawned, so a script calling this with `jobs` other than 1 guards its top level with
    `if __name__ == "__main__":` (multiprocessing's rule: a spawned process imports the
    script again)."""
    from shortlist.data.arrays import load_dataset
    from shortlist.data.ingest import ingest, is_current
    from shortlist.data.offline import OfflineStore

    settings = workspace.settings()
    resources.configure(settings)
    chosen = resolve_methods(methods, settings)  # before any work: a typo fails at once
    if source is not None and not is_current(workspace, source, format):
        ingest(workspace, source, format=format)
    data = load_dataset(OfflineStore(workspace))
    if user_part is not None:
        data = data.user_part(*user_part)
    names = tuple(methods) if methods else None
    report = evaluate(
        data,
        chosen,
        n_windows=n_windows,
        holdout_days=holdout_days,
        k=k,
        candidates=candidates,
        settings=settings,
        compare_to=compare_to,
        jobs=jobs or default_jobs(n_windows, len(data.interactions)),
        reload=WorkspaceData(workspace.root, settings, names, user_part),
    )
    if user_part is not None:
        report["protocol"]["user_part"] = f"{user_part[0]}/{user_part[1]}"
    return report


Reload = Callable[[], tuple[Dataset, dict[str, MethodFactory]]]
WindowResult = tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, float]] | None]


@dataclass(frozen=True)
class WorkspaceData:
    """What a process evaluating windows side by side loads: the workspace's data (the part of
    the users asked for) and the methods named, with the workspace's settings (picklable: it
    travels to the processes, which read the offline store themselves)."""

    root: Path
    settings: Settings
    methods: tuple[str, ...] | None
    user_part: tuple[int, int] | None = None

    def __call__(self) -> tuple[Dataset, dict[str, MethodFactory]]:
        from shortlist.data.arrays import load_dataset
        from shortlist.data.offline import OfflineStore

        data = load_dataset(OfflineStore(Workspace(self.root)))
        if self.user_part is not None:
            data = data.user_part(*self.user_part)
        return data, resolve_methods(self.methods, self.settings)


def default_jobs(n_windows: int, interactions: int) -> int:
    """Processes `evaluate` uses by default: one per core up to one per window where
    `resources.side_by_side` allows (each holds its own copy of the data), else one."""
    if not resources.side_by_side(interactions):
        return 1
    return max(1, min(n_windows, resources.thread_count()))


def _past_rules(data: Dataset) -> Dataset:
    """The business rules that hold in the past (see `evaluate`)."""
    return data if data.rules is None else replace(data, rules=data.rules.as_of_past())


def _where(i: int, n: int, win: Window) -> str:
    return f"window {i}/{n} (cutoff {from_us(win.cutoff):%Y-%m-%d})"


_worker: dict[str, Any] = {}  # a side-by-side process's data, methods and protocol


def _worker_start(
    reload: Reload, threads: int, k: int, candidates: bool, settings: Settings
) -> None:
    resources.set_threads(threads)
    data, methods = reload()
    _worker.update(
        data=_past_rules(data), methods=methods, k=k, candidates=candidates, settings=settings
    )


def _worker_window(i: int, n: int, win: Window) -> WindowResult:
    w = _worker
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in w["methods"]}
    cands = _evaluate_window(
        w["data"], win, w["methods"], w["k"], rows, lambda *a, **kw: None,
        w["candidates"], w["settings"], _where(i, n, win),
    )  # fmt: skip
    return rows, cands


def _windows_side_by_side(
    wins: list[Window],
    jobs: int,
    reload: Reload,
    k: int,
    candidates: bool,
    settings: Settings,
    advance: Callable[..., None],
) -> list[WindowResult]:
    """Each window evaluated whole in one of `jobs` fresh processes (spawned: nothing of this
    process's thread pools or connections is inherited), results in window order."""
    from concurrent.futures import as_completed
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, resources.thread_count() // jobs)
    say(
        f"Evaluating {len(wins)} windows in {jobs} processes side by side, {threads} thread(s) each"
    )
    results: dict[int, WindowResult] = {}
    with resources.spawned_pool(
        jobs, initializer=_worker_start, initargs=(reload, threads, k, candidates, settings)
    ) as pool:
        futures = {
            pool.submit(_worker_window, i, len(wins), win): i for i, win in enumerate(wins, 1)
        }
        for future in as_completed(futures):
            i = futures[future]
            try:
                results[i] = future.result()
            except BrokenProcessPool:
                raise resources.process_died(
                    f"a process evaluating windows side by side ({jobs} of them)",
                    "run with --jobs 1, one window at a time",
                ) from None
            n_methods = len(results[i][0])
            took = sum(rows[0]["seconds"] for rows in results[i][0].values())
            say(f"{_where(i, len(wins), wins[i - 1])}: {n_methods} method(s) in {took:.1f} s")
            advance(n_methods, f"{len(results)} of {len(wins)} windows done")
    return [results[i] for i in sorted(results)]


def _evaluate_window(
    data: Dataset,
    win: Window,
    methods: dict[str, MethodFactory],
    k: int,
    out: dict[str, list[dict[str, Any]]],
    advance: Callable[..., None],
    candidates: bool,
    settings: Settings,
    where: str,
) -> dict[str, dict[str, float]] | None:
    train = TrainData.before(data, win.cutoff)
    tg = targets(data.interactions.between(win.cutoff, win.end))
    returning = np.zeros(data.n_users, bool)
    returning[train.interactions.user] = True
    returning = returning[tg.users]  # scored users who bought before the cutoff
    report = None
    two_tower: TwoTowerSource | None = None  # one training per window, shared when asked twice
    trained_seconds = 0.0
    if candidates:
        sources = default_sources(settings.retrieval, exact=True)
        two_tower = next(s for s in sources if isinstance(s, TwoTowerSource))
        with scope(f"candidate sources, {where}"):
            started = time.perf_counter()
            two_tower.fit(train)  # trained here, so its time goes to the two_tower method
            trained_seconds = time.perf_counter() - started
            results = fit_sources(sources, train, tg.users, max(BUDGETS))
        report = candidate_report(results, tg)
    for name, factory in methods.items():
        started = time.perf_counter()
        method = factory()
        if isinstance(method, TwoTowerNearest) and two_tower is not None:
            method.source = two_tower
            started -= trained_seconds  # trained once above, for both
        with scope(f"{name}, {where}"):
            method = method.fit(train)
            deep = method.recommend(tg.users, max(k, DEEP))
        extra = method.metrics(deep, k) if hasattr(method, "metrics") else {}
        recs = deep[:, :k]
        metrics = score(deep, tg, k)
        out[name].append(
            {
                **extra,
                "cutoff": from_us(win.cutoff).isoformat(),
                f"map@{k}": metrics["map"],
                f"recall@{k}": metrics["recall"],
                f"ndcg@{k}": metrics["ndcg"],
                f"recall@{DEEP}": metrics["recall_deep"],
                f"coverage@{k}": coverage(recs, data.n_items),
                "users_scored": len(tg.users),
                "seconds": round(time.perf_counter() - started, 3),
                "_aps": metrics["aps"],  # per user, for the uncertainty; not in the report
                "_recalls": metrics["recalls"],
                "_returning": returning,
            }
        )
        advance(1)
    return report


def _summary(rows: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """Metrics averaged over windows (each window weighs the same, whatever its user count)."""
    keys = list(dict.fromkeys([f"map@{k}", f"recall@{k}", f"ndcg@{k}", f"recall@{DEEP}"]))
    keys.append(f"coverage@{k}")
    keys += [key for key in rows[0] if key.startswith(("distinct_", "ild@")) and key not in keys]
    aps, recalls = [r["_aps"] for r in rows], [r["_recalls"] for r in rows]
    return {
        **{key: mean(r[key] for r in rows) for key in keys},
        f"map@{k}_se": standard_error(aps),
        f"map@{k}_window_sd": window_spread(aps),
        f"recall@{k}_se": standard_error(recalls),
        **_by_history(rows, k),
        "filters": rows[0].get("filters", {}),
        "users_scored": sum(r["users_scored"] for r in rows),
        "seconds": round(sum(r["seconds"] for r in rows), 3),
        **_ranking(rows),
        "per_window": [
            {
                "cutoff": r["cutoff"],
                f"map@{k}": r[f"map@{k}"],
                "users_scored": r["users_scored"],
                **({"ranking": r["ranking"]} if "ranking" in r else {}),
            }
            for r in rows
        ],
    }


def _by_history(rows: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """MAP@k of the scored users who bought before the window's cutoff (returning) and of those
    who did not (new), each a mean over the windows that have such users, and the returning
    share of the scored users (a short history is mostly new customers: what a method can do
    for them is what best sellers can)."""
    out: dict[str, Any] = {}
    for name, pick in (("returning", True), ("new", False)):
        maps = [float(r["_aps"][r["_returning"] == pick].mean()) for r in rows
                if (r["_returning"] == pick).any()]  # fmt: skip
        out[f"map@{k}_{name}"] = mean(maps) if maps else None
    out["returning_share"] = mean(float(r["_returning"].mean()) for r in rows)
    return out


def _ranking(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """For a pipeline with a guard: in how many windows the ranker was scored, alone or in a
    blend, rather than bypassed for a simple source order (pipeline/guard.py)."""
    notes = [r["ranking"] for r in rows if "ranking" in r]
    if not notes:
        return {}
    return {"ranker_served": f"{sum(not n.startswith('bypassed') for n in notes)}/{len(notes)}"}


def _with_comparisons(
    summaries: dict[str, dict[str, Any]],
    rows: dict[str, list[dict[str, Any]]],
    k: int,
    compare_to: str | None,
) -> dict[str, dict[str, Any]]:
    """Each method's summary with "compared" (see eval/uncertainty.py): against `compare_to`,
    else the best baseline of the run by MAP@k; nothing when the run has neither."""
    baselines = [n for n in summaries if n in BASELINES]
    reference = compare_to or max(baselines, key=lambda n: summaries[n][f"map@{k}"], default=None)
    if reference is None:
        return summaries
    ref = [r["_aps"] for r in rows[reference]]
    for name, summary in summaries.items():
        if name != reference:
            c = compare(name, [r["_aps"] for r in rows[name]], reference, ref)
            summary["compared"] = c.to_dict()
    return summaries
