"""Ingest: source files -> the workspace's offline store (Parquet tables, dense ids, manifest).

Everything runs in DuckDB and streams from disk, so the full H&M data (3.5 GB of CSV) fits in a
few GB of memory. The new store is built beside the old one and swapped in only when complete:
a failed ingest leaves the previous store untouched.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from shortlist import columns as C
from shortlist.config import AttributeKind, Settings
from shortlist.data import generic, hm, logged
from shortlist.data.attributes import infer_kinds
from shortlist.data.layout import RULE_TABLES, SourceLayout, TableSource
from shortlist.data.reader import Rejection, Staged, sql_literal, stage
from shortlist.data.schema import Manifest, TableInfo
from shortlist.errors import DataError
from shortlist.progress import track
from shortlist.resources import thread_count
from shortlist.workspace import Workspace

SHOWN_BAD_ROWS = 5  # rows quoted in the error message when ingest fails on bad rows
REJECTED_FILE = "rejected.parquet"
# Business-rule tables holding one row per id (item_regions lists one row per sold region)
ONE_ROW_PER_ID = ("inventory", "user_regions", "item_restrictions")
MAX_UNITS = 2**31 - 1


class BadRowsError(DataError):
    """Some source rows are malformed; lists the first few with file:line:column."""

    def __init__(self, rejections: list[Rejection]):
        shown = "\n".join(f"  {r}" for r in rejections[:SHOWN_BAD_ROWS])
        more = len(rejections) - SHOWN_BAD_ROWS
        tail = f"\n  ... and {more} more" if more > 0 else ""
        where = "the source"
        if any(r.table == logged.TABLE for r in rejections):
            where = "the source and the event log"
        super().__init__(
            f"{len(rejections)} bad row(s) in {where}:\n{shown}{tail}\n"
            "Fix them, or rerun with --on-bad-rows skip to load the rest and keep the rejected "
            f"rows with their reasons in the offline store's {REJECTED_FILE}."
        )
        self.rejections = rejections


@dataclass(frozen=True)
class IngestSummary:
    offline: Path
    manifest: Manifest
    seconds: float
    rejections: list[Rejection] = field(default_factory=list)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _connect(settings: Settings, tmp: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"SET memory_limit = {sql_literal(settings.ingest.memory_limit)}").fetchall()
    con.execute(f"SET temp_directory = {sql_literal(str(tmp))}").fetchall()
    con.execute("SET TimeZone = 'UTC'").fetchall()
    con.execute("SET enable_progress_bar = false").fetchall()  # our own bars, not DuckDB's
    con.execute("SET preserve_insertion_order = true").fetchall()  # staged row i is source record i
    threads = thread_count(settings.ingest.threads)
    con.execute(f"SET threads = {threads}").fetchall()
    return con


def _scan(staged: Staged) -> str:
    return f"read_parquet({sql_literal(str(staged.path))}, file_row_number=true)"


def _reject(staged: Staged, rows: list[tuple], column_of, reason_of) -> None:
    """Record staged rows (tuples starting with the row index) as rejected."""
    for row in rows:
        r = int(row[0])
        if r in staged.bad_rows:
            continue
        staged.bad_rows.add(r)
        value = row[1] if len(row) > 1 else None
        staged.rejections.append(
            Rejection(
                staged.table,
                staged.file,
                staged.location(r),
                column_of(row),
                reason_of(row),
                None if value is None else str(value),
            )
        )


def _bad_rows_table(con: duckdb.DuckDBPyConnection, staged: Staged) -> str:
    name = f"bad_{staged.table}"
    con.register(name, pa.table({"r": pa.array(sorted(staged.bad_rows), pa.int64())}))
    return name


def _check_entities(
    con: duckdb.DuckDBPyConnection, staged: Staged, key: str, kinds: dict[str, AttributeKind]
) -> None:
    """Reject rows without an id, repeats of an id, and numeric attributes that do not parse."""
    rows = con.execute(
        f"SELECT r, {key}, first_r FROM (SELECT file_row_number AS r, {key}, "
        f"min(file_row_number) OVER (PARTITION BY {key}) AS first_r FROM {_scan(staged)}) "
        f"WHERE {key} IS NULL OR r > first_r ORDER BY r"
    ).fetchall()
    _reject(
        staged,
        rows,
        lambda _: key,
        lambda row: (
            f"missing {key}"
            if row[1] is None
            else f"duplicate {key} '{row[1]}' (first at {staged.location(int(row[2]))})"
        ),
    )
    for col, kind in kinds.items():
        if kind != AttributeKind.NUMERIC:
            continue
        v = f"NULLIF(trim({_q(col)}::VARCHAR), '')"
        bad = con.execute(
            f"SELECT file_row_number, {v} FROM {_scan(staged)} "
            f"WHERE {v} IS NOT NULL AND TRY_CAST({v} AS DOUBLE) IS NULL ORDER BY 1"
        ).fetchall()
        _reject(staged, bad, lambda _, c=col: c, lambda row: f"'{row[1]}' is not a number")


def _write_entities(
    con: duckdb.DuckDBPyConnection,
    staged: Staged,
    source: TableSource,
    key: str,
    idx: str,
    kinds: dict[str, AttributeKind],
    out: Path,
) -> int:
    """Write the table with dense ids (sorted by external id) and typed attributes."""
    cols = [f"(row_number() OVER (ORDER BY {key}) - 1)::INTEGER AS {idx}", key]
    for col, kind in kinds.items():
        v = f"NULLIF(trim({_q(col)}::VARCHAR), '')"
        expr = f"TRY_CAST({v} AS DOUBLE)" if kind == AttributeKind.NUMERIC else v
        if col in source.fill_null:
            expr = f"COALESCE({expr}, {source.fill_null[col]})"
        cols.append(f"{expr} AS {_q(col)}")
    bad = _bad_rows_table(con, staged)
    con.execute(
        f"COPY (SELECT {', '.join(cols)} FROM {_scan(staged)} "
        f"WHERE file_row_number NOT IN (SELECT r FROM {bad}) ORDER BY {key}) "
        f"TO {sql_literal(str(out))} (FORMAT parquet)"
    ).fetchall()
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {staged.table}_map AS "
        f"SELECT {idx}, {key} FROM read_parquet({sql_literal(str(out))})"
    ).fetchall()
    row = con.execute(f"SELECT count(*) FROM {staged.table}_map").fetchall()[0]
    return int(row[0]) if row else 0


def _check_interactions(
    con: duckdb.DuckDBPyConnection, staged: Staged, users_known: bool, files: dict[str, str]
) -> None:
    """Reject interactions with a missing field, an unknown item or user, or a bad value."""
    checks = [
        (f"s.{C.USER_ID} IS NULL", C.USER_ID, "missing user id"),
        (f"s.{C.ITEM_ID} IS NULL", C.ITEM_ID, "missing item id"),
        (f"s.{C.TIMESTAMP} IS NULL", C.TIMESTAMP, "missing timestamp"),
        (f"i.{C.ITEM_IDX} IS NULL", C.ITEM_ID, f"unknown item (not in {files['item']})"),
    ]
    if users_known:
        checks.append(
            (f"u.{C.USER_IDX} IS NULL", C.USER_ID, f"unknown user (not in {files['user']})")
        )
    checks += [
        (f"s.{C.PRICE} < 0", C.PRICE, "negative price"),
        (f"s.{C.QUANTITY} < 1", C.QUANTITY, "quantity below 1"),
    ]
    case = " ".join(f"WHEN {cond} THEN {i}" for i, (cond, _, _) in enumerate(checks))
    value = " ".join(f"WHEN {cond} THEN s.{_q(col)}::VARCHAR" for cond, col, _ in checks)
    join_users = f"LEFT JOIN users_map u ON s.{C.USER_ID} = u.{C.USER_ID}" if users_known else ""
    rows = con.execute(
        f"SELECT r, v, c FROM (SELECT s.file_row_number AS r, CASE {case} END AS c, "
        f"CASE {value} END AS v FROM {_scan(staged)} s "
        f"LEFT JOIN items_map i ON s.{C.ITEM_ID} = i.{C.ITEM_ID} {join_users}) "
        "WHERE c IS NOT NULL ORDER BY r"
    ).fetchall()
    _reject(
        staged,
        rows,
        lambda row: checks[row[2]][1],
        lambda row: checks[row[2]][2] + (f": '{row[1]}'" if row[1] is not None else ""),
    )


def _write_interactions(
    con: duckdb.DuckDBPyConnection, staged: Staged, out: Path, extra: str | None = None
) -> int:
    """Write interactions with dense ids, identical rows merged, partitioned by month.
    `extra`: SQL for more rows with the staged columns (the event log's purchases)."""
    bad = _bad_rows_table(con, staged)
    cols = f"{C.USER_ID}, {C.ITEM_ID}, {C.TIMESTAMP}, {C.PRICE}, {C.CHANNEL}, {C.QUANTITY}"
    rows = f"SELECT {cols} FROM {_scan(staged)} WHERE file_row_number NOT IN (SELECT r FROM {bad})"
    if extra is not None:
        rows = f"{rows} UNION ALL {extra}"
    con.execute(
        f"COPY (SELECT u.{C.USER_IDX}, i.{C.ITEM_IDX}, s.{C.TIMESTAMP}, s.{C.PRICE}, "
        f"s.{C.CHANNEL}, sum(s.{C.QUANTITY})::INTEGER AS {C.QUANTITY}, "
        f"strftime(s.{C.TIMESTAMP}, '%Y-%m') AS {C.MONTH} "
        f"FROM ({rows}) s "
        f"JOIN items_map i ON s.{C.ITEM_ID} = i.{C.ITEM_ID} "
        f"JOIN users_map u ON s.{C.USER_ID} = u.{C.USER_ID} "
        f"GROUP BY ALL ORDER BY s.{C.TIMESTAMP}, u.{C.USER_IDX}, i.{C.ITEM_IDX}) "
        f"TO {sql_literal(str(out))} (FORMAT parquet, PARTITION_BY ({C.MONTH}))"
    ).fetchall()
    row = con.execute(
        f"SELECT count(*) FROM read_parquet({sql_literal(str(out / '**' / '*.parquet'))})"
    ).fetchall()[0]
    return int(row[0]) if row else 0


def _derive_users(con: duckdb.DuckDBPyConnection, inter: Staged, out: Path) -> int:
    """Without a users file, the users are the distinct ids of the valid interactions."""
    bad = _bad_rows_table(con, inter)
    con.execute(
        f"COPY (SELECT (row_number() OVER (ORDER BY {C.USER_ID}) - 1)::INTEGER AS {C.USER_IDX}, "
        f"{C.USER_ID} FROM (SELECT DISTINCT {C.USER_ID} FROM {_scan(inter)} "
        f"WHERE {C.USER_ID} IS NOT NULL AND file_row_number NOT IN (SELECT r FROM {bad})) "
        f"ORDER BY {C.USER_ID}) TO {sql_literal(str(out))} (FORMAT parquet)"
    ).fetchall()
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE users_map AS SELECT {C.USER_IDX}, {C.USER_ID} "
        f"FROM read_parquet({sql_literal(str(out))})"
    ).fetchall()
    row = con.execute("SELECT count(*) FROM users_map").fetchall()[0]
    return int(row[0]) if row else 0


