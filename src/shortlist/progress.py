"""Progress bars for long steps: silent in library use, shown when the CLI switches them on."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

_enabled: ContextVar[bool] = ContextVar("shortlist_progress", default=False)
_scope: ContextVar[str] = ContextVar("shortlist_progress_scope", default="")
console = Console(stderr=True, soft_wrap=True)  # a log line is never cut in two


@contextmanager
def enabled(on: bool = True) -> Iterator[None]:
    """Show progress bars for the steps run inside this block (the CLI wraps each command)."""
    token = _enabled.set(on)
    try:
        yield
    finally:
        _enabled.reset(token)


@contextmanager
def scope(label: str) -> Iterator[None]:
    """Prefix every bar started inside this block with `label` (e.g. which method and window
    an evaluation is training), nested scopes joined by " / "."""
    outer = _scope.get()
    token = _scope.set(f"{outer} / {label}" if outer else label)
    try:
        yield
    finally:
        _scope.reset(token)


def say(line: str) -> None:
    """One log line among the bars (e.g. a step finished in another process), shown where
    progress is on."""
    if _enabled.get():
        console.print(escape(line), highlight=False)


Advance = Callable[..., None]  # advance(n=1, note=None): n steps done; note shown beside the bar


@contextmanager
def track(description: str, total: float | None = None) -> Iterator[Advance]:
    """A progress bar for one step; yields `advance(n=1, note=None)`.

    A spinner when `total` is None. `note` (e.g. "loss 1.23, 5,000 ex/s") replaces the text
    shown after the description. Outside a terminal, one line per finished step instead.
    """
    if not _enabled.get():
        yield lambda n=1, note=None: None
        return
    if _scope.get():
        description = f"{_scope.get()}: {description}"
    description = escape(description)  # a "[...]" in it is text, not rich markup
    if not console.is_terminal:
        started, last = time.perf_counter(), [""]

        def remember(n: float = 1, note: str | None = None) -> None:
            if note:
                last[0] = f" ({note})"

        yield remember
        console.print(
            f"{description}: done in {time.perf_counter() - started:.1f} s{last[0]}",
            highlight=False,
        )
        return
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
    if total is not None:
        columns.append(MofNCompleteColumn())
    columns += [TimeElapsedColumn(), TextColumn("{task.fields[note]}")]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total, note="")

        def advance(n: float = 1, note: str | None = None) -> None:
            bar.update(task, advance=n, **({"note": note} if note is not None else {}))

        yield advance
        if total is not None:
            bar.update(task, completed=total)
