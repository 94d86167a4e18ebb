"""Reading one source table (CSV or Parquet) into a typed staging Parquet file with DuckDB.

Malformed rows never stop the read: DuckDB records them (`store_rejects`) with their line, and
the caller decides to fail or skip. Staging keeps source order, so a staged row index maps back
to the line it came from.
"""

from __future__ import annotations

import csv
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from shortlist.errors import DataError


@dataclass(frozen=True)
class SourceColumn:
    """One canonical column of a staged table and where it comes from.

    `sql_type` is what the source text is parsed as (parse errors become rejections with their
    line); `expr` turns the parsed value, referenced as `{col}`, into the canonical value.
    A missing optional column takes `default` (an SQL literal).
    """

    name: str
    source: str
    sql_type: str = "VARCHAR"
    required: bool = True
    expr: str = "{col}"
    default: str = "NULL"


@dataclass(frozen=True)
class Rejection:
    """A source row that was not loaded, and why."""

    table: str
    file: str
    location: str  # "line 17" (CSV, counting the header as line 1) or "row 17" (Parquet)
    column: str | None
    reason: str
    value: str | None = None

    def __str__(self) -> str:
        col = f" column '{self.column}'" if self.column else ""
        return f"{self.file}:{self.location.split()[-1]}{col}: {self.reason}"


@dataclass
class Staged:
    """A table read into `path` (columns: the canonical ones, in source order)."""

    table: str
    path: Path
    file: str  # source file name for messages
    is_csv: bool
    rows: int
    present: list[str]  # canonical columns found in the source
    ignored_columns: list[str]
    rejections: list[Rejection] = field(default_factory=list)
    bad_rows: set[int] = field(default_factory=set)  # staged rows to leave out (0-based)
    _rejected_records: list[int] = field(default_factory=list)  # 0-based record indexes

    def location(self, row: int) -> str:
        """Where staged row `row` (0-based) sits in the source file."""
        if not self.is_csv:
            return f"row {row + 1}"
        # Each rejected record before the target pushes it one record further down the file.
        k = row
        while True:
            shifted = row + bisect_right(self._rejected_records, k)
            if shifted == k:
                return f"line {k + 2}"
            k = shifted


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def read_header(path: Path) -> list[str]:
    """Column names of a CSV or Parquet file; a clear DataError when it cannot be read."""
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        except Exception as exc:  # pyarrow raises several types for a corrupt file
            raise DataError(f"not a readable Parquet file ({exc})", file=path.name) from None
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), None)
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason})", file=path.name, line=1) from None
    if not header or not any(h.strip() for h in header):
        raise DataError("empty file or empty header line", file=path.name, line=1)
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataError(f"column '{name}' appears twice in the header", file=path.name, line=1)
        seen.add(name)
    return header


