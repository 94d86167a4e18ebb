"""The event log: sequence numbers across batches and files, fsync'd appends under a lock, and
what a crash leaves (a batch cut short) skipped by readers and cut off by the next append."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

import shortlist.data.events as events_module
from shortlist.data.events import EventLog


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(events_module, "_TAIL", 7)  # read backwards a few bytes at a time


def seqs(log: EventLog, after: int = 0) -> list[tuple[int, int]]:
    return [(e.seq, e.event["n"]) for e in log.read(after)]


def test_batches_are_numbered_across_files_and_read_back(tmp_path: Path):
    log = EventLog(tmp_path / "events")
    with pytest.raises(RuntimeError, match="locked"):
        log.append([{"n": 0}])
    day1, day2 = datetime(2026, 1, 1, 23, tzinfo=UTC), datetime(2026, 1, 2, 1, tzinfo=UTC)
    with log.locked():
        assert [e.seq for e in log.append([{"n": 1}, {"n": 2}], day1)] == [1, 2]
        assert [e.seq for e in log.append([{"n": 3}], day2)] == [3]
    assert [p.name for p in log.files()] == ["2026-01-01.jsonl", "2026-01-02.jsonl"]
    other = EventLog(tmp_path / "events")  # another process: the same numbers
    assert other.last_seq() == 3 and seqs(other) == [(1, 1), (2, 2), (3, 3)]
    assert seqs(other, after=2) == [(3, 3)] and seqs(other, after=3) == []
    line = json.loads(log.files()[0].read_text().splitlines()[1])
    assert line == {"seq": 2, "batch": 1, "size": 2, "n": 2, "received_at": "2026-01-01T23:00:00Z"}


def test_a_batch_cut_short_by_a_crash_is_skipped_then_cut_off(tmp_path: Path):
    log = EventLog(tmp_path / "events")
    when = datetime(2026, 1, 1, tzinfo=UTC)
    with log.locked():
        log.append([{"n": 1}], when)
    path = log.files()[0]
    with open(path, "ab") as f:  # 2 of a batch of 3 lines, the second torn
        f.write(b'{"seq":2,"batch":2,"size":3,"n":2}\n{"seq":3,"batch":2,"si')
    fresh = EventLog(tmp_path / "events")
    assert fresh.last_seq() == 1 and seqs(fresh) == [(1, 1)]
    with fresh.locked():
        assert [e.seq for e in fresh.append([{"n": 9}], when)] == [2]
    assert seqs(EventLog(tmp_path / "events")) == [(1, 1), (2, 9)]
    assert len(path.read_text().splitlines()) == 2


def test_processes_take_turns(tmp_path: Path):
    """Two processes appending at once: every batch whole, numbers without gaps or repeats."""
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from shortlist.data.events import EventLog
        log = EventLog(Path({str(tmp_path / "events")!r}))
        for i in range(40):
            with log.locked():
                log.append([{{"n": i}}, {{"n": i}}])
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    read = list(EventLog(tmp_path / "events").read())
    assert [e.seq for e in read] == list(range(1, 161))