def _check_rule(
    con: duckdb.DuckDBPyConnection, staged: Staged, source: TableSource, files: dict[str, str]
) -> None:
    """Reject business-rule rows with a missing or unknown id, a missing or malformed value,
    or a repeated id where one row per id is expected. Messages use the source's column names."""
    (key, value), (key_col, value_col) = ([c.name for c in source.columns],
                                          [c.source for c in source.columns])  # fmt: skip
    entity, idx = ("item", C.ITEM_IDX) if key == C.ITEM_ID else ("user", C.USER_IDX)
    v, num = f"s.{_q(value)}", f"TRY_CAST(s.{_q(value)} AS DOUBLE)"
    checks = [
        (f"s.{key} IS NULL", f"s.{key}", key_col, f"missing {key_col}"),
        (f"m.{idx} IS NULL", f"s.{key}", key_col, f"unknown {entity} (not in {files[entity]})"),
        (f"{v} IS NULL", v, value_col, f"missing {value_col}"),
    ]
    if value == C.UNITS:
        checks += [
            (f"{num} IS NULL OR NOT isfinite({num}) OR {num} <> trunc({num})", v, value_col,
             f"{value_col} is not an integer"),
            (f"abs({num}) > {MAX_UNITS}", v, value_col, f"{value_col} out of range"),
        ]  # fmt: skip
    elif value == C.MIN_AGE:
        checks += [
            (f"{num} IS NULL OR NOT isfinite({num})", v, value_col, f"{value_col} is not a number"),
            (f"{num} < 0", v, value_col, f"negative {value_col}"),
        ]
    case = " ".join(f"WHEN {cond} THEN {i}" for i, (cond, _, _, _) in enumerate(checks))
    shown = " ".join(f"WHEN {cond} THEN {col}::VARCHAR" for cond, col, _, _ in checks)
    rows = con.execute(
        f"SELECT r, v, c FROM (SELECT s.file_row_number AS r, CASE {case} END AS c, "
        f"CASE {shown} END AS v FROM {_scan(staged)} s "
        f"LEFT JOIN {entity}s_map m ON s.{key} = m.{key}) WHERE c IS NOT NULL ORDER BY r"
    ).fetchall()
    _reject(
        staged,
        rows,
        lambda row: checks[row[2]][2],
        lambda row: checks[row[2]][3] + (f": '{row[1]}'" if row[1] is not None else ""),
    )
    if staged.table in ONE_ROW_PER_ID:  # among the rows that passed, the first of an id wins
        bad = _bad_rows_table(con, staged)
        rows = con.execute(
            f"SELECT r, k, first_r FROM (SELECT file_row_number AS r, {key} AS k, "
            f"min(file_row_number) OVER (PARTITION BY {key}) AS first_r FROM {_scan(staged)} "
            f"WHERE file_row_number NOT IN (SELECT r FROM {bad})) WHERE r > first_r ORDER BY r"
        ).fetchall()
        _reject(
            staged,
            rows,
            lambda _: key_col,
            lambda row: f"duplicate {key_col} '{row[1]}' (first at {staged.location(int(row[2]))})",
        )


