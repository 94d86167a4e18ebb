"""`shortlist features`: materialize the feature groups into the workspace's feature store."""

from __future__ import annotations

import click
from rich.table import Table

from shortlist.cli.common import out, workspace, workspace_option

# Spelled out so that `shortlist --help` does not import Ibis; a test keeps them in step with
# shortlist.features.engine.ENGINES and shortlist.features.groups.GROUPS.
ENGINE_CHOICES = ("duckdb", "pyspark")
GROUP_CHOICES = ("items", "item_segments", "users", "user_category", "user_items", "history")


@click.command()
@workspace_option
@click.option(
    "--cutoff",
    help="Use interactions before this ISO date/datetime (UTC unless it has an offset). "
    "[default: midnight after the last interaction]",
)
@click.option("--engine", type=click.Choice(ENGINE_CHOICES), default="duckdb", show_default=True)
@click.option(
    "--group",
    "groups",
    multiple=True,
    type=click.Choice(GROUP_CHOICES),
    help="Only this group (repeatable). [default: all]",
)
@click.option(
    "--every-attribute",
    is_flag=True,
    help="user_category over every eligible item attribute, not only those the ranker reads "
    "(much larger: at full H&M scale more than 12 GB; raise [features] memory_limit).",
)
@click.pass_context
def features(
    ctx: click.Context,
    cutoff: str | None,
    engine: str,
    groups: tuple[str, ...],
    every_attribute: bool,
) -> None:
    """Compute feature groups as of a cutoff and write a new version of each."""
    from shortlist.features.base import FeatureOptions
    from shortlist.features.materialize import materialize
    from shortlist.pipeline.training import feature_options

    ws = workspace(ctx)
    if every_attribute or (groups and "user_category" not in groups):
        options = FeatureOptions.from_settings(ws.settings().features)
    else:
        options = feature_options(ws)
    s = materialize(ws, cutoff=cutoff, engine=engine, groups=groups or None, options=options)
    table = Table(title=f"Features as of {s.cutoff:%Y-%m-%d %H:%M} UTC ({s.engine})")
    for col in ("group", "version", "rows", "features", "seconds"):
        table.add_column(col, justify="left" if col == "group" else "right")
    for v in s.written:
        table.add_row(
            v.path.split("/")[0],
            str(v.version),
            f"{v.rows:,}",
            str(len(v.features)),
            f"{v.seconds:.1f}",
        )
    out.print(table)
    out.print(f"Written in {s.seconds:.1f} s to [bold]{s.folder}[/]")
