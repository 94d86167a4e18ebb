"""Commands over the whole funnel: train ranking, build, recommend, predict."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from shortlist.workspace import Workspace, open_workspace

out = Console(soft_wrap=True)


def _ws(ctx: click.Context) -> Workspace:
    root = ctx.find_root().obj
    return open_workspace(root if isinstance(root, Path | str) else None)


def _print_ranking(s) -> None:  # type: ignore[no-untyped-def]
    r = s.report
    choices = ", ".join(
        f"{name} {v['valid_map@12']:.4f} ({v['rounds']} rounds)"
        for name, v in r["candidates"].items()
    )
    out.print(
        f"Ranking set: {r['weeks']} weeks, {r['train_groups']:,} users with a purchase among "
        f"their candidates, {r['train_rows']:,} rows, {r['positives']:,} purchases"
    )
    out.print(f"Validation MAP@12 on the latest week: {choices}; chose [bold]{r['objective']}[/]")
    table = Table(title="Feature importance (share of split gain)", title_justify="left")
    table.add_column("feature")
    table.add_column("gain", justify="right")
    for name, gain in s.importance[:15]:
        table.add_row(name, f"{gain:.3f}")
    out.print(table)
    out.print(f"Trained in {s.seconds:.1f} s; saved to [bold]{s.folder}[/]")


@click.command("ranking")
@click.pass_context
def train_ranking(ctx: click.Context) -> None:
    """Train the LightGBM ranker for the [pipeline] of shortlist.toml ([ranking] settings)."""
    from shortlist.ranking.train import train_ranking as run

    _print_ranking(run(_ws(ctx)))


@click.command()
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
    """Everything from source files to a ready workspace: ingest, features, train retrieval,
    index, train ranking."""
    from shortlist.data.ingest import ingest
    from shortlist.features.materialize import materialize
    from shortlist.ranking.train import train_ranking as run_ranking
    from shortlist.retrieval.build import build_item_index, train_retrieval

    ws = _ws(ctx)
    started = time.perf_counter()
    s = ingest(ws, source, format=fmt, on_bad_rows=on_bad_rows)
    out.print(f"1/5 ingested {s.manifest.interactions.rows:,} interactions ({s.seconds:.1f} s)")
    t = time.perf_counter()
    materialize(ws)
    out.print(f"2/5 feature groups written ({time.perf_counter() - t:.1f} s)")
    tr = train_retrieval(ws)
    out.print(f"3/5 two-tower trained on {tr.examples:,} purchases ({tr.seconds:.1f} s)")
    ix = build_item_index(ws)
    out.print(f"4/5 {ix.kind} index over {ix.items:,} items ({ix.seconds:.1f} s)")
    rk = run_ranking(ws)
    out.print(
        f"5/5 ranker trained ({rk.report['objective']}, {rk.report['train_groups']:,} users, "
        f"{rk.seconds:.1f} s)"
    )
    out.print(
        f"Workspace [bold]{ws.root}[/] ready in {time.perf_counter() - started:.1f} s: "
        "try `shortlist recommend --user ID --explain`"
    )


def _parse_json(text: str | None, what: str) -> dict | None:
    from shortlist.retrieval.filters import FilterError

    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise FilterError(f"{what}: not valid JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(value, dict):
        raise FilterError(f"{what} must be a JSON object")
    return value


@click.command()
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

    pipeline = Pipeline.from_config(_ws(ctx))
    if k is not None:
        pipeline = pipeline.take(k)
    context: dict = {}
    if filter_json:
        context["filters"] = _parse_json(filter_json, "--filter")
    if cart:
        context["cart"] = [c.strip() for c in cart.split(",") if c.strip()]
    result = pipeline.recommend(user_id, context, explain=explain)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    table = Table(title=f"Recommendations for {user_id}", title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("item")
    table.add_column("score", justify="right")
    table.add_column("why" if explain else "sources")
    for rank, item in enumerate(result.items, 1):
        why = (
            "\n".join(item.reasons or [])
            if explain
            else ", ".join(f"{n} #{r}" for n, r in item.sources.items()) or "top-up"
        )
        score = f"{item.score:.3f}" if item.score is not None else "-"
        table.add_row(str(rank), item.item_id, score, why)
    out.print(table)
    if trace:
        for stage in result.trace:
            out.print(json.dumps(stage), highlight=False)


@click.command()
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

    ws = _ws(ctx)
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
