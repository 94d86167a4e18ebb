"""shortlist: personalized recommendations and search as a retrieval-and-ranking funnel.

The public API; everything else is reachable through these names.
"""

from shortlist.data.generator import generate
from shortlist.data.ingest import ingest
from shortlist.data.offline import OfflineStore
from shortlist.errors import ConfigError, DataError, NotFoundError, ShortlistError, WorkspaceError
from shortlist.eval.evaluate import evaluate_workspace as evaluate
from shortlist.workspace import Workspace, open_workspace

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "NotFoundError",
    "OfflineStore",
    "ShortlistError",
    "Workspace",
    "WorkspaceError",
    "__version__",
    "evaluate",
    "generate",
    "ingest",
    "open_workspace",
]
