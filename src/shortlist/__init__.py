"""shortlist: personalized recommendations and search as a retrieval-and-ranking funnel.

The public API; everything else is reachable through these names. Names are imported on
first use (PEP 562), so `import shortlist` and the CLI start without loading torch or FAISS.
"""

from __future__ import annotations

import os
from importlib import import_module
from typing import TYPE_CHECKING, Any

from shortlist.errors import (
    ConfigError,
    DataError,
    FilterError,
    NotFoundError,
    RequestError,
    ShortlistError,
    WorkspaceError,
)
from shortlist.workspace import Workspace, open_workspace

# Before any engine (torch, FAISS, LightGBM) loads: OpenMP threads wait asleep, not spinning,
# so a busy neighbour does not slow them tenfold (see resources.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

_LAZY = {
    "generate": ("shortlist.data.generator", "generate"),
    "ingest": ("shortlist.data.ingest", "ingest"),
    "OfflineStore": ("shortlist.data.offline", "OfflineStore"),
    "evaluate": ("shortlist.eval.evaluate", "evaluate_workspace"),
    "materialize": ("shortlist.features.materialize", "materialize"),
    "train_retrieval": ("shortlist.retrieval.build", "train_retrieval"),
    "build_item_index": ("shortlist.retrieval.build", "build_item_index"),
    "ItemSearch": ("shortlist.retrieval.similar", "ItemSearch"),
    "train_pipeline": ("shortlist.pipeline.build", "train_pipeline"),
    "build": ("shortlist.pipeline.build", "build"),
    "Pipeline": ("shortlist.pipeline", "Pipeline"),
}

if TYPE_CHECKING:
    from shortlist.data.generator import generate
    from shortlist.data.ingest import ingest
    from shortlist.data.offline import OfflineStore
    from shortlist.eval.evaluate import evaluate_workspace as evaluate
    from shortlist.features.materialize import materialize
    from shortlist.pipeline import Pipeline
    from shortlist.pipeline.build import build, train_pipeline
    from shortlist.retrieval.build import build_item_index, train_retrieval
    from shortlist.retrieval.similar import ItemSearch


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'shortlist' has no attribute '{name}'")
    module, attr = _LAZY[name]
    value = getattr(import_module(module), attr)
    globals()[name] = value
    return value


__all__ = [
    "ConfigError",
    "DataError",
    "FilterError",
    "ItemSearch",
    "NotFoundError",
    "OfflineStore",
    "Pipeline",
    "RequestError",
    "ShortlistError",
    "Workspace",
    "WorkspaceError",
    "__version__",
    "build",
    "build_item_index",
    "evaluate",
    "generate",
    "ingest",
    "materialize",
    "open_workspace",
    "train_pipeline",
    "train_retrieval",
]
