"""`shortlist materialize`: the latest feature values into the online store, as a new version."""

from __future__ import annotations

import click
from rich.table import Table

from shortlist.cli.common import out, workspace, workspace_option


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    raise AssertionError  # unreachable


@click.command("materialize")
@workspace_option
@click.option(
    "--online",
    "url",
    metavar="lmdb|redis://HOST:PORT/DB",
    help="The online store: lmdb (files in the workspace) or a Redis URL, optionally with "
    "?prefix=NAME. [default: [online] url of shortlist.toml, lmdb]",
)
@click.option(
    "--cutoff",
    help="Serve the feature versions computed at this ISO date/datetime (computed first when "
    "missing). [default: the latest version of each group]",
)
@click.pass_context
def materialize_cmd(ctx: click.Context, url: str | None, cutoff: str | None) -> None:
    """Write the latest feature values into the online store as a new version, then switch."""
    from shortlist.features.online.materialize import materialize_online
    from shortlist.pipeline.training import feature_options

    ws = workspace(ctx)
    # groups computed first (none at the cutoff) cover the ranker's attributes, as `shortlist
    # features` computes them
    s = materialize_online(ws, url=url, cutoff=cutoff, options=feature_options(ws))
    if s.computed:
        done = ", ".join(f"{v.path.split('/')[0]} v{v.version}" for v in s.computed)
        when = s.computed[0].cutoff
        at = " at that cutoff" if cutoff else ""
        out.print(
            f"The feature store had no versions to serve{at}, so they were computed first "
            f"(as of {when:%Y-%m-%d %H:%M} UTC): {done}"
        )
    table = Table(title=f"Online version {s.version} in {s.url}")
    for col in ("group", "layout", "features", "cutoff", "entities", "bytes", "seconds"):
        table.add_column(col, justify="left" if col in ("group", "layout") else "right")
    for g in s.groups:
        table.add_row(
            g.group,
            g.kind,
            f"v{g.feature_version}",
            f"{g.cutoff:%Y-%m-%d %H:%M}",
            f"{g.entities:,}",
            _size(g.bytes),
            f"{g.seconds:.1f}",
        )
    out.print(table)
    if len({g.cutoff for g in s.groups}) > 1:
        out.print(
            "[yellow]note:[/] the groups were computed at different cutoffs; "
            "`shortlist features` then `shortlist materialize` aligns them"
        )
    out.print(f"Version {s.version} is serving; written and switched in {s.seconds:.1f} s")
