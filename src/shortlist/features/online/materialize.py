"""The latest feature groups of the offline feature store, packed per entity into the online store.

What `shortlist materialize` runs. Each group's layout comes from its Parquet schema and its
keys in the feature manifest (nothing here knows a column name):

* one key and scalar columns (items, users): a **row** group, one float32 vector per entity;
* several keys (user_category: user_idx, attribute, value): a **records** group keyed by the
  first key, one record per row, the other keys among its fields;
* one key and list columns (history): a **records** group whose fields are the list columns
  (zipped element by element) and whose head holds the scalar columns.

String columns become integer codes (their sorted distinct values are the dictionary, stored
with the version). Integer fields keep 32 or 64 bits as their range needs, floats become
float32, and an integer column with nulls becomes float32 with NaN.

DuckDB streams each group sorted by its keys, so entities arrive in key order (LMDB appends)
and one entity's records are contiguous; memory stays at one batch plus DuckDB's sort, which
spills to the feature store's .tmp folder beyond `[features] memory_limit`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shortlist.config import OnlineSettings
from shortlist.data.reader import sql_literal
from shortlist.errors import DataError, WorkspaceError
from shortlist.features.base import FEATURE_TIME, FeatureOptions, to_utc_naive
from shortlist.features.materialize import materialize
from shortlist.features.online.base import (
    RECORDS,
    ROW,
    GroupLayout,
    OnlineStore,
    OnlineWriter,
    Ragged,
    open_online_store,
)
from shortlist.features.store import FeatureStore, FeatureVersion, _parquet_files
from shortlist.progress import track
from shortlist.resources import memory_share, thread_count
from shortlist.workspace import Workspace

_ROWS_PER_FETCH = 65_536  # rows DuckDB hands over at a time
_ENUMS = itertools.count()  # names of the ENUM types created on a connection
_INT32 = (-(2**31), 2**31 - 1)


@dataclass(frozen=True)
class OnlineGroupSummary:
    group: str
    kind: str  # row | records
    feature_version: int
    cutoff: datetime
    entities: int
    bytes: int
    seconds: float


@dataclass(frozen=True)
class OnlineSummary:
    url: str
    version: int
    computed: list[FeatureVersion]  # feature versions computed first (none were there)
    groups: list[OnlineGroupSummary]
    seconds: float


@dataclass
class _PackedColumn:
    name: str
    kind: str  # int | float | code | list
    arrow: pa.DataType
    element: str = ""  # list columns: int | float
    dtype: str = "<f4"  # numpy type string of the packed value
    nulls: int = 0
    dictionary: list[str] = field(default_factory=list)
    expr: str = ""  # how DuckDB selects it, when not as it is

    def select(self) -> str:
        return self.expr or _quote(self.name)


@dataclass
class _PackPlan:
    entry: FeatureVersion
    files: list[Path]
    layout: GroupLayout
    key: _PackedColumn
    head: list[_PackedColumn]  # row: the vector; records: the head
    fields: list[_PackedColumn]  # records only
    rows: int


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _kind(t: pa.DataType) -> str:
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "code"
    if pa.types.is_dictionary(t) and _kind(t.value_type) == "code":
        return "code"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "list"
    return ""


def _source(files: Sequence[Path]) -> str:
    return "read_parquet([" + ", ".join(sql_literal(str(p)) for p in files) + "])"


def _plan(con: duckdb.DuckDBPyConnection, store: FeatureStore, entry: FeatureVersion) -> _PackPlan:
    """The group's layout, from its schema, its keys and one scan for ranges and nulls."""
    group = entry.path.split("/")[0]
    files = _parquet_files(store.path(entry))
    if not files:
        raise WorkspaceError(f"feature folder {store.path(entry)} has no Parquet files")
    schema = pq.read_schema(files[0])
    cols: dict[str, _PackedColumn] = {}
    for f in schema:
        if f.name == FEATURE_TIME:
            continue
        kind = _kind(f.type)
        element = _kind(f.type.value_type) if kind == "list" else ""
        if not kind or element not in ("", "int", "float"):
            raise DataError(
                f"feature group {group!r} column {f.name!r} has type {f.type}, which the "
                "online store cannot pack (numbers, strings, lists of numbers)"
            )
        cols[f.name] = _PackedColumn(f.name, kind, f.type, element)
    missing = [k for k in entry.keys if k not in cols]
    if missing:
        raise DataError(f"feature group {group!r} lacks its key column(s) {missing}")
    key = cols[entry.keys[0]]
    if key.kind not in ("int", "code"):
        raise DataError(f"feature group {group!r}: key {key.name!r} is not an integer or string")
    rest = [c for name, c in cols.items() if name != key.name]
    lists = [c for c in rest if c.kind == "list"]
    if lists and len(entry.keys) > 1:
        raise DataError(f"feature group {group!r}: list columns in a group with several keys")

    # One scan: min, max and nulls of integer columns (and of list elements), the row count.
    src = _source(files)
    ints = [c for c in rest if c.kind == "int" or c.element == "int"]
    exprs = ["count(*)"]
    for c in ints:
        q = _quote(c.name)
        if c.kind == "list":
            exprs += [
                f"min(list_min({q}))",
                f"max(list_max({q}))",
                f"sum(len({q}) - list_count({q}))",
            ]
        else:
            exprs += [f"min({q}::BIGINT)", f"max({q}::BIGINT)", f"count(*) - count({q})"]
    row = con.execute(f"SELECT {', '.join(exprs)} FROM {src}").fetchall()[0]
    rows = int(row[0])
    for i, c in enumerate(ints):
        lo, hi, nulls = row[1 + 3 * i : 4 + 3 * i]
        c.nulls = int(nulls or 0)
        fits = lo is None or (_INT32[0] <= lo and hi <= _INT32[1])
        c.dtype = "<f4" if c.nulls else ("<i4" if fits else "<i8")
    for c in rest:
        if c.kind == "code":
            # An ENUM of the distinct values: DuckDB then sorts and hands over small integer
            # codes instead of strings (five times faster on user_category).
            q, enum = _quote(c.name), f"_shortlist_enum_{next(_ENUMS)}"
            values = con.execute(
                f"SELECT DISTINCT {q}::VARCHAR FROM {src} WHERE {q} IS NOT NULL ORDER BY 1"
            ).fetchall()
            c.dictionary = [v[0] for v in values]
            if c.dictionary:
                listed = ", ".join(sql_literal(v) for v in c.dictionary)
                con.execute(f"CREATE TYPE {enum} AS ENUM ({listed})").fetchall()
                c.expr = f"enum_code({q}::VARCHAR::{enum})::INTEGER AS {q}"
            else:
                c.expr = f"NULL::INTEGER AS {q}"
            n = len(c.dictionary)
            c.dtype = "|i1" if n < 2**7 else "<i2" if n < 2**15 else "<i4"

    if lists:
        kind, head, fields = RECORDS, [c for c in rest if c.kind != "list"], lists
    elif len(entry.keys) > 1:
        kind, head, fields = RECORDS, [], rest
    else:
        kind, head, fields = ROW, rest, []
    layout = GroupLayout(
        name=group,
        kind=kind,
        key=key.name,
        key_type="int" if key.kind == "int" else "str",
        columns=[c.name for c in head],
        fields=[(c.name, c.dtype) for c in fields],
        codes=[c.name for c in (*head, *fields) if c.kind == "code"],
        source={
            "feature_group": group,
            "feature_version": entry.version,
            "cutoff": entry.cutoff.isoformat(),
            "keys": list(entry.keys),
        },
    )
    return _PackPlan(entry, files, layout, key, head, fields, rows)


