"""The `shortlist` command line: thin commands over the Python API, one module per area."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from shortlist import progress
from shortlist.cli import data, evaluate, features, models, online, pipeline, search, serve
from shortlist.cli.common import err
from shortlist.errors import ShortlistError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--workspace",
    "-w",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SHORTLIST_WORKSPACE",
    default="workspace",
    show_default=True,
    help="Folder holding everything a build produces (env: SHORTLIST_WORKSPACE); also "
    "accepted after the command.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.version_option(package_name="shortlist")
@click.pass_context
def cli(ctx: click.Context, workspace: Path, quiet: bool) -> None:
    """shortlist: recommendations and search as a retrieval-and-ranking funnel."""
    ctx.obj = workspace
    ctx.with_resource(progress.enabled(not quiet))


for command in (
    data.init,
    data.generate,
    data.ingest,
    data.info,
    features.features,
    online.materialize_cmd,
    evaluate.evaluate,
    models.train,
    models.index_cmd,
    models.similar,
    pipeline.build,
    pipeline.recommend,
    pipeline.predict,
    search.search,
    serve.serve,
):
    cli.add_command(command)


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
