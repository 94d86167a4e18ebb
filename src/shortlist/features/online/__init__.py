"""The online feature store: the latest feature values per entity, read in one batch per request.

`open_online_store(url, workspace)` gives an `OnlineStore` ("lmdb" or "redis://HOST:PORT/DB");
`materialize.materialize_online` writes the offline feature store's latest groups into it.
See docs/online.md.
"""

from shortlist.features.online.base import (
    GroupLayout,
    OnlineStore,
    OnlineVersion,
    OnlineWriter,
    Ragged,
    RecordsBatch,
    RowBatch,
    VersionChanged,
    open_online_store,
)

__all__ = [
    "GroupLayout",
    "OnlineStore",
    "OnlineVersion",
    "OnlineWriter",
    "Ragged",
    "RecordsBatch",
    "RowBatch",
    "VersionChanged",
    "open_online_store",
]
