"""Learning from the event log: the purchases the service logged become interactions.

`ingest` (hence `shortlist build` and `shortlist ingest`) reads the workspace's event log
(shortlist.data.events) with the source files: every logged purchase up to the log's last
complete batch is added to the offline store's interactions, in their layout (one row per
user, item, time and price with the units as `quantity`; identical rows merged, as the
source's are; no channel), with its own timestamp. A purchase by a user the source lacks adds
the user (attributes empty). Views, clicks, impressions and stock events are not
interactions: they stay in the log, counted in the manifest (`event_others`).

The manifest records how far the log was read (`events_through`, the last sequence number)
and what was learnt (`event_purchases`, `event_units`, `event_users`): `is_current` says a
store is stale once the log holds a purchase after that number, and a new online version
replays only what the interactions lack (shortlist.pipeline.events).

A logged purchase that cannot be loaded (its item is no longer in the source's catalogue, a
line edited by hand) is a bad row like a source's: `[ingest] on_bad_rows = "fail"` stops,
naming the log's file and line; "skip" loads the rest and keeps it in `rejected.parquet`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from shortlist import columns as C
from shortlist.data.events import EVENTS_DIR, EventLog
from shortlist.data.reader import Rejection, sql_literal
from shortlist.data.schema import Manifest
from shortlist.workspace import Workspace

TABLE = "events"  # the table rejections name
PURCHASE = "purchase"
MAX_QUANTITY = 2**31 - 1
# a purchase dated later than this after the service received it is rejected: one bad client
# clock would otherwise move the end of the data, hence every build's cutoff, into the future
CLOCK_SKEW = timedelta(days=1)
_VIEW = "log_purchases"


@dataclass
class LogPurchases:
    """The log's purchases as rows for the interactions, with where each line is."""

    through: int  # sequence number of the last event read (0: an empty log)
    rows: pa.Table  # r, user_id, item_id, timestamp, price, quantity, file, line, seq
    others: dict[str, int] = field(default_factory=dict)  # events of other types, by type
    rejections: list[Rejection] = field(default_factory=list)
    bad: set[int] = field(default_factory=set)  # rows (r) not to load

    @property
    def loaded(self) -> int:
        """Purchases that load (the rows not rejected)."""
        return self.rows.num_rows - len(self.bad)

    def reject(self, r: int, column: str | None, reason: str, value: Any) -> None:
        if r in self.bad:
            return
        self.bad.add(r)
        file, line = self.rows["file"][r].as_py(), self.rows["line"][r].as_py()
        shown = None if value is None else str(value)
        self.rejections.append(Rejection(TABLE, file, f"line {line}", column, reason, shown))


