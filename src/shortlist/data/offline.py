"""Read access to the offline store that ingest wrote (DuckDB relations over its Parquet)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb

from shortlist import columns as C
from shortlist.data.layout import RULE_TABLES
from shortlist.data.reader import sql_literal
from shortlist.data.schema import Manifest
from shortlist.workspace import Workspace


class OfflineStore:
    """The items, users and interactions tables of a workspace, with their manifest, and the
    optional business-rule tables the source had (`inventory`, `item_regions`,
    `user_regions`, `item_restrictions`; `manifest.rules` names them).

    Relations are lazy: nothing is read until a query runs, and reads of interactions in a
    time range only open the monthly partitions they need.
    """

    def __init__(
        self,
        workspace: Workspace,
        con: duckdb.DuckDBPyConnection | None = None,
        *,
        interactions: bool = True,
    ):
        """interactions=False: no `interactions` view (its files are not even listed): for a
        saved pipeline, which serves from the tables alone."""
        self.folder = workspace.offline
        self.manifest = Manifest.read(self.folder)
        self.con = con or duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'").fetchall()
        self.con.execute("SET enable_progress_bar = false").fetchall()
        # Views named like the tables, so callers can write plain SQL against the store.
        glob = sql_literal(str(self.folder / "interactions" / "**" / "*.parquet"))
        for name, source in (
            ("items", f"read_parquet({sql_literal(str(self._path('items.parquet')))})"),
            ("users", f"read_parquet({sql_literal(str(self._path('users.parquet')))})"),
            ("interactions", f"read_parquet({glob}, hive_partitioning=true)"),
        ):
            if name == "interactions" and not interactions:
                continue
            self.con.execute(
                f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM {source}"
            ).fetchall()
        for name in (n for n in RULE_TABLES if n in self.manifest.rules):
            path = sql_literal(str(self._path(f"{name}.parquet")))
            self.con.execute(
                f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM read_parquet({path})"
            ).fetchall()

    def sql(self, query: str) -> duckdb.DuckDBPyRelation:
        """Run SQL over the views `items`, `users`, `interactions` and the rule tables."""
        return self.con.sql(query)

    def rule_table(self, name: str) -> duckdb.DuckDBPyRelation | None:
        """A business-rule table (`inventory`, ...), or None when the source had none."""
        if name not in RULE_TABLES or name not in self.manifest.rules:
            return None
        return self.con.sql(f"SELECT * FROM {name}")

    def _path(self, name: str) -> Path:
        return self.folder / name

    def items(self) -> duckdb.DuckDBPyRelation:
        return self.con.sql("SELECT * FROM items")

    def users(self) -> duckdb.DuckDBPyRelation:
        return self.con.sql("SELECT * FROM users")

    def interactions(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> duckdb.DuckDBPyRelation:
        """Interactions with `start <= timestamp < end` (either bound optional)."""
        where = []
        if start is not None:
            where += [
                f"{C.TIMESTAMP} >= {sql_literal(start.isoformat())}::TIMESTAMP",
                f"{C.MONTH} >= {sql_literal(start.strftime('%Y-%m'))}",
            ]
        if end is not None:
            where += [
                f"{C.TIMESTAMP} < {sql_literal(end.isoformat())}::TIMESTAMP",
                f"{C.MONTH} <= {sql_literal(end.strftime('%Y-%m'))}",
            ]
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        return self.con.sql(f"SELECT * EXCLUDE ({C.MONTH}) FROM interactions{clause}")

    def rejected(self) -> duckdb.DuckDBPyRelation | None:
        path = self._path("rejected.parquet")
        if not path.is_file():
            return None
        return self.con.sql(f"SELECT * FROM read_parquet({sql_literal(str(path))})")