def _write_rules(
    con: duckdb.DuckDBPyConnection, rules: dict[str, Staged], sources: dict[str, TableSource],
    new: Path,
) -> tuple[dict[str, TableInfo], list[str]]:  # fmt: skip
    """Write each business-rule table with dense ids (region names become codes: their
    position in the sorted names of both region tables). Returns the tables' infos and the
    region names by code."""
    names: set[str] = set()
    for staged in rules.values():
        if C.REGION in staged.present:
            bad = _bad_rows_table(con, staged)
            names.update(
                row[0]
                for row in con.execute(
                    f"SELECT DISTINCT {C.REGION} FROM {_scan(staged)} "
                    f"WHERE file_row_number NOT IN (SELECT r FROM {bad})"
                ).fetchall()
            )
    regions = sorted(names)
    con.register(
        "region_codes",
        pa.table({"code": pa.array(range(len(regions)), pa.int32()), "name": regions}),
    )
    infos: dict[str, TableInfo] = {}
    for name, staged in rules.items():
        key, value = (c.name for c in sources[name].columns)
        idx = C.ITEM_IDX if key == C.ITEM_ID else C.USER_IDX
        entity = "items" if key == C.ITEM_ID else "users"
        join, expr = "", f"TRY_CAST(s.{_q(value)} AS DOUBLE)"
        if value == C.UNITS:
            expr = f"{expr}::INTEGER"
        elif value == C.REGION:
            join, expr = f"JOIN region_codes g ON s.{C.REGION} = g.name", "g.code"
        bad = _bad_rows_table(con, staged)
        out = new / f"{name}.parquet"
        con.execute(
            f"COPY (SELECT DISTINCT m.{idx}, {expr} AS {_q(value)} FROM {_scan(staged)} s "
            f"JOIN {entity}_map m ON s.{key} = m.{key} {join} "
            f"WHERE s.file_row_number NOT IN (SELECT r FROM {bad}) ORDER BY 1, 2) "
            f"TO {sql_literal(str(out))} (FORMAT parquet)"
        ).fetchall()
        row = con.execute(f"SELECT count(*) FROM read_parquet({sql_literal(str(out))})").fetchall()
        infos[name] = TableInfo(
            rows=int(row[0][0]), source=staged.file, ignored_columns=staged.ignored_columns
        )
    return infos, regions


