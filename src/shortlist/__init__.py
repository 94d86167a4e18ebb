"""shortlist: personalized recommendations and search as a retrieval-and-ranking funnel."""

from shortlist.errors import ConfigError, DataError, NotFoundError, ShortlistError, WorkspaceError

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "NotFoundError",
    "ShortlistError",
    "WorkspaceError",
    "__version__",
]
