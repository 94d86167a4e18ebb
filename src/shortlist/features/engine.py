"""Ibis backends for feature pipelines (DuckDB by default, PySpark local) and the store's tables."""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from ibis.backends import BaseBackend

from shortlist import columns as C
from shortlist.config import AttributeKind
from shortlist.data.arrays import Dataset, from_us
from shortlist.data.reader import sql_literal
from shortlist.data.schema import Manifest, TableInfo
from shortlist.errors import ConfigError
from shortlist.features.base import timestamp_literal
from shortlist.workspace import Workspace

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

ENGINES = ("duckdb", "pyspark")
T = TypeVar("T")


def java_available() -> bool:
    """PySpark needs a JVM: JAVA_HOME or `java` on the PATH."""
    home = os.environ.get("JAVA_HOME")
    return bool(home and os.path.exists(os.path.join(home, "bin", "java"))) or bool(
        shutil.which("java")
    )


def _import_spark() -> type[SparkSession]:
    # PySpark 4 warns on import and on every pandas conversion under pandas 3 (Ibis converts
    # on each execute); the conversions done here are plain columns, which work.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError("the pyspark engine needs `pip install pyspark`") from None
    return SparkSession


def spark_running() -> bool:
    """Whether this process already has an active Spark session (then it is not ours to stop)."""
    return _import_spark().getActiveSession() is not None


