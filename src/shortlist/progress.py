"""Progress bars for long steps: silent in library use, shown when the CLI switches them on."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

_enabled: ContextVar[bool] = ContextVar("shortlist_progress", default=False)
console = Console(stderr=True)


@contextmanager
def enabled(on: bool = True) -> Iterator[None]:
    """Show progress bars for the steps run inside this block (the CLI wraps each command)."""
    token = _enabled.set(on)
    try:
        yield
    finally:
        _enabled.reset(token)


@contextmanager
def track(description: str, total: float | None = None) -> Iterator[Callable[[float], None]]:
    """A progress bar for one step; yields `advance(n)`. A spinner when `total` is None."""
    if not _enabled.get():
        yield lambda n=1: None
        return
    if not console.is_terminal:  # logs (CI, pipes): one line per finished step, no animation
        started = time.perf_counter()
        yield lambda n=1: None
        console.print(
            f"{description}: done in {time.perf_counter() - started:.1f} s", highlight=False
        )
        return
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
    if total is not None:
        columns.append(MofNCompleteColumn())
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
        if total is not None:
            bar.update(task, completed=total)
