"""Commands over the whole funnel: build, recommend, predict."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from shortlist.cli.common import out, parse_json, workspace, workspace_option


@click.command()
@workspace_option
@click.option("--source", required=True, type=click.Path(path_type=Path), help="Source folder.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["hm", "generic"]),
    help="Layout of --source. [default: from shortlist.toml, else generic]",
)
@click.option("--on-bad-rows", type=click.Choice(["fail", "skip"]), help="As for `ingest`.")
@click.pass_context
def build(ctx: click.Context, source: Path, fmt: str | None, on_bad_rows: str | None) -> None:
    """Everything from source files to a ready workspace: ingest, feature groups, then the
    pipeline trained at the end of the data (as `evaluate` trains it per window) and saved."""
    from shortlist.cli.models import print_training
    from shortlist.pipeline.build import build as run

    ws = workspace(ctx)
    s = run(
        ws, source, format=fmt, on_bad_rows=on_bad_rows, report=out.print, search_alongside=None
    )
    print_training(s.trained)
    out.print(
        f"Workspace [bold]{ws.root}[/] ready in {s.seconds:.1f} s: "
        "try `shortlist recommend --user ID --explain`"
    )


@click.command()
@workspace_option
@click.option("--user", "user_id", required=True, help="External id of the user.")
@click.option("--k", type=click.IntRange(1, 1000), help="How many items. [default: pipeline k]")
@click.option("--filter", "filter_json", help="Attribute filter as JSON (see `similar`).")
@click.option("--cart", help="Comma-separated item ids in the cart (not recommended again).")
@click.option("--explain", is_flag=True, help="Say why each item is there.")
@click.option("--trace", is_flag=True, help="Show items in/out and time per stage.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (items, reasons, trace).")
@click.pass_context
def recommend(
    ctx: click.Context,
    user_id: str,
    k: int | None,
    filter_json: str | None,
    cart: str | None,
    explain: bool,
    trace: bool,
    as_json: bool,
) -> None:
    """Recommendations for one user from the workspace's pipeline."""
    from shortlist.pipeline import Pipeline

    pipeline = Pipeline.from_config(workspace(ctx))
    if k is not None:
        pipeline = pipeline.take(k)
    context: dict = {}
    if filter_json:
        context["filters"] = parse_json(filter_json, "--filter")
    if cart:
        context["cart"] = [c.strip() for c in cart.split(",") if c.strip()]
    result = pipeline.recommend(user_id, context, explain=explain)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    table = Table(title=f"Recommendations for {user_id}", title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("item")
    table.add_column("what")
    table.add_column("score", justify="right")
    table.add_column("why" if explain else "sources")
    for rank, item in enumerate(result.items, 1):
        why = (
            "\n".join(item.reasons or [])
            if explain
            else ", ".join(f"{n} #{r}" for n, r in item.sources.items()) or "top-up"
        )
        score = f"{item.score:.3f}" if item.score is not None else "-"
        table.add_row(str(rank), item.item_id, describe(item.attributes), score, why)
    out.print(table)
    if trace:
        out.print(trace_table(result.trace))


def describe(attributes: dict) -> str:
    """An item's display attributes on one line, its price last."""
    named = [str(v) for k, v in attributes.items() if k != "price" and v is not None]
    price = attributes.get("price")
    return " · ".join(named + ([f"price {price:.4g}"] if price is not None else []))


def trace_table(trace: list[dict]) -> Table:
    """The funnel's trace: candidates into and out of each stage, and its time."""
    table = Table(title="Trace", title_justify="left")
    for column in ("stage", "in", "out", "ms", "detail"):
        table.add_column(column, justify="left" if column in ("stage", "detail") else "right")
    previous = None
    for stage in trace:
        name = stage["stage"]
        detail = ""
        if name == "retrieve":
            detail = ", ".join(
                f"{n} {c} ({stage['source_ms'][n]:.2f} ms)" for n, c in stage["sources"].items()
            )
        elif name == "filter":
            parts = [f"{n} -{c}" for n, c in stage["removed"].items()]
            parts += [f"{n} skipped: {why}" for n, why in stage["skipped"].items()]
            detail = ", ".join(parts)
        elif name == "rank":
            detail = stage["scorer"]
            if stage.get("ranker", "").startswith("bypassed"):
                detail += f" ({stage['ranker']})"
            elif stage["score_ms"]:
                detail += f", trees {stage['score_ms']:.2f} ms"
        elif name == "diversify":
            detail = stage["method"]
        elif name == "take":
            detail = f"top {stage['k']}, {stage['topped_up']} topped up"
        inn = stage.get("in", previous)
        out_ = stage.get("out")
        table.add_row(
            name,
            "" if inn is None else f"{inn:,}",
            "" if out_ is None else f"{out_:,}",
            f"{stage['ms']:.2f}",
            detail,
        )
        previous = out_ if out_ is not None else previous
    return table


@click.command()
@workspace_option
@click.option("--out", "path", required=True, type=click.Path(path_type=Path), help="CSV to write.")
@click.option("--jobs", type=click.IntRange(1, 256), default=2, show_default=True)
@click.option("--k", type=click.IntRange(1, 1000), help="Items per user. [default: pipeline k]")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N users (a dry run).")
@click.pass_context
def predict(ctx: click.Context, path: Path, jobs: int, k: int | None, limit: int | None) -> None:
    """Recommendations for every user, as a submission file (user id, space-separated items)."""
    import numpy as np

    from shortlist.data.offline import OfflineStore
    from shortlist.pipeline import Pipeline
    from shortlist.pipeline.predict import predict as run

    ws = workspace(ctx)
    column = submission_user_column(OfflineStore(ws).manifest.adapter)
    users = np.arange(min(limit, OfflineStore(ws).manifest.users.rows)) if limit else None
    s = run(Pipeline.from_config(ws), path, user_column=column, jobs=jobs, users=users, k=k)
    out.print(
        f"Wrote {s.users:,} users to [bold]{s.path}[/] in {s.seconds:.1f} s "
        f"(loading {s.load_seconds:.1f} s)"
    )


def submission_user_column(adapter: str) -> str:
    """customer_id for H&M data (the competition's submission layout), else user_id."""
    from shortlist.data import hm

    return hm.SUBMISSION_USER_COLUMN if adapter == "hm" else "user_id"