def stage(
    con: duckdb.DuckDBPyConnection,
    table: str,
    path: Path,
    columns: list[SourceColumn],
    out: Path,
    *,
    extra_as: str | None = None,
) -> Staged:
    """Read `path` into the Parquet file `out` with the canonical `columns`.

    Args:
        extra_as: keep every source column not named in `columns` under its own name, read as
            this SQL type (item and user attributes); None ignores them (reported back).

    Raises:
        DataError: the file is unreadable or lacks a required column (names file and column).
    """
    header = read_header(path)
    missing = [c.source for c in columns if c.required and c.source not in header]
    if missing:
        raise DataError(
            f"missing column '{missing[0]}' (the header has: {', '.join(header)})",
            file=path.name,
            line=1 if path.suffix != ".parquet" else None,
        )
    by_source = {c.source: c for c in columns}
    extras = [h for h in header if h not in by_source]
    kept = extras if extra_as else []
    select = []
    for c in columns:
        if c.source in header:
            select.append(f"{c.expr.format(col=_quote(c.source))} AS {_quote(c.name)}")
        else:
            select.append(f"{c.default} AS {_quote(c.name)}")
    select += [_quote(h) for h in kept]
    is_csv = path.suffix != ".parquet"
    if is_csv:
        types = {
            h: (by_source[h].sql_type if h in by_source else extra_as or "VARCHAR") for h in header
        }
        cols_sql = (
            "{" + ", ".join(f"{sql_literal(k)}: {sql_literal(v)}" for k, v in types.items()) + "}"
        )
        source_sql = (
            f"read_csv({sql_literal(str(path))}, header=true, auto_detect=false, delim=',', "
            f"quote='\"', escape='\"', columns={cols_sql}, store_rejects=true, "
            f"rejects_table='rejects_{table}', rejects_scan='scans_{table}')"
        )
    else:
        # Parquet carries its own types; a value that does not cast is a rejected row.
        source_sql = f"read_parquet({sql_literal(str(path))})"
        for c in columns:
            if c.source in header and c.sql_type != "VARCHAR":
                select[columns.index(c)] = (
                    f"{c.expr.format(col=f'TRY_CAST({_quote(c.source)} AS {c.sql_type})')}"
                    f" AS {_quote(c.name)}"
                )
    try:
        con.execute(
            f"COPY (SELECT {', '.join(select)} FROM {source_sql}) TO "
            f"{sql_literal(str(out))} (FORMAT parquet)"
        ).fetchall()
    except duckdb.Error as exc:
        raise DataError(f"cannot be read: {str(exc).splitlines()[0]}", file=path.name) from None
    rows = con.execute(f"SELECT count(*) FROM read_parquet({sql_literal(str(out))})").fetchall()[0]
    staged = Staged(
        table=table,
        path=out,
        file=path.name,
        is_csv=is_csv,
        rows=int(rows[0]) if rows else 0,
        present=[c.name for c in columns if c.source in header],
        ignored_columns=[] if extra_as else extras,
    )
    if is_csv:
        _collect_csv_rejects(con, staged, by_source)
    else:
        _collect_parquet_cast_failures(con, staged, path, columns, header)
    return staged


def _collect_csv_rejects(
    con: duckdb.DuckDBPyConnection, staged: Staged, by_source: dict[str, SourceColumn]
) -> None:
    rows = con.execute(
        f"SELECT line, column_name, error_type::VARCHAR, csv_line, error_message "
        f"FROM rejects_{staged.table} ORDER BY line"
    ).fetchall()
    seen: set[int] = set()
    for line, column, kind, csv_line, message in rows:
        if line in seen:  # one row can fail several ways; its first reason is enough
            continue
        seen.add(int(line))
        staged.rejections.append(
            Rejection(
                staged.table,
                staged.file,
                f"line {line}",
                column,
                _reason(kind, column, message, by_source),
                csv_line,
            )
        )
    staged._rejected_records = sorted(line - 2 for line in seen)


def _reason(kind: str, column: str | None, message: str, by_source: dict[str, SourceColumn]) -> str:
    if kind == "CAST" and column in by_source:
        value = message.split('Could not convert string "', 1)[-1].split('" to', 1)[0]
        return f"cannot parse '{value}' as {by_source[column].sql_type.lower()}"
    if kind in ("MISSING COLUMNS", "TOO MANY COLUMNS"):
        counts = re.findall(r"\d+", message)
        if len(counts) == 2:
            return f"wrong number of fields (expected {counts[0]}, found {counts[1]})"
    return message.splitlines()[0]


def _collect_parquet_cast_failures(
    con: duckdb.DuckDBPyConnection,
    staged: Staged,
    path: Path,
    columns: list[SourceColumn],
    header: list[str],
) -> None:
    for c in columns:
        if c.source not in header or c.sql_type == "VARCHAR":
            continue
        col = _quote(c.source)
        bad = con.execute(
            f"SELECT file_row_number, {col}::VARCHAR FROM read_parquet({sql_literal(str(path))}, "
            f"file_row_number=true) WHERE {col} IS NOT NULL AND TRY_CAST({col} AS {c.sql_type}) "
            "IS NULL ORDER BY 1"
        ).fetchall()
        for row, value in bad:
            if row in staged.bad_rows:
                continue
            staged.bad_rows.add(int(row))
            staged.rejections.append(
                Rejection(
                    staged.table,
                    staged.file,
                    f"row {row + 1}",
                    c.source,
                    f"cannot parse '{value}' as {c.sql_type.lower()}",
                    value,
                )
            )
