"""The event log: every event the service accepted, appended durably before it is applied.

    <workspace>/events/
      2026-12-02.jsonl     one JSON object per line, one file per UTC day the events came in
      .lock                flock: one appender (and applier) at a time, across processes

Each line is one event with its sequence number (`seq`, 1, 2, 3, ... across files), the batch
it came in (`batch`: the first seq of the batch, `size`: its events), when it was received
(`received_at`) and the event as validated (`type`, `user_id`, `item_id`, `timestamp`, ...;
ids as the client sent them, times in ISO 8601 UTC). A batch is written with one write and
fsync'd before `append` returns, so an acknowledged batch survives a crash of the process or of
the machine. A batch a crash cut short (fewer lines than its `size`, or a last line without
its newline) was never acknowledged: readers skip it and the next `append` cuts it off.

The log is the record the online store's in-place updates replay (shortlist.pipeline.events),
and what the next ingest learns from (its purchases: shortlist.data.logged; `read()` gives
every event with its file and line, views, clicks and impressions too).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from shortlist.errors import DataError
from shortlist.workspace import Workspace

EVENTS_DIR = "events"
LOCK = ".lock"
SUFFIX = ".jsonl"
_TAIL = 1 << 16  # bytes read at a time when looking for the end of the last batch


@dataclass(frozen=True)
class LoggedEvent:
    """One line of the log: its sequence number and the event as logged."""

    seq: int
    event: dict[str, Any]  # type, ids, timestamp, ..., received_at (ISO strings)
    # where `read` found it (file, 1-based line); None for what `append` returns
    file: Path | None = field(default=None, compare=False)
    line: int = field(default=0, compare=False)


@dataclass
class _Tail:
    """The end of the last complete batch in a file: its byte offset and last seq."""

    path: Path
    end: int
    seq: int


def _parse(line: bytes, path: Path) -> dict[str, Any]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise DataError(f"{path}: a line is not JSON: {line[:80]!r}") from None
    if not isinstance(value, dict) or not isinstance(value.get("seq"), int):
        raise DataError(f"{path}: a line without its sequence number: {line[:80]!r}")
    return value


def _ends_batch(line: Mapping[str, Any]) -> bool:
    return line["seq"] == line["batch"] + line["size"] - 1


def _lines_backwards(f: Any, size: int) -> Iterator[tuple[int, int, bytes]]:
    """(start, end, bytes) of a file's newline-terminated lines, last first; bytes after the
    last newline (a line a crash cut short) are skipped."""
    pos, rest = size, b""
    while pos > 0:  # up to the last newline
        n = min(_TAIL, pos)
        pos -= n
        f.seek(pos)
        rest = f.read(n) + rest
        cut = rest.rfind(b"\n")
        if cut >= 0:
            rest = rest[: cut + 1]
            break
    else:
        return
    while rest:
        j = rest.rfind(b"\n", 0, len(rest) - 1)
        while j < 0 and pos > 0:
            n = min(_TAIL, pos)
            pos -= n
            f.seek(pos)
            rest = f.read(n) + rest
            j = rest.rfind(b"\n", 0, len(rest) - 1)
        begin = j + 1
        yield pos + begin, pos + len(rest), rest[begin:]
        rest = rest[:begin]


class EventLog:
    """Appends batches of events with sequence numbers and reads them back in order.

    `locked()` takes the log's lock (a thread lock and a flock on events/.lock, so threads and
    processes take turns); `append` must run under it, and so must whatever has to see the log
    and a store change together (applying events and recording how far it got).
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd = -1
        self._tail: _Tail | None = None  # where this process last appended
        # (file, offset, seq, line) of the last event read
        self._cursor: tuple[Path, int, int, int] | None = None

    @classmethod
    def of(cls, workspace: Workspace) -> EventLog:
        return cls(workspace.root / EVENTS_DIR)

    # -- locking --------------------------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[None]:
        """The log to this thread of this process alone (re-entrant)."""
        with self._thread_lock:
            if self._depth == 0:
                self.root.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.root / LOCK, os.O_CREAT | os.O_RDWR, 0o644)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    os.close(self._fd)  # releases the flock
                    self._fd = -1

    def _check_locked(self) -> None:
        if self._depth == 0:
            raise RuntimeError("EventLog.append runs under `with log.locked():`")

    # -- files ----------------------------------------------------------------------------------
    def files(self) -> list[Path]:
        """The log's files, oldest first (their names are dates, so names sort by time)."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.suffix == SUFFIX and p.is_file())

    def _find_tail(self, path: Path) -> _Tail:
        """Where the last whole batch of `path` ends (offset 0 and seq 0 for none): its lines
        read backwards from the end of the file, a block at a time."""
        expect: list[int] | None = None  # [first seq, next seq going back, end offset, last seq]
        with open(path, "rb") as f:
            for _, end, raw in _lines_backwards(f, path.stat().st_size):
                line = _parse(raw, path)
                seq, first = int(line["seq"]), int(line["batch"])
                if expect is not None and seq == expect[1] and first == expect[0]:
                    if seq == first:
                        return _Tail(path, expect[2], expect[3])
                    expect[1] -= 1
                    continue
                expect = None
                if seq == first + int(line["size"]) - 1:  # the last line of a batch
                    if seq == first:
                        return _Tail(path, end, seq)
                    expect = [first, seq - 1, end, seq]
        return _Tail(path, 0, 0)

    def _last(self) -> _Tail | None:
        """The end of the log's last whole batch: this process's last append when the file
        has not grown since, else read from the newest file that has one."""
        files = self.files()
        t = self._tail
        if t is not None and files and files[-1] == t.path and t.path.stat().st_size == t.end:
            return t
        for path in reversed(files):
            tail = self._find_tail(path)
            if tail.end:
                return tail
        return None

    # -- writing --------------------------------------------------------------------------------
    def append(
        self, events: Sequence[Mapping[str, Any]], received_at: datetime | None = None
    ) -> list[LoggedEvent]:
        """Append one batch (numbered after the last complete batch), fsync'd: once this
        returns, the batch is in the log whatever crashes. Runs under `locked()`."""
        self._check_locked()
        if not events:
            return []
        received_at = received_at or datetime.now(UTC)
        stamp = received_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        last = self._last()
        first = (last.seq if last is not None else 0) + 1
        logged = [LoggedEvent(first + i, {**e, "received_at": stamp}) for i, e in enumerate(events)]
        payload = b"".join(
            orjson.dumps({"seq": e.seq, "batch": first, "size": len(events), **e.event}) + b"\n"
            for e in logged
        )
        path = self.root / f"{received_at.astimezone(UTC):%Y-%m-%d}{SUFFIX}"
        self.root.mkdir(parents=True, exist_ok=True)
        new_file = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            if last is not None and last.path != path:
                self._cut(last)  # a batch cut short at the end of the previous file
            end = last.end if last is not None and last.path == path else 0
            # what a crash left after the last complete batch was never acknowledged
            os.ftruncate(fd, end)
            written = os.pwrite(fd, payload, end)
            if written != len(payload):
                raise OSError(f"{path}: wrote {written} of {len(payload)} bytes")
            os.fsync(fd)
        finally:
            os.close(fd)
        if new_file:
            dir_fd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self._tail = _Tail(path, end + len(payload), logged[-1].seq)
        return logged

    def _cut(self, tail: _Tail) -> None:
        """Remove what follows the last complete batch of a file (an unacknowledged batch)."""
        if tail.path.stat().st_size > tail.end:
            with open(tail.path, "r+b") as f:
                f.truncate(tail.end)
                f.flush()
                os.fsync(f.fileno())

    def last_seq(self) -> int:
        """The sequence number of the last event of the last complete batch (0: none)."""
        last = self._last()
        return last.seq if last is not None else 0

    # -- reading --------------------------------------------------------------------------------
    def read(self, after: int = 0) -> Iterator[LoggedEvent]:
        """The events of complete batches with seq > `after`, in order. Reading on from where
        this process last stopped (the usual case) starts at that byte; otherwise files whose
        last event is not after `after` are skipped without parsing them."""
        files = self.files()
        start: dict[Path, tuple[int, int]] = {}  # file -> (offset, lines before it)
        if self._cursor is not None and self._cursor[2] == after and self._cursor[0] in files:
            path = self._cursor[0]
            files = files[files.index(path) :]
            start[path] = (self._cursor[1], self._cursor[3])
        for path in files:
            offset, number = start.get(path, (0, 0))
            if offset == 0:
                tail = self._find_tail(path)
                if tail.seq <= after:
                    continue
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
            batch: list[tuple[int, int, dict[str, Any]]] = []
            pos = offset
            for raw in data.splitlines(keepends=True):
                pos += len(raw)
                number += 1
                if not raw.endswith(b"\n"):
                    break  # being written, or cut by a crash
                line = _parse(raw, path)
                if batch and batch[-1][2]["batch"] != line["batch"]:
                    batch = []  # the rest of a batch a crash cut short (never acknowledged)
                batch.append((pos, number, line))
                if _ends_batch(line):
                    if len(batch) == line["size"]:  # whole: every line of the batch is here
                        for end, at, event in batch:
                            seq = int(event.pop("seq"))
                            event.pop("batch", None)
                            event.pop("size", None)
                            self._cursor = (path, end, seq, at)
                            if seq > after:
                                yield LoggedEvent(seq, event, path, at)
                    batch = []