def _write_rejected(rejections: list[Rejection], out: Path) -> None:
    cols = ["table", "file", "location", "column", "reason", "value"]
    pq.write_table(pa.table({c: [getattr(r, c) for r in rejections] for c in cols}), out)


def _layout(source: Path, settings: Settings) -> SourceLayout:
    if not source.is_dir():
        raise DataError(f"source folder {source} does not exist")
    if settings.ingest.format == "hm":
        return hm.layout(source)
    return generic.layout(source, settings)


def ingest(
    workspace: Workspace,
    source: str | Path,
    *,
    format: str | None = None,
    on_bad_rows: str | None = None,
) -> IngestSummary:
    """Read a source folder into the workspace's offline store.

    Args:
        format: "hm" or "generic"; default from the workspace settings.
        on_bad_rows: "fail" (default) raises on the first bad rows; "skip" loads the rest and
            writes the rejected rows, with reasons, to the `rejected` table.

    The purchases of the workspace's event log are loaded with the source's interactions
    (shortlist.data.logged; the manifest's `events_through` says up to which event), their
    bad rows (an item the source no longer has) under the same `on_bad_rows` policy.

    Raises:
        DataError: a file or column is missing; BadRowsError (a DataError) for bad rows in
            "fail" mode, naming file:line and column of the first few.
    """
    started = time.perf_counter()
    overrides = {k: v for k, v in (("format", format), ("on_bad_rows", on_bad_rows)) if v}
    settings = workspace.settings({"ingest": overrides})
    source = Path(source)
    layout = _layout(source, settings)
    new, tmp = workspace.root / ".offline-new", workspace.root / ".tmp"
    for folder in (new, tmp):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    log = logged.read_log(workspace)
    con = _connect(settings, tmp)
    try:
        manifest, rejections = _build(con, layout, new, settings, log)
        con.close()
        shutil.rmtree(new / "_staging")
        if workspace.offline.exists():
            shutil.rmtree(workspace.offline)
        new.rename(workspace.offline)
    finally:
        con.close()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(new, ignore_errors=True)
    return IngestSummary(workspace.offline, manifest, time.perf_counter() - started, rejections)