def _floats(arr: pa.Array) -> np.ndarray:
    """A column (codes for strings) as float32, NaN for null."""
    return arr.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float32)


def _typed(arr: pa.Array, col: _PackedColumn) -> np.ndarray:
    """A column (or a list column's flattened elements) as the field's numpy type."""
    if col.kind == "code":  # DuckDB's codes, null for null
        codes = arr.cast(pa.int32()).fill_null(-1)
        return codes.to_numpy(zero_copy_only=False).astype(col.dtype)
    if col.dtype.startswith(("<f",)):
        return arr.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(col.dtype)
    if pa.types.is_boolean(arr.type):
        arr = arr.cast(pa.int8())
    return arr.to_numpy(zero_copy_only=False).astype(col.dtype)


def _key_values(arr: pa.Array, plan: _PackPlan) -> np.ndarray | list[str]:
    if plan.layout.key_type == "str":
        return arr.cast(pa.string()).to_pylist()
    return arr.to_numpy(zero_copy_only=False).astype(np.int64)


def _batches(con: duckdb.DuckDBPyConnection, plan: _PackPlan) -> Iterator[pa.RecordBatch]:
    """The group's rows sorted by its keys, without feature_time and rows without a key."""
    key = _quote(plan.key.name)
    exprs = [key, *(c.select() for c in (*plan.head, *plan.fields))]
    order = ", ".join(_quote(k) for k in plan.entry.keys)  # codes sort as their strings
    sql = (
        f"SELECT {', '.join(exprs)} FROM {_source(plan.files)} "
        f"WHERE {key} IS NOT NULL ORDER BY {order}"
    )
    reader = con.sql(sql).to_arrow_reader(_ROWS_PER_FETCH)
    yield from reader


