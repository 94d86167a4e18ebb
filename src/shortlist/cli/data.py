"""Commands over the data: init, generate, ingest, info."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from shortlist.cli.common import err, out, workspace, workspace_option
from shortlist.data.schema import Manifest


@click.command()
@workspace_option
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create the workspace with a commented shortlist.toml of every setting."""
    path = workspace(ctx).init()
    out.print(f"Workspace ready; settings in [bold]{path}[/]")


@click.command()
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write articles.csv, customers.csv, transactions_train.csv into.",
)
@click.option(
    "--scale",
    type=click.Choice(["tiny", "small", "medium", "full"]),
    default="small",
    show_default=True,
    help="Preset size; `full` is the real H&M size.",
)
@click.option("--users", type=click.IntRange(min=1), help="Override the preset's customers.")
@click.option("--items", type=click.IntRange(min=1), help="Override the preset's articles.")
@click.option(
    "--interactions", type=click.IntRange(min=1), help="Override the preset's transactions."
)
@click.option("--weeks", type=click.IntRange(min=1), help="Override the preset's weeks.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same files.")
def generate(
    out_dir: Path,
    scale: str,
    users: int | None,
    items: int | None,
    interactions: int | None,
    weeks: int | None,
    seed: int,
) -> None:
    """Generate an H&M-shaped data set with planted structure (see docs/generator.md)."""
    from shortlist.data.generator import generate as run

    s = run(
        out_dir,
        scale=scale,
        users=users,
        items=items,
        interactions=interactions,
        weeks=weeks,
        seed=seed,
    )
    out.print(
        f"Wrote {s.users:,} customers, {s.items:,} articles and {s.interactions:,} "
        f"transactions ({s.start} to {s.end}) to [bold]{s.out_dir}[/] in {s.seconds:.1f} s"
    )


@click.command()
@workspace_option
@click.option(
    "--source", required=True, type=click.Path(path_type=Path), help="Folder with the source files."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["hm", "generic"]),
    help="hm: articles/customers/transactions_train.csv; generic: items, users, "
    "interactions as .csv or .parquet. [default: from shortlist.toml, else generic]",
)
@click.option(
    "--on-bad-rows",
    type=click.Choice(["fail", "skip"]),
    help="fail: stop at bad rows, naming file:line:column; skip: load the rest and "
    "keep the rejected rows with reasons. [default: fail]",
)
@click.pass_context
def ingest(ctx: click.Context, source: Path, fmt: str | None, on_bad_rows: str | None) -> None:
    """Read a source folder into the workspace's offline store."""
    from shortlist.data.ingest import ingest as run

    s = run(workspace(ctx), source, format=fmt, on_bad_rows=on_bad_rows)
    m = s.manifest
    print_manifest(m)
    if s.rejections:
        err.print(
            f"[yellow]{len(s.rejections):,} rejected row(s)[/], kept with reasons in "
            f"{s.offline / 'rejected.parquet'}:"
        )
        for r in s.rejections[:5]:
            err.print(f"  {r}", markup=False, highlight=False)
    out.print(f"Ingested in {s.seconds:.1f} s into [bold]{s.offline}[/]")


@click.command()
@workspace_option
@click.pass_context
def info(ctx: click.Context) -> None:
    """Show what the workspace's offline store holds."""

    print_manifest(Manifest.read(workspace(ctx).offline))


def print_manifest(m) -> None:  # type: ignore[no-untyped-def]
    table = Table(title=f"Offline store ({m.adapter} source {m.source})", title_justify="left")
    for col in ("table", "rows", "attributes"):
        table.add_column(col, justify="right" if col == "rows" else "left")
    for name in ("items", "users", "interactions"):
        info = getattr(m, name)
        kinds: dict[str, int] = {}
        for kind in info.attributes.values():
            kinds[kind.value] = kinds.get(kind.value, 0) + 1
        table.add_row(name, f"{info.rows:,}", ", ".join(f"{n} {k}" for k, n in kinds.items()))
    out.print(table)
    out.print(
        f"Interactions from {m.start:%Y-%m-%d %H:%M} to {m.end:%Y-%m-%d %H:%M}; "
        f"{m.source_rows:,} source rows, {m.merged_duplicates:,} identical rows merged "
        "into quantities"
        + (
            f"; rejected: {', '.join(f'{k} {v:,}' for k, v in m.rejected.items())}"
            if m.rejected
            else ""
        )
    )
    from shortlist.data.logged import describe as describe_log

    if describe_log(m):
        out.print(f"Event log: {describe_log(m)}")
    roles = {k: v for k, v in m.roles.model_dump().items() if v}
    if roles:
        out.print("Roles: " + ", ".join(f"{k} = {v}" for k, v in roles.items()))
    if m.rules:
        tables = ", ".join(f"{name} {info.rows:,} rows" for name, info in m.rules.items())
        regions = f"; {len(m.regions)} regions" if m.regions else ""
        out.print(f"Business rules: {tables}{regions}")