def _build(
    con: duckdb.DuckDBPyConnection,
    layout: SourceLayout,
    new: Path,
    settings: Settings,
    log: logged.LogPurchases | None = None,
) -> tuple[Manifest, list[Rejection]]:
    staging = new / "_staging"
    staging.mkdir()
    with track(f"Reading {layout.items.path.name}"):
        items = stage(
            con,
            "items",
            layout.items.path,
            layout.items.columns,
            staging / "items.parquet",
            extra_as="VARCHAR",
        )
    users = None
    if layout.users is not None:
        with track(f"Reading {layout.users.path.name}"):
            users = stage(
                con,
                "users",
                layout.users.path,
                layout.users.columns,
                staging / "users.parquet",
                extra_as="VARCHAR",
            )
    with track(f"Reading {layout.interactions.path.name}"):
        inter = stage(
            con,
            "interactions",
            layout.interactions.path,
            layout.interactions.columns,
            staging / "interactions.parquet",
        )
    with track("Typing attributes and assigning dense ids"):
        item_kinds = _kinds(con, items, layout.items)
        _check_entities(con, items, C.ITEM_ID, item_kinds)
        n_items = _write_entities(
            con, items, layout.items, C.ITEM_ID, C.ITEM_IDX, item_kinds, new / "items.parquet"
        )
        user_kinds: dict[str, AttributeKind] = {}
        if users is not None and layout.users is not None:
            user_kinds = _kinds(con, users, layout.users)
            _check_entities(con, users, C.USER_ID, user_kinds)
            n_users = _write_entities(
                con, users, layout.users, C.USER_ID, C.USER_IDX, user_kinds, new / "users.parquet"
            )
        else:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE users_map AS SELECT NULL::INTEGER AS "
                f"{C.USER_IDX}, NULL::VARCHAR AS {C.USER_ID} LIMIT 0"
            ).fetchall()
    with track("Checking interactions"):
        files = {"item": items.file, "user": users.file if users else inter.file}
        _check_interactions(con, inter, users is not None, files)
    if users is None:  # before the rule files, which may name users
        n_users = _derive_users(con, inter, new / "users.parquet")
    added_users, event_rows = 0, None
    if log is not None and log.rows.num_rows:
        with track("Reading the event log's purchases"):
            logged.check_items(con, log, items.file)
            added_users = logged.add_users(con, log, new / "users.parquet")
            n_users += added_users
            event_rows = logged.interaction_rows(con, log)
    rules: dict[str, Staged] = {}
    for name, source in layout.rules.items():
        with track(f"Reading {source.path.name}"):
            rules[name] = stage(con, name, source.path, source.columns, staging / f"{name}.parquet")
            _check_rule(con, rules[name], source, files)
    staged_all = (items, users, inter, *rules.values())
    rejections = [r for s in staged_all if s for r in s.rejections]
    rejections += log.rejections if log is not None else []
    if rejections and settings.ingest.on_bad_rows == "fail":
        raise BadRowsError(_in_file_order(rejections))
    if inter.rows - len(inter.bad_rows) == 0:
        raise DataError("no valid interactions to load", file=inter.file)
    with track("Writing interactions by month"):
        n_rows = _write_interactions(con, inter, new / "interactions", event_rows)
    rule_infos, regions = _write_rules(con, rules, layout.rules, new) if rules else ({}, [])
    if rejections:
        _write_rejected(_in_file_order(rejections), new / REJECTED_FILE)
    bounds = con.execute(
        f"SELECT min({C.TIMESTAMP}), max({C.TIMESTAMP}) FROM "
        f"read_parquet({sql_literal(str(new / 'interactions' / '**' / '*.parquet'))})"
    ).fetchall()[0]
    assert bounds is not None and bounds[0] is not None  # at least one valid row was written
    loaded = inter.rows - len(inter.bad_rows)
    from_log = log.loaded if log is not None else 0
    reasons: dict[str, int] = {}
    for r in rejections:
        key = r.reason.split(":")[0].split(" '")[0]
        reasons[key] = reasons.get(key, 0) + 1
    manifest = Manifest(
        adapter=layout.adapter,
        source=str(layout.items.path.parent.resolve()),
        created_at=datetime.now(UTC),
        items=TableInfo(rows=n_items, source=items.file, attributes=item_kinds),
        users=TableInfo(rows=n_users, source=users.file if users else None, attributes=user_kinds),
        interactions=TableInfo(
            rows=n_rows, source=inter.file, ignored_columns=inter.ignored_columns
        ),
        start=bounds[0],
        end=bounds[1],
        source_rows=loaded + len(inter.rejections),
        merged_duplicates=loaded + from_log - n_rows,
        rejected=reasons,
        roles=layout.roles,
        source_files=source_fingerprint(layout),
        rules=rule_infos,
        regions=regions,
        events_through=log.through if log is not None else None,
        event_purchases=from_log,
        event_units=logged.units(con, log) if log is not None else 0,
        event_users=added_users,
        event_others=dict(sorted(log.others.items())) if log is not None else {},
    )
    manifest.write(new)
    return manifest, _in_file_order(rejections)


