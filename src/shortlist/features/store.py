"""The offline feature store: versioned Parquet per group under <workspace>/features, a manifest."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import ibis.expr.types as ir
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from ibis.backends import BaseBackend
from pydantic import BaseModel, ConfigDict, Field

from shortlist.errors import WorkspaceError
from shortlist.features.base import GroupFrame
from shortlist.features.engine import engine_name
from shortlist.workspace import Workspace

FEATURES_DIR = "features"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
_VERSION_DIR = re.compile(r"^v(\d+)$")


class FeatureVersion(BaseModel):
    """One materialization of one group: a snapshot of it as of `cutoff`."""

    model_config = ConfigDict(extra="forbid")

    version: int
    cutoff: datetime  # naive UTC; also every row's feature_time
    engine: str
    rows: int
    created_at: datetime
    seconds: float  # time to compute and write
    path: str  # relative to the features folder, e.g. "items/v3"
    keys: list[str]
    description: str = ""
    features: dict[str, str]  # column -> one-line definition


class FeatureManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    groups: dict[str, list[FeatureVersion]] = Field(default_factory=dict)


class FeatureStore:
    """Write and read feature snapshots; the manifest is the index, rewritten after each write.

    Writes go to a temporary folder renamed into place, and the manifest changes only after that,
    so a crash leaves at worst an unlisted folder. Not safe for concurrent writers.
    """

    def __init__(self, workspace: Workspace):
        self.root = workspace.root / FEATURES_DIR

    # -- manifest ------------------------------------------------------------------------------

    def manifest(self) -> FeatureManifest:
        path = self.root / MANIFEST_FILE
        if not path.is_file():
            return FeatureManifest()
        return FeatureManifest.model_validate(json.loads(path.read_text()))

    def _save(self, manifest: FeatureManifest) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{MANIFEST_FILE}.{uuid.uuid4().hex}"
        tmp.write_text(manifest.model_dump_json(indent=2) + "\n")
        os.replace(tmp, self.root / MANIFEST_FILE)

    def versions(self, group: str) -> list[FeatureVersion]:
        return sorted(self.manifest().groups.get(group, []), key=lambda v: v.version)

    def get(self, group: str, version: int | None = None) -> FeatureVersion:
        """A version's entry; the latest when `version` is None."""
        listed = self.versions(group)
        if not listed:
            raise WorkspaceError(
                f"no features for group {group!r} in {self.root}: run `shortlist features` first"
            )
        if version is None:
            return listed[-1]
        for v in listed:
            if v.version == version:
                return v
        known = ", ".join(str(v.version) for v in listed)
        raise WorkspaceError(f"group {group!r} has no version {version} (versions: {known})")

    def path(self, entry: FeatureVersion) -> Path:
        return self.root / entry.path

    # -- write ---------------------------------------------------------------------------------

    def _next_version(self, group: str) -> int:
        # Folders count too: one left by a crash between rename and manifest is never reused.
        listed = [v.version for v in self.versions(group)]
        folder = self.root / group
        found = [
            int(m.group(1))
            for p in (folder.iterdir() if folder.is_dir() else [])
            if (m := _VERSION_DIR.match(p.name))
        ]
        return max([0, *listed, *found]) + 1

    def write(self, frame: GroupFrame, cutoff: datetime, con: BaseBackend) -> FeatureVersion:
        """Run the group's expression on `con` straight into Parquet and list it as a version.

        DuckDB writes one file; Spark writes a folder of part files from its executors. The
        data never passes through Python either way.
        """
        started = time.perf_counter()
        version = self._next_version(frame.name)
        final = self.root / frame.name / f"v{version}"
        tmp = self.root / frame.name / f".v{version}.{uuid.uuid4().hex}"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        engine = engine_name(con)
        try:
            if engine == "pyspark":
                con.to_parquet_dir(frame.table, str(tmp))  # type: ignore[attr-defined]
            else:
                tmp.mkdir()
                con.to_parquet(frame.table, str(tmp / "part-0.parquet"))
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        entry = FeatureVersion(
            version=version,
            cutoff=cutoff,
            engine=engine,
            rows=_row_count(final),
            created_at=datetime.now(UTC),
            seconds=round(time.perf_counter() - started, 3),
            path=f"{frame.name}/v{version}",
            keys=list(frame.keys),
            description=frame.description,
            features=frame.features,
        )
        manifest = self.manifest()
        manifest.groups.setdefault(frame.name, []).append(entry)
        self._save(manifest)
        return entry

    # -- read ----------------------------------------------------------------------------------

    def read(self, group: str, version: int | None = None) -> pa.Table:
        """One version (the latest by default) as an Arrow table; row order is not meaningful."""
        return _read_dir(self.path(self.get(group, version)))

    def read_empty(self, group: str, version: int | None = None) -> pa.Table:
        """A version's columns with no rows (only the files' footers are read)."""
        files = _parquet_files(self.path(self.get(group, version)))
        if not files:
            raise WorkspaceError(f"feature group {group!r} version {version} has no files")
        return _naive_utc(pq.read_schema(files[0]).empty_table())

    def snapshot_versions(
        self, group: str, versions: Sequence[int] | None = None
    ) -> list[FeatureVersion]:
        """The versions making up a group's time series: the given ones, or one per cutoff.

        Where a cutoff was materialized more than once, its latest version stands for it.
        """
        if versions is not None:
            return [self.get(group, v) for v in versions]
        by_cutoff: dict[datetime, FeatureVersion] = {}
        for v in self.versions(group):
            by_cutoff[v.cutoff] = v  # ascending versions: the latest one wins
        if not by_cutoff:
            self.get(group)  # raises the "run shortlist features first" error
        return sorted(by_cutoff.values(), key=lambda v: v.cutoff)

    def read_snapshots(self, group: str, versions: Sequence[int] | None = None) -> pa.Table:
        """The group's snapshots stacked into one Arrow table (feature_time tells them apart)."""
        tables = [_read_dir(self.path(v)) for v in self.snapshot_versions(group, versions)]
        return _stack(tables)

    def table(
        self, con: BaseBackend, group: str, versions: Sequence[int] | None = None
    ) -> ir.Table:
        """The group's snapshots as a lazy table on `con`, for point-in-time joins.

        `versions` None: one version per cutoff (see snapshot_versions); [n]: just version n.
        """
        dirs = [self.path(v) for v in self.snapshot_versions(group, versions)]
        if engine_name(con) == "pyspark":
            # One Spark read over several folders: a Hadoop glob {v1,v2}; mergeSchema in case
            # a later snapshot gained columns (a new channel value).
            names = ",".join(d.name for d in dirs)
            path = str(dirs[0]) if len(dirs) == 1 else f"{dirs[0].parent}/{{{names}}}"
            return con.read_parquet(path, mergeSchema="true")
        return con.read_parquet([str(d / "*.parquet") for d in dirs], union_by_name=True)


