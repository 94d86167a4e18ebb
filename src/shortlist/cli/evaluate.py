"""`shortlist evaluate`: the methods against each other, with the H&M last-week protocol."""

from __future__ import annotations

import json
from pathlib import Path

import click

from shortlist.cli.common import err, out, workspace, workspace_option


@click.command()
@workspace_option
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
@click.option(
    "--compare-to",
    metavar="METHOD",
    help="Compare every method with METHOD (ratio of MAP@k, 95% bootstrap interval over "
    "users, windows won). [default: the run's best baseline]",
)
@click.option(
    "--user-part",
    metavar="I/N",
    callback=lambda ctx, param, value: _part(value),
    help="Only the users in part I of N (a stable hash of the user id) and their "
    "interactions: check a result on customers disjoint from another part's.",
)
@click.option(
    "--search",
    "search",
    is_flag=True,
    help="Evaluate search instead of recommendations: relevance of generated attribute and "
    "phrase queries (lexical, semantic, fused) and personalization on the windows' purchases "
    "(docs/search.md).",
)
@click.option(
    "--queries",
    type=click.IntRange(min=0),
    default=200,
    show_default=True,
    help="With --search: judged queries of each kind.",
)
@click.option(
    "--purchases",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="With --search: at most this many purchases per window searched by their buyer.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Processes evaluating windows side by side, each window whole in one, the threads "
    "shared among them (same figures). 0: one per core up to one per window, on data up to "
    "5 M interactions; else 1.",
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
    compare_to: str | None,
    user_part: tuple[int, int] | None,
    search: bool,
    queries: int,
    purchases: int,
    jobs: int,
    json_out: str | None,
) -> None:
    """Score methods with the H&M last-week protocol (MAP@k, recall, NDCG, coverage); with
    --search, score search (NDCG@24, recall@100, MRR with and without personalization)."""
    if search:
        _evaluate_search(ctx, source, fmt, windows, holdout_days, queries, purchases, json_out)
        return
    from shortlist.eval.evaluate import evaluate_workspace
    from shortlist.eval.report import (
        candidates_table,
        filters_note,
        history_note,
        report_table,
        uncertainty_notes,
    )

    report = evaluate_workspace(
        workspace(ctx),
        [m.strip() for m in methods.split(",")] if methods else None,
        source=source,
        format=fmt,
        n_windows=windows,
        holdout_days=holdout_days,
        k=k,
        candidates=candidates,
        compare_to=compare_to,
        user_part=user_part,
        jobs=jobs,
    )
    text = json.dumps(report, indent=2)
    console = err if json_out == "-" else out
    console.print(report_table(report))
    for line in uncertainty_notes(report) + history_note(report) + filters_note(report):
        console.print(line, highlight=False)
    if "candidates" in report:
        console.print(candidates_table(report))
    if json_out == "-":
        click.echo(text)
    elif json_out:
        Path(json_out).write_text(text + "\n")
        out.print(f"Report written to [bold]{json_out}[/]")


def _evaluate_search(
    ctx: click.Context,
    source: Path | None,
    fmt: str | None,
    windows: int,
    holdout_days: int,
    queries: int,
    purchases: int,
    json_out: str | None,
) -> None:
    from shortlist.eval.search import evaluate_search, search_tables

    report = evaluate_search(
        workspace(ctx),
        source=str(source) if source is not None else None,
        format=fmt,
        n_windows=windows,
        holdout_days=holdout_days,
        queries=queries,
        purchases=purchases,
    )
    console = err if json_out == "-" else out
    for table in search_tables(report):
        console.print(table)
    text = json.dumps(report, indent=2)
    if json_out == "-":
        click.echo(text)
    elif json_out:
        Path(json_out).write_text(text + "\n")
        out.print(f"Report written to [bold]{json_out}[/]")


def _part(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        part, parts = (int(x) for x in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"'{value}' is not I/N, e.g. 1/2") from None
    if not 1 <= part <= parts:
        raise click.BadParameter(f"'{value}': I must be from 1 to N")
    return part, parts
