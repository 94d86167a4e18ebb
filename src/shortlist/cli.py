"""The `shortlist` command line: thin commands over the Python API."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from shortlist import progress
from shortlist.errors import ShortlistError
from shortlist.workspace import Workspace, open_workspace

# Logs and pipes get a wide fixed width, so tables are not squeezed to 80 columns.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 120)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--workspace",
    "-w",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SHORTLIST_WORKSPACE",
    default="workspace",
    show_default=True,
    help="Folder holding everything a build produces (env: SHORTLIST_WORKSPACE).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.version_option(package_name="shortlist")
@click.pass_context
def cli(ctx: click.Context, workspace: Path, quiet: bool) -> None:
    """shortlist: recommendations and search as a retrieval-and-ranking funnel."""
    ctx.obj = workspace
    ctx.with_resource(progress.enabled(not quiet))


def _workspace(ctx: click.Context) -> Workspace:
    return open_workspace(ctx.obj)


@cli.command()
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create the workspace with a commented shortlist.toml of every setting."""
    path = _workspace(ctx).init()
    out.print(f"Workspace ready; settings in [bold]{path}[/]")


@cli.command()
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


@cli.command()
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

    s = run(_workspace(ctx), source, format=fmt, on_bad_rows=on_bad_rows)
    m = s.manifest
    _print_manifest(m)
    if s.rejections:
        err.print(
            f"[yellow]{len(s.rejections):,} rejected row(s)[/], kept with reasons in "
            f"{s.offline / 'rejected.parquet'}:"
        )
        for r in s.rejections[:5]:
            err.print(f"  {r}", markup=False, highlight=False)
    out.print(f"Ingested in {s.seconds:.1f} s into [bold]{s.offline}[/]")


@cli.command()
@click.pass_context
def info(ctx: click.Context) -> None:
    """Show what the workspace's offline store holds."""
    from shortlist.data.schema import Manifest

    _print_manifest(Manifest.read(_workspace(ctx).offline))


@cli.command()
@click.option(
    "--source",
    type=click.Path(path_type=Path),
    help="Source folder; ingested first unless the workspace already holds it.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["hm", "generic"]),
    help="Layout of --source. [default: from shortlist.toml, else generic]",
)
@click.option(
    "--windows",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Consecutive target windows ending at the end of the data; metrics averaged.",
)
@click.option(
    "--holdout-days",
    type=click.IntRange(min=1),
    default=7,
    show_default=True,
    help="Length of each target window.",
)
@click.option(
    "--k",
    type=click.IntRange(min=1),
    default=12,
    show_default=True,
    help="Recommendations per user.",
)
@click.option(
    "--methods",
    help="Comma-separated methods: popular, popular_by_age, repurchase_trending, copurchase, "
    "als, two_tower, pipeline, pipeline_no_ranker, pipeline_no_<source>, "
    "pipeline_div_<round_robin|max_per_value|mmr|revenue>, pipeline_with_<filter>, or "
    "pipeline_ablations for every "
    "pipeline variant. [default: the five baselines]",
)
@click.option(
    "--candidates",
    is_flag=True,
    help="Also report each candidate source's recall at 50/100/300/500 candidates.",
)
@click.option("--json", "json_out", help="Write the report as JSON to PATH, or - for stdout.")
@click.pass_context
def evaluate(
    ctx: click.Context,
    source: Path | None,
    fmt: str | None,
    windows: int,
    holdout_days: int,
    k: int,
    methods: str | None,
    candidates: bool,
    json_out: str | None,
) -> None:
    """Score methods with the H&M last-week protocol (MAP@k, recall, NDCG, coverage)."""

    from shortlist.data.arrays import load_dataset
    from shortlist.data.ingest import ingest as run_ingest
    from shortlist.data.ingest import is_current
    from shortlist.data.offline import OfflineStore
    from shortlist.eval.evaluate import evaluate as run
    from shortlist.eval.evaluate import resolve_methods
    from shortlist.eval.report import candidates_table, report_table

    ws = _workspace(ctx)
    chosen = resolve_methods(
        [m.strip() for m in methods.split(",")] if methods else None, ws.settings()
    )
    if source is not None and not is_current(ws, source, fmt):
        run_ingest(ws, source, format=fmt)
    data = load_dataset(OfflineStore(ws))
    report = run(
        data, chosen, n_windows=windows, holdout_days=holdout_days, k=k, candidates=candidates
    )
    text = json.dumps(report, indent=2)
    (err if json_out == "-" else out).print(report_table(report))
    if "candidates" in report:
        (err if json_out == "-" else out).print(candidates_table(report))
    if json_out == "-":
        click.echo(text)
    elif json_out:
        Path(json_out).write_text(text + "\n")
        out.print(f"Report written to [bold]{json_out}[/]")


