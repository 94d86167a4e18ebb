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

    def fingerprint(self) -> str:
        """A hash of what the store holds (sources, counts, time range, rules), not of when it
        was written: re-ingesting unchanged files keeps it, new data changes it."""
        content = self.model_dump_json(exclude={"created_at"})
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
