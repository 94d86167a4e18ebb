"""Running the app under uvicorn: one process, or N worker processes sharing the port.

Each worker builds the app from $SHORTLIST_WORKSPACE (`app_from_env`) and loads the workspace
once, at its startup. With several workers the Prometheus metrics are kept in files of a
temporary folder (`PROMETHEUS_MULTIPROC_DIR`, unless already set) that /metrics adds up, so
any worker answers for all of them.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path

from shortlist.service.app import WORKSPACE_ENV

APP = "shortlist.service.app:app_from_env"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def serve(
    workspace: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Serve the workspace until interrupted (uvicorn handles SIGINT and SIGTERM gracefully)."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    # the service's own lines (workspace loaded, unhandled errors) as uvicorn's, same format
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["shortlist"] = {
        "handlers": ["default"],
        "level": log_level.upper(),
        "propagate": False,
    }
    os.environ[WORKSPACE_ENV] = str(Path(workspace).resolve())
    metrics_dir = None
    if workers > 1 and not os.environ.get(MULTIPROC_ENV):
        metrics_dir = tempfile.mkdtemp(prefix="shortlist-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        uvicorn.run(
            APP,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            access_log=access_log,
            log_config=log_config,
            timeout_graceful_shutdown=10,
        )
    finally:
        if metrics_dir is not None:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(metrics_dir, ignore_errors=True)
