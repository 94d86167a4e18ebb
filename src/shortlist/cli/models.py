"""Commands that train or index a model: train pipeline, train retrieval, index, similar."""

from __future__ import annotations

import json

import click
from rich.table import Table

from shortlist import progress
from shortlist.cli.common import out, parse_json, workspace, workspace_option


@click.group()
def train() -> None:
    """Train the funnel's models."""


@train.command("retrieval")
@workspace_option
@click.pass_context
def train_retrieval(ctx: click.Context) -> None:
    """Train the two-tower alone on all the data ([retrieval] settings), for experiments and
    `similar`. `build` and `train pipeline` train the pipeline's own; retraining here makes
    the saved pipeline refuse to load until `train pipeline` runs again."""
    from shortlist.retrieval.build import train_retrieval as run

    s = run(workspace(ctx))
    out.print(epochs_table(s.epochs))
    out.print(
        f"Trained on {s.examples:,} purchases in {s.seconds:.1f} s; saved to [bold]{s.folder}[/]"
    )


def epochs_table(epochs: list[dict]) -> Table:
    """Loss and validation recall per epoch ("-" where a short history held nothing out)."""
    table = Table(title="Two-tower training", title_justify="left")
    for col in ("epoch", "loss", "val recall@100"):
        table.add_column(col, justify="right")
    for e in epochs:
        recall = e["val_recall@100"]
        shown = "-" if recall is None else f"{recall:.4f}"
        table.add_row(str(e["epoch"]), f"{e['loss']:.3f}", shown)
    return table


@click.command("index")
@workspace_option
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
        s = build_item_index(workspace(ctx), exact_below=exact_below)
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


@click.command()
@workspace_option
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
    from shortlist.retrieval.similar import ItemSearch

    filters = parse_json(filter_json, "--filter")
    matches = ItemSearch(workspace(ctx)).similar(item_id, k, filters)
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


@train.command("pipeline")
@workspace_option
@click.pass_context
def train_pipeline(ctx: click.Context) -> None:
    """Fit the [pipeline] of shortlist.toml on all the ingested data and save it: its
    two-tower (trained before the ranker's oldest period), the item index, the ranker."""
    from shortlist.pipeline.build import train_pipeline as run

    print_training(run(workspace(ctx)))


def print_training(s) -> None:  # type: ignore[no-untyped-def]
    """What `train pipeline` (and `build`) trained: the two-tower, the ranker's choice and its
    most important features."""
    from shortlist.pipeline.build import describe

    out.print(f"Pipeline fitted on the data before {s.cutoff}: {describe(s)}")
    r = s.ranker
    if r is not None:
        held_out = all("held_out_map@12" in v for v in r["candidates"].values())
        figure = "held_out_map@12" if held_out else "valid_map@12"
        choices = ", ".join(
            f"{name} {v[figure]:.4f} ({v['rounds']} rounds)" for name, v in r["candidates"].items()
        )
        out.print(
            f"Ranking set: {r['train_groups']:,} requests with a purchase among their "
            f"candidates, {r['train_rows']:,} rows, {r['positives']:,} purchases"
        )
        where = (
            "over the latest period's buyers, all their candidates"
            if held_out
            else "on the latest period"
        )
        out.print(f"Validation MAP@12 {where}: {choices}; chose [bold]{r['objective']}[/]")
        table = Table(title="Feature importance (share of split gain)", title_justify="left")
        table.add_column("feature")
        table.add_column("gain", justify="right")
        for name, gain in s.importance[:15]:
            table.add_row(name, f"{gain:.3f}")
        out.print(table)
    steps = "; ".join(f"{name} {seconds:.1f} s" for name, seconds in s.steps.items())
    out.print(f"Trained in {s.seconds:.1f} s ({steps}); saved as [bold]{s.manifest}[/]")
