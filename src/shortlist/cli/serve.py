"""`shortlist serve`: the HTTP service over the workspace (docs/service.md)."""

from __future__ import annotations

import os

import click

from shortlist.cli.common import out, workspace, workspace_option

ONLINE_URL_ENV = "SHORTLIST_ONLINE_URL"  # the settings' environment override of [online] url


@click.command()
@workspace_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port."
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes sharing the port, forked from one load of the workspace.",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="One log line per request.")  # fmt: skip
@click.option(
    "--online",
    default=None,
    metavar="lmdb|redis://HOST:PORT/DB",
    help="The online store to read (default: [online] url of shortlist.toml); replicas on "
    "several machines share one Redis.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    workers: int,
    log_level: str,
    access_log: bool,
    online: str | None,
) -> None:
    """Serve recommendations, similar items and cart recommendations over HTTP (FastAPI on
    uvicorn; OpenAPI at /docs). Loads the workspace built by `shortlist build` at startup."""
    from shortlist.service.server import serve as run

    ws = workspace(ctx)
    if online is not None:
        # checked here (a clear error, not a worker dying), then seen by every worker
        ws.settings({"online": {"url": online}})
        os.environ[ONLINE_URL_ENV] = online
    out.print(f"Serving [bold]{ws.root}[/] on http://{host}:{port} (docs at /docs)")
    run(ws.root, host=host, port=port, workers=workers, log_level=log_level, access_log=access_log)
