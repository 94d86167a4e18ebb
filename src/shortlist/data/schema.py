"""The offline store's manifest: what ingest wrote (tables, row counts, time range, schema)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from shortlist.config import AttributeKind, SchemaSettings
from shortlist.errors import WorkspaceError

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1


class TableInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: int
    source: str | None = None  # the file it was read from
    # attribute name -> kind (items and users); empty for interactions
    attributes: dict[str, AttributeKind] = Field(default_factory=dict)
    ignored_columns: list[str] = Field(default_factory=list)


class Manifest(BaseModel):
    """Written last by ingest, so a manifest on disk means a complete offline store."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    adapter: str
    source: str
    created_at: datetime
    items: TableInfo
    users: TableInfo
    interactions: TableInfo
    start: datetime
    end: datetime
    source_rows: int  # interaction rows read from the source, before merging duplicates
    merged_duplicates: int  # identical source rows folded into one row with quantity > 1
    rejected: dict[str, int] = Field(default_factory=dict)  # reason -> count of rejected rows
    roles: SchemaSettings = Field(default_factory=SchemaSettings)
    # file name -> [size in bytes, modification time in ns]: tells whether the source changed
    source_files: dict[str, list[int]] = Field(default_factory=dict)
    # Optional business-rule tables (`inventory`, `item_regions`, `user_regions`,
    # `item_restrictions`): name -> rows stored and source file, only for those the source
    # had. Stores written before they existed have none; readers treat absent as "no data".
    rules: dict[str, TableInfo] = Field(default_factory=dict)
    regions: list[str] = Field(default_factory=list)  # region code -> name, sorted by name
    # What was learnt from the workspace's event log (shortlist.data.logged): the sequence
    # number of the last event read (None: a store ingested before ingest read the log), and
    # its purchases loaded into the interactions (events, units, users the source lacked).
    events_through: int | None = None
    event_purchases: int = 0
    event_units: int = 0
    event_users: int = 0
    # the log's other events up to events_through, by type (views, clicks, impressions,
    # stock): not interactions, left in the log
    event_others: dict[str, int] = Field(default_factory=dict)

    def fingerprint(self) -> str:
        """A hash of what the store holds (sources, counts, time range, rules, the events learnt
        from the log), not of when it was written: re-ingesting unchanged files and an
        unchanged log keeps it, new data changes it. (A store from before the log was read
        keeps the hash it had.)"""
        exclude = {"created_at"}
        if self.events_through is None:
            exclude |= {f for f in type(self).model_fields if f.startswith("event")}
        content = self.model_dump_json(exclude=exclude)
        return hashlib.sha256(content.encode()).hexdigest()[:16]

    def write(self, folder: Path) -> None:
        (folder / MANIFEST_FILE).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST_FILE
        if not path.is_file():
            raise WorkspaceError(
                f"the workspace {folder.parent} holds no data yet: run `shortlist build --source "
                "DIR` (or `shortlist ingest --source DIR` for the offline store alone)"
            )
        return cls.model_validate(json.loads(path.read_text()))