def _write_rows(writer: OnlineWriter, plan: _PackPlan, batch: pa.RecordBatch, size: int) -> None:
    keys = _key_values(batch.column(0), plan)
    matrix = np.empty((batch.num_rows, len(plan.head)), np.float32)
    for j in range(len(plan.head)):
        matrix[:, j] = _floats(batch.column(1 + j))
    for start in range(0, batch.num_rows, size):
        writer.put_many(plan.layout.name, keys[start : start + size], matrix[start : start + size])


def _list_parts(batch: pa.RecordBatch, plan: _PackPlan) -> Ragged:
    """One entity per row: list columns zipped into records, scalar columns into the head."""
    n, first = batch.num_rows, 1 + len(plan.head)
    head = np.empty((n, len(plan.head)), np.float32)
    for j in range(len(plan.head)):
        head[:, j] = _floats(batch.column(1 + j))
    lengths = None
    flat = None
    for j, col in enumerate(plan.fields):
        arr = batch.column(first + j)
        these = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
        if lengths is None:
            lengths = these
            flat = np.empty(int(these.sum()), plan.layout.dtype)
        elif not np.array_equal(lengths, these):
            raise DataError(
                f"feature group {plan.layout.name!r}: list columns {plan.fields[0].name!r} and "
                f"{col.name!r} differ in length for some rows; they must pair up element by "
                "element"
            )
        assert flat is not None
        flat[col.name] = _typed(pc.list_flatten(arr), col)
    assert lengths is not None and flat is not None
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return Ragged(flat, offsets, head)


def _record_parts(batch: pa.RecordBatch, plan: _PackPlan) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a several-key group: each row's entity, and the rows as records."""
    keys = _key_values(batch.column(0), plan)
    flat = np.empty(batch.num_rows, plan.layout.dtype)
    for j, col in enumerate(plan.fields):
        flat[col.name] = _typed(batch.column(1 + j), col)
    return (np.asarray(keys, dtype=object) if isinstance(keys, list) else keys), flat


def _put_ragged(
    writer: OnlineWriter, plan: _PackPlan, keys: np.ndarray, ragged: Ragged, size: int
) -> None:
    """`ragged` (one entity per key) in batches of `size` entities."""
    off = ragged.offsets
    for a in range(0, len(keys), size):
        b = min(a + size, len(keys))
        part = Ragged(
            ragged.flat[off[a] : off[b]],
            off[a : b + 1] - off[a],
            None if ragged.head is None else ragged.head[a:b],
        )
        chunk = keys[a:b]
        writer.put_many(plan.layout.name, chunk.tolist() if chunk.dtype == object else chunk, part)


def _write_records(
    writer: OnlineWriter,
    plan: _PackPlan,
    batches: Iterable[pa.RecordBatch],
    size: int,
    advance: Any,
) -> None:
    if plan.head or any(c.kind == "list" for c in plan.fields):  # one entity per row
        for batch in batches:
            keys = _key_values(batch.column(0), plan)
            keys = np.asarray(keys, dtype=object) if isinstance(keys, list) else keys
            _put_ragged(writer, plan, keys, _list_parts(batch, plan), size)
            advance(batch.num_rows)
        return
    # Several rows per entity, sorted by entity: the rows of a batch's last entity may go on
    # in the next batch, so they wait for it.
    left_keys: np.ndarray | None = None
    left = np.empty(0, plan.layout.dtype)
    for batch in batches:
        if batch.num_rows == 0:
            continue
        keys, flat = _record_parts(batch, plan)
        if left_keys is not None:
            keys, flat = np.concatenate([left_keys, keys]), np.concatenate([left, flat])
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        last = int(starts[-1])
        offsets = starts.astype(np.int64)  # the complete entities: all but the last
        _put_ragged(writer, plan, keys[starts[:-1]], Ragged(flat[:last], offsets), size)
        left_keys, left = keys[last:], flat[last:]
        advance(batch.num_rows)
    if left_keys is not None and len(left_keys):
        offsets = np.array([0, len(left)], np.int64)
        _put_ragged(writer, plan, left_keys[:1], Ragged(left, offsets), size)