def _time(value: Any) -> datetime | None:
    """A logged time as a naive UTC datetime (as the interactions hold them); None if bad."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.strip())  # "...Z" too (Python 3.11)
    except ValueError:
        return None
    offset = when.utcoffset()
    return when if offset is None else (when - offset).replace(tzinfo=None)


_received = lru_cache(maxsize=64)(_time)  # one time per batch: parsed once


def _purchase(event: dict[str, Any]) -> tuple[tuple, None] | tuple[None, tuple[str, str, Any]]:
    """(user, item, time, price, quantity) of a logged purchase, or (column, reason, value)
    of what makes it unloadable. The service checked every event before logging it: the
    problems are those of a log edited by hand, and a client clock far ahead."""
    ids = []
    for name in (C.USER_ID, C.ITEM_ID):
        value = event.get(name)
        if not isinstance(value, str) or not value.strip():
            return None, (name, f"logged purchase without {name}", value)
        ids.append(value.strip())  # as ingest trims the source's ids
    stamp = event.get("timestamp")
    when = _time(stamp)
    if when is None:
        return None, (C.TIMESTAMP, "logged purchase with an unreadable timestamp", stamp)
    received = event.get("received_at")
    at = _received(received) if isinstance(received, str) else None
    if at is not None and when > at + CLOCK_SKEW:
        reason = (
            f"logged purchase dated more than {CLOCK_SKEW.days} day after it was received "
            f"({received})"
        )
        return None, (C.TIMESTAMP, reason, stamp)
    quantity = event.get("quantity", 1)
    quantity = 1 if quantity is None else quantity
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        return None, (C.QUANTITY, "logged purchase with a quantity not a whole number", quantity)
    if not 1 <= quantity <= MAX_QUANTITY:
        return None, (C.QUANTITY, "logged purchase with a quantity below 1", quantity)
    price = event.get("price")
    if price is not None and (
        isinstance(price, bool)
        or not isinstance(price, int | float)
        or not math.isfinite(price)
        or price < 0
    ):
        return None, (C.PRICE, "logged purchase with a negative or unreadable price", price)
    return (ids[0], ids[1], when, None if price is None else float(price), quantity), None


def read_log(workspace: Workspace) -> LogPurchases:
    """The workspace's event log read whole (complete batches only: one being written, or
    cut short by a crash, is left for the next ingest): its purchases as rows, the other
    events counted, malformed purchases rejected with their file and line."""
    names = (C.USER_ID, C.ITEM_ID, C.TIMESTAMP, C.PRICE, C.QUANTITY)
    cols: dict[str, list[Any]] = {k: [] for k in (*names, "file", "line", "seq")}
    others: dict[str, int] = {}
    problems: list[tuple[int, str, str, Any]] = []
    files: dict[Path | None, str] = {}
    empty = (None, None, None, None, 1)
    through = 0
    for e in EventLog.of(workspace).read(0):
        through = e.seq
        kind = e.event.get("type")
        if kind != PURCHASE:
            others[str(kind)] = others.get(str(kind), 0) + 1
            continue
        row, problem = _purchase(e.event)
        if problem is not None:
            problems.append((len(cols["seq"]), *problem))
        for name, value in zip(names, row or empty, strict=True):
            cols[name].append(value)
        if e.file not in files:
            files[e.file] = f"{EVENTS_DIR}/{e.file.name if e.file is not None else '?'}"
        cols["file"].append(files[e.file])
        cols["line"].append(e.line)
        cols["seq"].append(e.seq)
    rows = pa.table(
        {
            "r": pa.array(range(len(cols["seq"])), pa.int64()),
            C.USER_ID: pa.array(cols[C.USER_ID], pa.string()),
            C.ITEM_ID: pa.array(cols[C.ITEM_ID], pa.string()),
            C.TIMESTAMP: pa.array(cols[C.TIMESTAMP], pa.timestamp("us")),
            C.PRICE: pa.array(cols[C.PRICE], pa.float64()),
            C.QUANTITY: pa.array(cols[C.QUANTITY], pa.int32()),
            "file": pa.array(cols["file"], pa.string()),
            "line": pa.array(cols["line"], pa.int64()),
            "seq": pa.array(cols["seq"], pa.int64()),
        }
    )
    log = LogPurchases(through, rows, others)
    for r, column, reason, value in problems:
        log.reject(r, column, reason, value)
    return log


def check_items(con: duckdb.DuckDBPyConnection, log: LogPurchases, items_file: str) -> None:
    """Reject the logged purchases of items the source's catalogue lacks (`items_map`, written
    by ingest): the catalogue changed since they were logged."""
    if not log.rows.num_rows:
        return
    con.register(_VIEW, log.rows)
    bad = con.execute(
        f"SELECT l.r, l.{C.ITEM_ID} FROM {_VIEW} l LEFT JOIN items_map i "
        f"ON l.{C.ITEM_ID} = i.{C.ITEM_ID} WHERE l.{C.ITEM_ID} IS NOT NULL "
        f"AND i.{C.ITEM_IDX} IS NULL ORDER BY l.r"
    ).fetchall()
    for r, item in bad:
        log.reject(
            int(r),
            C.ITEM_ID,
            f"logged purchase of an unknown item (not in {items_file}): '{item}'",
            item,
        )


def _good_rows(con: duckdb.DuckDBPyConnection, log: LogPurchases) -> str:
    """SQL: the loadable rows of the registered log."""
    con.register("log_bad", pa.table({"r": pa.array(sorted(log.bad), pa.int64())}))
    return f"SELECT * FROM {_VIEW} WHERE r NOT IN (SELECT r FROM log_bad)"


def add_users(con: duckdb.DuckDBPyConnection, log: LogPurchases, users: Path) -> int:
    """Add the buyers the users table lacks to `users` (the users.parquet ingest wrote, and
    its `users_map`): attributes empty, dense ids reassigned in external id order as ingest
    assigns them. Returns how many were added."""
    if not log.loaded:
        return 0
    good = _good_rows(con, log)
    row = con.execute(
        f"SELECT count(DISTINCT l.{C.USER_ID}) FROM ({good}) l LEFT JOIN users_map u "
        f"ON l.{C.USER_ID} = u.{C.USER_ID} WHERE u.{C.USER_IDX} IS NULL"
    ).fetchall()[0]
    added = int(row[0]) if row else 0
    if not added:
        return 0
    path = sql_literal(str(users))
    tmp = users.with_name(users.name + ".tmp")
    con.execute(
        f"COPY (SELECT (row_number() OVER (ORDER BY {C.USER_ID}) - 1)::INTEGER AS {C.USER_IDX}, "
        f"* FROM (SELECT * EXCLUDE ({C.USER_IDX}) FROM read_parquet({path}) "
        f"UNION ALL BY NAME SELECT DISTINCT l.{C.USER_ID} FROM ({good}) l "
        f"WHERE l.{C.USER_ID} NOT IN (SELECT {C.USER_ID} FROM users_map)) "
        f"ORDER BY {C.USER_ID}) TO {sql_literal(str(tmp))} (FORMAT parquet)"
    ).fetchall()
    tmp.replace(users)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE users_map AS SELECT {C.USER_IDX}, {C.USER_ID} "
        f"FROM read_parquet({path})"
    ).fetchall()
    return added


def interaction_rows(con: duckdb.DuckDBPyConnection, log: LogPurchases) -> str | None:
    """SQL: the loadable purchases with the staged interactions' columns (user id, item id,
    timestamp, price, channel, quantity), or None when there are none."""
    if not log.loaded:
        return None
    good = _good_rows(con, log)
    return (
        f"SELECT {C.USER_ID}, {C.ITEM_ID}, {C.TIMESTAMP}, {C.PRICE}, NULL::VARCHAR AS "
        f"{C.CHANNEL}, {C.QUANTITY} FROM ({good})"
    )


def units(con: duckdb.DuckDBPyConnection, log: LogPurchases) -> int:
    """Units of the loadable purchases."""
    if not log.loaded:
        return 0
    row = con.execute(f"SELECT sum({C.QUANTITY}) FROM ({_good_rows(con, log)})").fetchall()[0]
    return int(row[0] or 0) if row else 0


def new_purchases(workspace: Workspace, after: int) -> bool:
    """Whether the log holds a purchase after sequence number `after` (files whose events all
    come before it are skipped unread)."""
    return any(e.event.get("type") == PURCHASE for e in EventLog.of(workspace).read(after))


def describe(manifest: Manifest) -> str:
    """What a store learnt from the log: "N purchases from the event log (through event #S)",
    and the users it added, the other events left in the log; "" when the log was empty."""
    if not manifest.events_through:
        return ""
    n = manifest.event_purchases
    text = f"{n:,} purchase{'' if n == 1 else 's'} from the event log (through event "
    text += f"#{manifest.events_through})"
    if manifest.event_users:
        text += f", {manifest.event_users:,} new user{'' if manifest.event_users == 1 else 's'}"
    if manifest.event_others:
        others = ", ".join(f"{v:,} {k}" for k, v in manifest.event_others.items())
        text += f"; not interactions, left in the log: {others}"
    return text
