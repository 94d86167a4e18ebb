"""Compute feature groups as of a cutoff and write them to the feature store (what the CLI runs)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
from ibis.backends import BaseBackend

from shortlist.config import FeaturesSettings
from shortlist.data.schema import Manifest
from shortlist.errors import ConfigError
from shortlist.features import groups as G
from shortlist.features.base import FeatureOptions, to_utc_naive
from shortlist.features.engine import (
    ENGINES,
    OfflineTables,
    connect,
    engine_name,
    load_tables,
    spark_running,
)
from shortlist.features.store import FeatureStore, FeatureVersion, _naive_utc
from shortlist.progress import track
from shortlist.resources import memory_share, thread_count
from shortlist.workspace import Workspace


@dataclass(frozen=True)
class MaterializeSummary:
    cutoff: datetime
    engine: str
    folder: Path  # <workspace>/features
    written: list[FeatureVersion]  # one per group, in materialization order
    seconds: float


def default_cutoff(manifest: Manifest) -> datetime:
    """Midnight UTC after the last interaction: a snapshot that sees all the data."""
    last = manifest.end
    return datetime(last.year, last.month, last.day) + timedelta(days=1)


def _spill(workspace: Workspace) -> Path:
    # Beside the data rather than in the working directory, where DuckDB would put it.
    return FeatureStore(workspace).root / ".tmp"


@contextmanager
def _backend(
    engine: str, con: BaseBackend | None, spill: Path, settings: FeaturesSettings
) -> Iterator[BaseBackend]:
    """`con` as given, or a new backend; a Spark session started here is stopped at the end."""
    if con is not None:
        yield con
        return
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    started_spark = engine == "pyspark" and not spark_running()
    backend = (
        connect(
            engine,
            temp_directory=spill,
            memory_limit=settings.memory_limit or memory_share(0.25),
            threads=thread_count(settings.threads),
        )
        if engine == "duckdb"
        else connect(engine)
    )
    try:
        yield backend
    finally:
        # Ibis' PySpark disconnect() stops the session: only for one this call started.
        if engine == "duckdb" or started_spark:
            backend.disconnect()


def _run(
    workspace: Workspace,
    con: BaseBackend,
    cutoff: datetime,
    names: list[str],
    options: FeatureOptions,
    src: OfflineTables | None = None,
) -> MaterializeSummary:
    started = time.perf_counter()
    src = src or load_tables(workspace, con)
    store = FeatureStore(workspace)
    written = []
    for name in names:
        with track(f"Computing {name} features as of {cutoff:%Y-%m-%d %H:%M}"):
            frame = G.build(name, src, cutoff, options)
            try:
                written.append(store.write(frame, cutoff, con))
            except duckdb.OutOfMemoryException as err:
                limit = workspace.settings().features.memory_limit or (
                    f"{memory_share(0.25)}, a quarter of this machine's memory"
                )
                raise ConfigError(
                    f"out of memory computing the '{name}' features (memory limit {limit}): "
                    "raise it, or restrict the group's size (max_category_values, "
                    f"category_attributes); DuckDB said: {str(err).splitlines()[0]}",
                    key="features.memory_limit",
                ) from None
    return MaterializeSummary(
        cutoff=cutoff,
        engine=engine_name(con),
        folder=store.root,
        written=written,
        seconds=time.perf_counter() - started,
    )


def write_groups(
    workspace: Workspace,
    tables: OfflineTables,
    cutoff: datetime | str,
    names: Iterable[str] | None = None,
    options: FeatureOptions | None = None,
) -> MaterializeSummary:
    """`materialize` on tables already registered (a dataset in memory, say, through
    `OfflineTables.from_dataset`): groups `names` (default: all) as of `cutoff`, each written
    as a new version of the workspace's feature store."""
    return _run(
        workspace,
        tables.con,
        to_utc_naive(cutoff),
        G.resolve(names),
        options or FeatureOptions(),
        src=tables,
    )


def compute_groups(
    tables: OfflineTables,
    cutoff: datetime | str,
    names: Iterable[str] | None = None,
    options: FeatureOptions | None = None,
) -> dict[str, pa.Table]:
    """Groups `names` (default: all) as of `cutoff`, as Arrow tables, without writing anything.

    The same definitions and columns as `materialize` writes (keys, feature_time, features),
    for tables from `load_tables` or `OfflineTables.from_frames`. Each table is built in the
    engine and handed over whole, so this is for data that fits in memory.
    """
    when = to_utc_naive(cutoff)
    opts = options or FeatureOptions()
    return {name: _group_table(tables, name, when, opts) for name in G.resolve(names)}