def _latest(
    store: FeatureStore, cutoff: datetime | None
) -> tuple[dict[str, FeatureVersion], list[str]]:
    """Each group's latest version (at `cutoff` when given), and the groups lacking one."""
    found: dict[str, FeatureVersion] = {}
    lacking: list[str] = []
    for group, versions in store.manifest().groups.items():
        chosen = [v for v in versions if cutoff is None or v.cutoff == cutoff]
        if chosen:
            found[group] = max(chosen, key=lambda v: v.version)
        else:
            lacking.append(group)
    return found, lacking


def materialize_online(
    workspace: Workspace,
    url: str | None = None,
    cutoff: datetime | str | None = None,
    *,
    groups: Iterable[str] | None = None,
    settings: OnlineSettings | None = None,
    store: OnlineStore | None = None,
    versions: Mapping[str, int] | None = None,
    extra: Sequence[GroupLayout] = (),
    options: FeatureOptions | None = None,
) -> OnlineSummary:
    """Write the latest version of each feature group into a new online version, then switch.

    url: "lmdb" or "redis://HOST:PORT/DB" (None: `[online] url`). cutoff: use the latest
    versions computed at this cutoff instead of the latest ones. Groups without such a version
    (or every group, when the feature store is empty) are computed first, on DuckDB, and listed
    in the summary's `computed`. groups: only these (default: all in the feature store).
    versions: group -> the version to write instead of the latest (what a saved pipeline
    trained with: `Pipeline.save` passes them). extra: more groups the version holds, empty
    (`Pipeline.save` passes the event groups, which real-time events update in place).
    options: how the groups computed here are computed (default: the `[features]` settings).

    Raises:
        WorkspaceError: nothing ingested; another writer holds the LMDB store.
        StoreUnavailable: Redis unreachable or failing (the current version keeps serving).
        DataError: a column type the online store cannot pack.
    """
    started = time.perf_counter()
    all_settings = workspace.settings()
    settings = settings or all_settings.online
    features = FeatureStore(workspace)
    when = None if cutoff is None else to_utc_naive(cutoff)
    wanted = None if groups is None else list(dict.fromkeys(groups))
    latest, lacking = _latest(features, when)
    for group, version in (versions or {}).items():  # these exact versions (a pipeline's)
        latest[group] = features.get(group, version)
    if wanted is not None:
        lacking = [g for g in wanted if g not in latest]
    elif not latest:
        lacking = None  # type: ignore[assignment]  # every group
    computed: list[FeatureVersion] = []
    if lacking is None or lacking:
        computed = materialize(workspace, cutoff=when, groups=lacking, options=options).written
        latest, _ = _latest(features, when)
    names = wanted if wanted is not None else list(latest)

    fs = all_settings.features
    con = duckdb.connect(
        config={
            "threads": thread_count(fs.threads),
            "temp_directory": str(features.root / ".tmp"),
            "memory_limit": fs.memory_limit or memory_share(0.25),
        }
    )
    target = store or open_online_store(url, workspace, settings)
    done: list[OnlineGroupSummary] = []
    try:
        con.execute("SET enable_progress_bar = false").fetchall()
        plans = [_plan(con, features, latest[g]) for g in names]
        info = {"features": {p.layout.name: p.layout.source for p in plans}}
        with target.begin([*(p.layout for p in plans), *extra], info) as writer:
            for plan in plans:
                t0 = time.perf_counter()
                name = plan.layout.name
                with track(f"Writing {name} to the online store", total=plan.rows) as advance:
                    for c in (*plan.head, *plan.fields):
                        if c.kind == "code":
                            writer.put_dictionary(name, c.name, c.dictionary)
                    if plan.layout.kind == ROW:
                        for batch in _batches(con, plan):
                            _write_rows(writer, plan, batch, settings.batch_size)
                            advance(batch.num_rows)
                    else:
                        _write_records(
                            writer, plan, _batches(con, plan), settings.batch_size, advance
                        )
                stats = writer.stats[name]
                done.append(
                    OnlineGroupSummary(
                        group=name,
                        kind=plan.layout.kind,
                        feature_version=plan.entry.version,
                        cutoff=plan.entry.cutoff,
                        entities=stats.entities,
                        bytes=stats.bytes,
                        seconds=time.perf_counter() - t0,
                    )
                )
            with track(f"Switching {target.url} to version {writer.version}"):
                meta = writer.commit()
    finally:
        con.close()
        if store is None:
            target.close()
    return OnlineSummary(
        url=target.url,
        version=meta.version,
        computed=computed,
        groups=done,
        seconds=time.perf_counter() - started,
    )