@cli.group()
def train() -> None:
    """Train the funnel's models."""


@train.command("retrieval")
@click.pass_context
def train_retrieval(ctx: click.Context) -> None:
    """Train the two-tower retrieval model on the offline store ([retrieval] settings)."""
    from shortlist.retrieval.build import train_retrieval as run

    s = run(_workspace(ctx.parent))  # type: ignore[arg-type]
    table = Table(title="Two-tower training", title_justify="left")
    for col in ("epoch", "loss", "val recall@100"):
        table.add_column(col, justify="right")
    for e in s.epochs:
        table.add_row(str(e["epoch"]), f"{e['loss']:.3f}", f"{e['val_recall@100']:.4f}")
    out.print(table)
    out.print(
        f"Trained on {s.examples:,} purchases in {s.seconds:.1f} s; saved to [bold]{s.folder}[/]"
    )


@cli.command("index")
@click.option(
    "--exact-below",
    type=click.IntRange(min=0),
    default=None,
    help="Brute-force (exact) search for catalogues of at most this many items [20000].",
)
@click.pass_context
def index_cmd(ctx: click.Context, exact_below: int | None) -> None:
    """Build the ANN index (FAISS HNSW, inner product) over the trained item embeddings."""
    from shortlist.retrieval.build import build_item_index

    with progress.track("Indexing item vectors") as advance:
        s = build_item_index(_workspace(ctx), exact_below=exact_below)
        advance()
    out.print(
        f"Indexed {s.items:,} items ({s.dim} dimensions, {s.kind}) in {s.seconds:.1f} s; "
        f"saved to [bold]{s.folder}[/]"
    )
    if s.tuned:
        out.print(
            f"Search effort ef_search = {s.tuned['ef_search']:.0f}: recall@100 "
            f"{s.tuned['recall']:.3f} against exact search on sampled recent users"
        )


@cli.command()
@click.option("--item", "item_id", required=True, help="External id of the item.")
@click.option("--k", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option(
    "--filter",
    "filter_json",
    default=None,
    help='Attribute filter as JSON, e.g. \'{"price": {"lte": 0.03}, "colour": "Black"}\'.',
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def similar(
    ctx: click.Context, item_id: str, k: int, filter_json: str | None, as_json: bool
) -> None:
    """Items closest to ITEM in the two-tower embedding space, among those passing a filter."""
    from shortlist.retrieval.filters import FilterError
    from shortlist.retrieval.similar import ItemSearch

    filters = None
    if filter_json:
        try:
            filters = json.loads(filter_json)
        except json.JSONDecodeError as err:
            raise FilterError(f"not valid JSON ({err.msg} at character {err.pos})") from None
        if not isinstance(filters, dict):
            raise FilterError("must be a JSON object of attribute conditions")
    matches = ItemSearch(_workspace(ctx)).similar(item_id, k, filters)
    if as_json:
        click.echo(json.dumps([{"item_id": m.item_id, "score": m.score} for m in matches]))
        return
    table = Table(title=f"Items similar to {item_id}", title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("item")
    table.add_column("score", justify="right")
    for rank, m in enumerate(matches, 1):
        table.add_row(str(rank), m.item_id, f"{m.score:.3f}")
    out.print(table)
    if len(matches) < k:
        out.print(f"Only {len(matches)} item(s) pass the filter.")


def _print_manifest(m) -> None:  # type: ignore[no-untyped-def]
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
    roles = {k: v for k, v in m.roles.model_dump().items() if v}
    if roles:
        out.print("Roles: " + ", ".join(f"{k} = {v}" for k, v in roles.items()))
    if m.rules:
        tables = ", ".join(f"{name} {info.rows:,} rows" for name, info in m.rules.items())
        regions = f"; {len(m.regions)} regions" if m.regions else ""
        out.print(f"Business rules: {tables}{regions}")


def _register_plugins() -> None:
    from shortlist.cli_features import features
    from shortlist.cli_pipeline import build, predict, recommend, train_ranking

    cli.add_command(features)
    cli.add_command(build)
    cli.add_command(recommend)
    cli.add_command(predict)
    train.add_command(train_ranking)


_register_plugins()


def main() -> None:
    """Entry point: user errors print one clear line, never a traceback."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        err.print("Aborted.")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ShortlistError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("Interrupted.")
        sys.exit(130)


if __name__ == "__main__":
    main()