def source_fingerprint(layout: SourceLayout) -> dict[str, list[int]]:
    """Size and modification time of each source file, to tell when a re-ingest is needed."""
    tables = [layout.items, layout.users, layout.interactions, *layout.rules.values()]
    return {
        t.path.name: [t.path.stat().st_size, t.path.stat().st_mtime_ns]
        for t in tables
        if t is not None
    }


def is_current(workspace: Workspace, source: str | Path, format: str | None = None) -> bool:
    """True when the workspace's offline store was ingested from these unchanged files, and
    the event log holds no purchase after the last event it learnt from."""
    from shortlist.data.schema import Manifest

    try:
        manifest = Manifest.read(workspace.offline)
    except Exception:  # no store, or one from an older format: not current
        return False
    settings = workspace.settings({"ingest": {"format": format}} if format else None)
    try:
        layout = _layout(Path(source), settings)
    except DataError:
        return False
    if manifest.adapter != layout.adapter or manifest.source_files != source_fingerprint(layout):
        return False
    return not logged.new_purchases(workspace, after=manifest.events_through or 0)


def _kinds(
    con: duckdb.DuckDBPyConnection, staged: Staged, source: TableSource
) -> dict[str, AttributeKind]:
    """Adapter/user-fixed kinds first; the rest inferred from the values."""
    key = source.columns[0].name
    attrs = [c for c in pq.read_schema(staged.path).names if c != key]
    inferred = infer_kinds(con, staged.path, [a for a in attrs if a not in source.kinds])
    return {a: source.kinds.get(a) or inferred[a] for a in attrs}


def _in_file_order(rejections: list[Rejection]) -> list[Rejection]:
    order = {"items": 0, "users": 1, "interactions": 2}
    order.update({name: 3 + i for i, name in enumerate(RULE_TABLES)})
    order[logged.TABLE] = len(order)  # the log last, its files (named by day) in order

    def key(r: Rejection) -> tuple[int, str, int]:
        return order.get(r.table, 3), r.file, int(r.location.split()[-1])

    return sorted(rejections, key=key)