def spark_session(
    master: str = "local[2]", shuffle_partitions: int = 4, driver_memory: str = "2g"
) -> SparkSession:
    """A local SparkSession set up like the DuckDB side: UTC, naive timestamps, quiet.

    getOrCreate: an existing session is reused (its settings were fixed when it started, except
    the SQL ones set below), so tests and the CLI share one JVM per process.
    """
    if not java_available():
        raise ConfigError("PySpark needs Java (set JAVA_HOME or put java on the PATH)")
    session = _import_spark()
    spark = (
        session.builder.master(master)
        .appName("shortlist-features")
        .config("spark.driver.memory", driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    spark.conf.set("spark.sql.shuffle.partitions", str(shuffle_partitions))
    return configure_spark(spark)


def configure_spark(spark: SparkSession) -> SparkSession:
    """The SQL settings the feature definitions rely on; runtime ones, so any session takes them.

    UTC, and timestamps without time zone as DuckDB and the offline store have them: otherwise
    feature_time would come back zone-aware from Spark and naive from DuckDB.
    """
    for key, value in {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.timestampType": "TIMESTAMP_NTZ",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    }.items():
        spark.conf.set(key, value)
    return spark


def connect(
    engine: str = "duckdb",
    *,
    spark: SparkSession | None = None,
    temp_directory: Path | None = None,
    memory_limit: str | None = None,
    threads: int = 0,
) -> BaseBackend:
    """An Ibis backend: in-memory DuckDB, or PySpark over `spark` (default: a local session).

    A given Spark session (a cluster's, say) gets the settings of configure_spark.

    temp_directory: where DuckDB spills joins and aggregations larger than memory (user x
    category at full scale); by default DuckDB's own choice. memory_limit, threads: DuckDB's
    caps (None / 0: DuckDB's defaults, 80 % of RAM and one thread per core).
    """
    if engine == "duckdb":
        con = ibis.duckdb.connect()
        raw: Any = con.con  # the DuckDB connection underneath
        raw.execute("SET TimeZone = 'UTC'").fetchall()
        raw.execute("SET enable_progress_bar = false").fetchall()
        if temp_directory is not None:
            raw.execute(f"SET temp_directory = {sql_literal(str(temp_directory))}").fetchall()
        if memory_limit is not None:
            raw.execute(f"SET memory_limit = {sql_literal(memory_limit)}").fetchall()
        if threads:
            raw.execute(f"SET threads = {int(threads)}").fetchall()
        return con
    if engine == "pyspark":
        return ibis.pyspark.connect(configure_spark(spark) if spark else spark_session())
    raise ConfigError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")


def engine_name(con: BaseBackend) -> str:
    return str(con.name)


@dataclass
class OfflineTables:
    """The offline store's tables as lazy Ibis tables on one backend, with the manifest."""

    con: BaseBackend
    manifest: Manifest
    items: ir.Table
    users: ir.Table
    interactions: ir.Table  # all of them, without the partition column
    # the user_regions business-rule table (user_idx, region code), when the source has one
    user_regions: ir.Table | None = None
    # answers that depend on the tables but not on a cutoff (the channel values, the eligible
    # attributes), computed once per tables object: a ranking set asks for many cutoffs
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def remember(self, key: Any, compute: Callable[[], T]) -> T:
        """`compute()` once per key for these tables."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    @property
    def engine(self) -> str:
        return engine_name(self.con)

    @classmethod
    def from_frames(
        cls,
        con: BaseBackend,
        manifest: Manifest,
        items: pd.DataFrame | pa.Table,
        users: pd.DataFrame | pa.Table,
        interactions: pd.DataFrame | pa.Table,
        user_regions: pd.DataFrame | pa.Table | None = None,
    ) -> OfflineTables:
        """In-memory tables (a subset of users, a test set) in place of the offline store's files.

        The frames have the offline store's columns: items and users their index and the
        manifest's attributes; interactions user_idx, item_idx, timestamp (naive UTC; aware
        ones are converted), quantity, price and optionally channel (all null when absent).
        Ids, times and numbers are cast to the store's types, so the groups computed from
        them have the same schema as from the files. Registered with ibis.memtable (nothing is
        written; `con.create_table` from pandas fails on DuckDB 2 under Ibis 12). Every group
        sees only these rows: item popularity from a subset of users is that subset's.
        `user_regions` (user_idx, region code): the business-rule table, if any.
        """
        inter = _store_types(_arrow(interactions), _INTERACTION_TYPES)
        if C.MONTH in inter.column_names:
            inter = inter.drop_columns([C.MONTH])
        if C.CHANNEL not in inter.column_names:
            inter = inter.append_column(C.CHANNEL, pa.nulls(inter.num_rows, pa.string()))
        missing = [c for c in _INTERACTION_TYPES if c not in inter.column_names]
        if missing:
            raise ConfigError(f"interactions lack column(s) {', '.join(missing)}")
        inter = inter.select(list(_INTERACTION_TYPES))
        return cls(
            con=con,
            manifest=manifest,
            items=ibis.memtable(_store_types(_arrow(items), {C.ITEM_IDX: pa.int32()})),
            users=ibis.memtable(_store_types(_arrow(users), {C.USER_IDX: pa.int32()})),
            interactions=ibis.memtable(inter),
            user_regions=(
                None
                if user_regions is None
                else ibis.memtable(
                    _store_types(
                        _arrow(user_regions), {C.USER_IDX: pa.int32(), C.REGION: pa.int32()}
                    )
                )
            ),
        )

    @classmethod
    def from_dataset(cls, con: BaseBackend, data: Dataset) -> OfflineTables:
        """A loaded dataset's tables (interactions as they are in it: cut at a cutoff, or a
        part of the users) in place of the offline store's files; see `from_frames`.

        Without the store's manifest (a dataset built in memory) the attribute kinds come from
        the dataset and no role is set.
        """
        inter = data.interactions
        columns = {
            C.USER_IDX: pa.array(inter.user, pa.int32()),
            C.ITEM_IDX: pa.array(inter.item, pa.int32()),
            C.TIMESTAMP: pa.array(inter.time, pa.int64()).cast(pa.timestamp("us")),
            C.QUANTITY: pa.array(inter.quantity, pa.int32()),
            C.PRICE: (
                pa.array(inter.price, pa.float32()).cast(pa.float64())
                if inter.price is not None
                else pa.nulls(len(inter), pa.float64())
            ),
        }
        items = _indexed(data.items, C.ITEM_IDX, data.n_items)
        users = _indexed(data.users, C.USER_IDX, data.n_users)
        regions = None
        if data.rules is not None and data.rules.user_region is not None:
            known = np.flatnonzero(data.rules.user_region >= 0)
            regions = pa.table(
                {
                    C.USER_IDX: pa.array(known, pa.int32()),
                    C.REGION: pa.array(data.rules.user_region[known], pa.int32()),
                }
            )
        return cls.from_frames(
            con, data.manifest or memory_manifest(data), items, users, pa.table(columns), regions
        )

    def interactions_before(self, cutoff: datetime) -> ir.Table:
        """Interactions with timestamp < cutoff: everything a snapshot at `cutoff` may see."""
        t = self.interactions
        return t.filter(t[C.TIMESTAMP] < timestamp_literal(cutoff))

    def attributes(self, table: str, *kinds: AttributeKind) -> list[str]:
        """Attribute columns of "items" or "users" of the given kinds, in table order."""
        info = getattr(self.manifest, table)
        return [a for a, k in info.attributes.items() if k in kinds]


# The offline store's interaction columns and types (ingest writes them so).
_INTERACTION_TYPES: dict[str, pa.DataType] = {
    C.USER_IDX: pa.int32(),
    C.ITEM_IDX: pa.int32(),
    C.TIMESTAMP: pa.timestamp("us"),
    C.PRICE: pa.float64(),
    C.CHANNEL: pa.string(),
    C.QUANTITY: pa.int32(),
}


def _arrow(frame: pd.DataFrame | pa.Table) -> pa.Table:
    if isinstance(frame, pa.Table):
        return frame
    return pa.Table.from_pandas(frame, preserve_index=False)


def _store_types(table: pa.Table, types: dict[str, pa.DataType]) -> pa.Table:
    """The named columns cast to the store's types; timestamps as naive UTC microseconds."""
    for name, want in types.items():
        if name not in table.column_names:
            continue
        i = table.column_names.index(name)
        column = table.column(i)
        if pa.types.is_timestamp(column.type) and column.type.tz is not None:
            column = column.cast(pa.timestamp(column.type.unit, tz="UTC")).cast(
                pa.timestamp(column.type.unit)
            )
        if column.type != want:
            # Sub-microsecond digits are dropped (the store keeps microseconds).
            column = pc.cast(column, want, safe=not pa.types.is_timestamp(want))
        table = table.set_column(i, name, column)
    return table


def load_tables(workspace: Workspace, con: BaseBackend) -> OfflineTables:
    """Register the workspace's offline store with `con` (reads nothing yet)."""
    manifest = Manifest.read(workspace.offline)
    folder = workspace.offline
    if engine_name(con) == "duckdb":
        inter = con.read_parquet(
            str(folder / "interactions" / "**" / "*.parquet"), hive_partitioning=True
        )
    else:  # Spark discovers month=YYYY-MM partitions from the folder itself
        inter = con.read_parquet(str(folder / "interactions"))
    if C.MONTH in inter.columns:
        inter = inter.drop(C.MONTH)
    return OfflineTables(
        con=con,
        manifest=manifest,
        items=con.read_parquet(str(folder / "items.parquet")),
        users=con.read_parquet(str(folder / "users.parquet")),
        interactions=inter,
        user_regions=(
            con.read_parquet(str(folder / "user_regions.parquet"))
            if "user_regions" in manifest.rules
            else None
        ),
    )


def _indexed(frame: pd.DataFrame | None, key: str, n: int) -> pd.DataFrame:
    """An attribute table by idx (row i is idx i) with its idx column first."""
    base = frame if frame is not None else pd.DataFrame(index=range(n))
    return pd.concat(
        [pd.DataFrame({key: np.arange(n, dtype=np.int32)}), base.reset_index(drop=True)], axis=1
    )


def memory_manifest(data: Dataset) -> Manifest:
    """The manifest a dataset built in memory would have had (kinds from it, no roles)."""
    times = data.interactions.time
    start = from_us(int(times.min())) if len(times) else datetime(1970, 1, 1)
    end = from_us(int(times.max())) if len(times) else start
    return Manifest(
        adapter="memory",
        source="memory",
        created_at=datetime.now(),
        items=TableInfo(rows=data.n_items, attributes=dict(data.item_kinds)),
        users=TableInfo(rows=data.n_users, attributes=dict(data.user_kinds)),
        interactions=TableInfo(rows=len(data.interactions)),
        start=start,
        end=end,
        source_rows=len(data.interactions),
        merged_duplicates=0,
    )