# -- one compilation per group ----------------------------------------------------------------
# A ranking set asks for the same groups at many cutoffs, and most of a small group's time is
# Ibis building and compiling the query (about 0.2 s a group), not DuckDB running it. On DuckDB
# each group is therefore compiled once, at a sentinel cutoff, and later cutoffs only rewrite
# the literals the cutoff produced: every timestamp (the cutoff and the window starts, kept at
# their distance from it) and the cutoff's epoch seconds. The rewrite is trusted only after it
# reproduced, character for character, what Ibis compiled for a real cutoff; otherwise every
# cutoff is compiled as before.
_SENTINEL = datetime(2222, 2, 2)
_TIMESTAMP = re.compile(r"MAKE_TIMESTAMP\((\d+), (\d+), (\d+), (\d+), (\d+), (\d+)\.0\)")


def _epoch_seconds(value: datetime) -> int:
    return int((value - datetime(1970, 1, 1)).total_seconds())


@dataclass
class _Template:
    """A group's SQL compiled at the sentinel cutoff, and whether rewriting it is trusted."""

    sql: str
    schema: pa.Schema
    trusted: bool | None = None  # None: not checked yet; False: compile every cutoff

    def render(self, cutoff: datetime) -> str:
        def shifted(m: re.Match[str]) -> str:
            at = datetime(*(int(g) for g in m.groups()))
            t = cutoff - (_SENTINEL - at)
            return (
                f"MAKE_TIMESTAMP({t.year}, {t.month}, {t.day}, {t.hour}, {t.minute}, {t.second}.0)"
            )

        sql = _TIMESTAMP.sub(shifted, self.sql)
        return sql.replace(str(_epoch_seconds(_SENTINEL)), str(_epoch_seconds(cutoff)))


def _template(tables: OfflineTables, name: str, options: FeatureOptions) -> _Template:
    expr = G.build(name, tables, _SENTINEL, options).table
    return _Template(str(tables.con.compile(expr)), expr.schema().to_pyarrow())


def _group_table(
    tables: OfflineTables, name: str, cutoff: datetime, options: FeatureOptions
) -> pa.Table:
    """Group `name` as of `cutoff` as an Arrow table (see the comment above)."""
    template = None
    if tables.engine == "duckdb" and cutoff.microsecond == 0:
        template = tables.remember(("sql", name, options), lambda: _template(tables, name, options))
        if template.trusted:
            raw = tables.con.con.sql(template.render(cutoff)).to_arrow_table()  # type: ignore[attr-defined]
            return _naive_utc(raw.cast(template.schema))
    expr = G.build(name, tables, cutoff, options).table
    table = _naive_utc(tables.con.to_pyarrow(expr))  # also registers the in-memory tables
    if template is not None and template.trusted is None:
        template.trusted = template.render(cutoff) == str(tables.con.compile(expr))
    return table


def materialize(
    workspace: Workspace,
    cutoff: datetime | str | None = None,
    engine: str = "duckdb",
    groups: Iterable[str] | None = None,
    *,
    options: FeatureOptions | None = None,
    con: BaseBackend | None = None,
) -> MaterializeSummary:
    """Compute `groups` (default: all) from interactions before `cutoff`, write a new version each.

    cutoff: ISO string or datetime (aware ones are converted to UTC); default: midnight after
    the last interaction. con: an open backend to use instead of starting `engine` (tests share
    one Spark session this way).

    Raises:
        WorkspaceError: nothing ingested yet.
        ConfigError: unknown engine or group, unparsable cutoff, Java missing for pyspark.
    """
    names = G.resolve(groups)
    when = default_cutoff(Manifest.read(workspace.offline)) if cutoff is None else cutoff
    settings = workspace.settings().features
    with _backend(engine, con, _spill(workspace), settings) as backend:
        return _run(
            workspace,
            backend,
            to_utc_naive(when),
            names,
            options or FeatureOptions.from_settings(settings),
        )


def materialize_snapshots(
    workspace: Workspace,
    cutoffs: Sequence[datetime | str],
    engine: str = "duckdb",
    groups: Iterable[str] | None = None,
    *,
    options: FeatureOptions | None = None,
    con: BaseBackend | None = None,
) -> list[MaterializeSummary]:
    """A time series of snapshots (e.g. weekly cutoffs) for point-in-time training sets."""
    names = G.resolve(groups)
    settings = workspace.settings().features
    opts = options or FeatureOptions.from_settings(settings)
    Manifest.read(workspace.offline)  # fail before starting an engine
    with _backend(engine, con, _spill(workspace), settings) as backend:
        return [_run(workspace, backend, to_utc_naive(c), names, opts) for c in cutoffs]
