"""`shortlist search`: a text query's items from the workspace's pipeline, for a user or none."""

from __future__ import annotations

import json

import click
from rich.table import Table

from shortlist import progress
from shortlist.cli.common import out, parse_json, workspace, workspace_option


@click.command()
@workspace_option
@click.option("--query", "-q", "query", help="What to search for, e.g. 'black trousers'.")
@click.option("--user", "user_id", help="External id of the shopper (their own order).")
@click.option("--filter", "filter_json", help="Attribute filter as JSON (see `similar`).")
@click.option("--k", type=click.IntRange(1, 1000), default=24, show_default=True)
@click.option("--region", help="The shopper's region (overrides what the workspace knows).")
@click.option("--age", type=click.FloatRange(0, 150), help="The shopper's age in years.")
@click.option("--trace", is_flag=True, help="Show items in/out and time per stage.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@click.option(
    "--build-index",
    is_flag=True,
    help="Rebuild the workspace's search index from its offline store first (`build` does it, "
    "keeping an index whose items have not changed), e.g. after changing [search] settings.",
)
@click.pass_context
def search(
    ctx: click.Context,
    query: str | None,
    user_id: str | None,
    filter_json: str | None,
    k: int,
    region: str | None,
    age: float | None,
    trace: bool,
    as_json: bool,
    build_index: bool,
) -> None:
    """Items matching a text query: BM25 and sentence embeddings fused, re-ranked for the
    user when one the workspace knows is given, with refinements (facets)."""
    from shortlist.cli.pipeline import describe
    from shortlist.pipeline import Pipeline

    ws = workspace(ctx)
    if build_index:
        from shortlist.retrieval.text import build_text_index, describe_text_index

        with progress.track("Indexing the items for search") as advance:
            s = build_text_index(ws, force=True)
            advance()
        out.print(
            f"Search index built in {s.seconds['total']:.1f} s: {describe_text_index(s)}; "
            f"saved to [bold]{s.folder}[/]"
        )
    if query is None:
        if not build_index:
            raise click.UsageError("give --query (or --build-index)")
        return
    context: dict = {}
    if filter_json:
        context["filters"] = parse_json(filter_json, "--filter")
    if region is not None:
        context["region"] = region
    if age is not None:
        context["age"] = age
    result = Pipeline.from_config(ws).search(query, user_id, context, k=k)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    who = f" for {user_id}" if user_id else ""
    how = (
        "personalized"
        if result.personalized
        else "unknown user: not personalized"
        if result.cold_start
        else "not personalized"
    )
    table = Table(
        title=f"'{result.query}'{who}: {result.total:,} matches ({how})", title_justify="left"
    )
    table.add_column("rank", justify="right")
    table.add_column("item")
    table.add_column("what")
    table.add_column("score", justify="right")
    table.add_column("ranks")
    for rank, item in enumerate(result.items, 1):
        ranks = ", ".join(f"{side} #{r}" for side, r in item.sources.items())
        table.add_row(
            str(rank), item.item_id, describe(item.attributes), f"{item.score:.4f}", ranks
        )
    out.print(table)
    if result.suggestion:
        out.print(f"No item holds all of '{result.query}'. Did you mean '{result.suggestion}'?")
    for attribute, counts in result.facets.items():
        shown = ", ".join(f"{c['value']} ({c['count']:,})" for c in counts)
        out.print(f"[bold]{attribute}[/]: {shown}", highlight=False)
    if trace:
        out.print(search_trace_table(result.trace))


def search_trace_table(trace: list[dict]) -> Table:
    """A search's stages: items out of each, its time, and what it did."""
    table = Table(title="Trace", title_justify="left")
    for column in ("stage", "in", "out", "ms", "detail"):
        table.add_column(column, justify="left" if column in ("stage", "detail") else "right")
    for stage in trace:
        name = stage["stage"]
        detail = ""
        if name == "lexical":
            detail = f"terms {', '.join(stage['terms'])}; {stage['required']} needed"
        elif name == "semantic":
            detail = f"query embedded in {stage['embed_ms']:.2f} ms"
        elif name == "filter":
            parts = [f"{n} -{c}" for n, c in stage["removed"].items()]
            parts += [f"{n} skipped: {why}" for n, why in stage["skipped"].items()]
            parts.append(f"live stock -{stage.get('live_stock_removed', 0)}")
            detail = ", ".join(parts)
        elif name == "personal":
            detail = f"{stage['scorer']}; {stage['nearest']} nearest to the user added"
        elif name == "fuse":
            detail = ", ".join(f"{s} x{w:g}" for s, w in stage["weights"].items())
        elif name == "refine":
            detail = f"{stage['facets']} refinement(s)"
        elif name == "degraded":
            detail = stage["reason"]
        table.add_row(
            name,
            "" if stage.get("in") is None else f"{stage['in']:,}",
            "" if stage.get("out") is None else f"{stage['out']:,}",
            f"{stage['ms']:.2f}",
            detail,
        )
    return table
