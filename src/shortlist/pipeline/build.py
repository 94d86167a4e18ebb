"""From source files to a workspace that serves: what `shortlist build` and `train pipeline` run.

One code path with evaluation: the configured pipeline is fitted at the end of the data exactly
as `evaluate` fits it at each window's cutoff (one two-tower training, the ranking set, the
ranker), then saved with the fingerprints that tie its parts together.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shortlist import resources
from shortlist.data.arrays import end_of_data, from_us, load_dataset
from shortlist.data.offline import OfflineStore
from shortlist.pipeline.core import Pipeline
from shortlist.workspace import Workspace

Report = Callable[[str], None]


@dataclass(frozen=True)
class PipelineSummary:
    """What `train_pipeline` fitted and where it saved it."""

    manifest: Path
    cutoff: str
    seconds: float
    two_tower: dict[str, Any] | None  # examples, epochs, index kind
    ranker: dict[str, Any] | None  # the ranker's report (objective, rounds, groups...)
    importance: list[tuple[str, float]] = field(default_factory=list)
    ranking: dict[str, Any] | None = None  # the guard's choice (pipeline/guard.py)
    steps: dict[str, float] = field(default_factory=dict)  # step -> seconds


@dataclass(frozen=True)
class BuildSummary:
    workspace: Path
    interactions: int
    steps: dict[str, float]  # step -> seconds
    trained: PipelineSummary
    seconds: float


def train_pipeline(
    workspace: Workspace, *, before_save: Callable[[], None] | None = None
) -> PipelineSummary:
    """Fit the workspace's `[pipeline]` on all its data and save it (see Pipeline.save);
    `before_save` is called between the two (build waits there for the search index)."""
    started = time.perf_counter()
    resources.configure(workspace.settings())
    data = load_dataset(OfflineStore(workspace))
    loaded = time.perf_counter() - started
    pipeline = Pipeline.from_config(workspace).fit(data, end_of_data(data))
    if before_save is not None:
        before_save()
    path = pipeline.save()
    funnel = pipeline.funnel_
    assert funnel is not None
    tt = funnel.retrieval.two_tower
    two_tower = tt.summary() if tt is not None else None
    ranker = funnel.ranker
    return PipelineSummary(
        path,
        from_us(pipeline.cutoff_ or 0).date().isoformat(),
        time.perf_counter() - started,
        two_tower,
        ranker.report_ if ranker is not None else None,
        ranker.importance() if ranker is not None else [],
        pipeline.ranking_.to_dict() if pipeline.ranking_ is not None else None,
        {"interactions loaded": loaded, **pipeline.timings_},
    )


def build(
    workspace: Workspace,
    source: str | Path,
    *,
    format: str | None = None,
    on_bad_rows: str | None = None,
    report: Report | None = None,
    search_alongside: bool | None = False,
) -> BuildSummary:
    """Ingest `source`, index the items for search ([search]; retrieval/text.py), then train
    and save the pipeline (which writes the feature groups as of its cutoff into the feature
    store, and the same versions into the online store: the values it serves).

    `report` is called with a line as each step ends (the CLI prints them).
    `search_alongside`: index the items in a second process while the pipeline trains (True),
    first in this one (False), or as `resources.side_by_side` says for the data (None: what
    the CLI uses). The process is spawned, so a script passing True or None guards its top
    level with `if __name__ == "__main__":` (a spawned process imports the script again).
    """
    from shortlist.data.ingest import ingest
    from shortlist.data.logged import describe as describe_log

    say = report or (lambda line: None)
    started = time.perf_counter()
    steps: dict[str, float] = {}
    s = ingest(workspace, source, format=format, on_bad_rows=on_bad_rows)
    steps["ingest"] = s.seconds
    learnt = describe_log(s.manifest)  # the event log's purchases among them
    learnt = f", with {learnt}" if learnt else ""
    say(f"1/2 ingested {s.manifest.interactions.rows:,} interactions{learnt} ({s.seconds:.1f} s)")
    search = workspace.settings().search
    # The search index is ready before the pipeline is saved (a service reloads when the
    # pipeline is): built first, or, where resources.side_by_side allows, in a second process
    # while the pipeline trains (the training keeps about 1.2 of 2 cores busy).
    alongside = search_alongside
    if alongside is None:
        alongside = resources.side_by_side(s.manifest.interactions.rows)
    indexing = _SearchIndexing(workspace, search, alongside, say) if search.enabled else None
    try:
        trained = train_pipeline(workspace, before_save=indexing)
    finally:
        if indexing is not None:
            indexing.stop()  # the training failed (or was interrupted): nothing to wait for
    steps.update(trained.steps)
    if indexing is not None:
        steps["search index"] = indexing.seconds
    say(
        f"2/2 pipeline trained and saved, its feature groups written to the feature store and "
        f"the online store ({trained.seconds:.1f} s): "
        f"{describe(trained)}"
    )
    return BuildSummary(
        workspace.root, s.manifest.interactions.rows, steps, trained, time.perf_counter() - started
    )


class _SearchIndexing:
    """The workspace's search index being built: at once in this process, or in a spawned
    one alongside the pipeline's training; calling the object waits for it and reports."""

    def __init__(self, workspace: Workspace, settings: Any, alongside: bool, say: Report):
        from shortlist.retrieval.text import build_text_index

        self.say, self.seconds, self.pool, self.future = say, 0.0, None, None
        if alongside:
            self.started = time.perf_counter()
            # one thread there: the training's take the other cores (two made the demo's build
            # 82-85 s against 79.5-80.4 s with one, alternating runs: the cores oversubscribed)
            self.pool = resources.spawned_pool(1, initializer=resources.set_threads, initargs=(1,))
            self.future = self.pool.submit(build_text_index, workspace, settings)
            say("    indexing the items for search in a second process, while the pipeline trains")
        else:
            self._report(build_text_index(workspace, settings))

    def _report(self, text: Any) -> None:
        from shortlist.retrieval.text import describe_text_index

        self.seconds = float(text.seconds["total"])
        self.say(f"    search index built ({self.seconds:.1f} s): {describe_text_index(text)}")

    def __call__(self) -> None:
        if self.future is None or self.pool is None:
            return
        from concurrent.futures.process import BrokenProcessPool

        try:
            text = self.future.result()
        except BrokenProcessPool:
            raise resources.process_died(
                "the process indexing the items for search",
                "build the index alone, `shortlist search --build-index`, or set [search] "
                "enabled = false",
            ) from None
        finally:
            self.pool.shutdown()
            self.pool = self.future = None
        waited = time.perf_counter() - self.started
        self._report(text)
        self.seconds = waited  # the wall time until it was ready (the process's own above)

    def stop(self) -> None:
        """End the second process if it still runs (a no-op once `__call__` returned)."""
        if self.pool is None:
            return
        # the executor has no public way to end a running task: its processes, ended
        for process in list((getattr(self.pool, "_processes", None) or {}).values()):
            process.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = self.future = None


def describe(t: PipelineSummary) -> str:
    """One line: what the pipeline training produced."""
    parts = []
    if t.two_tower is not None:
        parts.append(
            f"two-tower on {t.two_tower['examples']:,} purchases, "
            f"{t.two_tower['epochs_run']} epoch(s), {t.two_tower['index']} index"
        )
    if t.ranker is not None:
        r = t.ranker
        parts.append(
            f"ranker {r['objective']} on {r['train_groups']:,} requests over "
            f"{r['periods']} period(s) of {r['period_days']} day(s)"
        )
    if t.ranking is not None:
        parts.append(t.ranking["note"])
    return "; ".join(parts) or "no trained parts"