def _parquet_files(folder: Path) -> list[Path]:
    # Spark's _SUCCESS and .crc files are not data.
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_")))


def _row_count(folder: Path) -> int:
    return sum(pq.read_metadata(p).num_rows for p in _parquet_files(folder))


def _naive_utc(table: pa.Table) -> pa.Table:
    """Zone-aware timestamp columns as naive UTC, the convention of the whole store."""
    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type) and f.type.tz is not None:
            naive = (
                table.column(i)
                .cast(pa.timestamp(f.type.unit, tz="UTC"))
                .cast(pa.timestamp(f.type.unit))
            )
            table = table.set_column(i, f.name, naive)
    return table


def _read_dir(folder: Path) -> pa.Table:
    files = _parquet_files(folder)
    if not files:
        raise WorkspaceError(f"feature folder {folder} has no Parquet files")
    return _naive_utc(ds.dataset([str(p) for p in files], format="parquet").to_table())


def _stack(tables: list[pa.Table]) -> pa.Table:
    """Concatenate snapshots whose columns may differ a little (added columns become nulls)."""
    fields: dict[str, pa.Field] = {}
    for t in tables:
        for f in t.schema:
            fields.setdefault(f.name, f)
    schema = pa.schema(list(fields.values()))
    aligned = []
    for t in tables:
        cols = [
            t.column(f.name).cast(f.type)
            if f.name in t.column_names
            else pa.nulls(t.num_rows, f.type)
            for f in schema
        ]
        aligned.append(pa.Table.from_arrays(cols, schema=schema))
    return pa.concat_tables(aligned)
