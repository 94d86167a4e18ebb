"""What every command shares: the consoles, the workspace option, JSON arguments."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from shortlist import resources
from shortlist.errors import ConfigError, RequestError
from shortlist.workspace import Workspace, open_workspace

# Logs and pipes get a wide fixed width, so tables are not squeezed to 80 columns.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 120)

F = TypeVar("F", bound=Callable[..., Any])


def _remember_workspace(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.find_root().obj = value


def workspace_option(command: F) -> F:
    """`--workspace` after the command name too (`shortlist evaluate --workspace W`): it
    overrides the one before it and $SHORTLIST_WORKSPACE."""
    return click.option(
        "--workspace",
        "-w",
        type=click.Path(file_okay=False, path_type=Path),
        expose_value=False,
        callback=_remember_workspace,
        help="Workspace folder (as the global option; either place works).",
    )(command)


def workspace(ctx: click.Context) -> Workspace:
    """The workspace the command line chose; its `[resources]` size the thread pools."""
    root = ctx.find_root().obj
    ws = open_workspace(root if isinstance(root, Path | str) else None)
    try:
        resources.configure(ws.settings())
    except ConfigError:
        resources.configure()  # the command says what is wrong with the settings
    return ws


def parse_json(text: str | None, option: str) -> dict | None:
    """A JSON object given on the command line; RequestError naming the option otherwise."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise RequestError(f"not valid JSON ({e.msg} at character {e.pos})", field=option) from None
    if not isinstance(value, dict):
        raise RequestError("must be a JSON object of attribute conditions", field=option)
    return value
