"""What an adapter hands to ingest: where each table is and how its columns map to the model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shortlist import columns as C
from shortlist.config import AttributeKind, SchemaSettings
from shortlist.data.reader import SourceColumn
from shortlist.errors import DataError


@dataclass(frozen=True)
class TableSource:
    """One source file. Items and users keep every other column as an attribute."""

    table: str  # "items", "users" or "interactions"
    path: Path
    columns: list[SourceColumn]
    # attribute -> kind fixed by the adapter or the user; attributes not named are inferred
    kinds: dict[str, AttributeKind] = field(default_factory=dict)
    # attribute -> SQL literal replacing an empty value (H&M's empty FN means "no")
    fill_null: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceLayout:
    adapter: str
    items: TableSource
    users: TableSource | None  # None: users are the distinct ids in the interactions
    interactions: TableSource
    roles: SchemaSettings
    # optional business-rule files found in the folder, by table name (see RULE_TABLES)
    rules: dict[str, TableSource] = field(default_factory=dict)


def id_column(name: str, source: str) -> SourceColumn:
    """An id column: always a string (Parquet integer ids are turned into text)."""
    return SourceColumn(name, source, expr="NULLIF(trim({col}::VARCHAR), '')")


def text_column(name: str, source: str) -> SourceColumn:
    """A value kept as trimmed text (empty: NULL), parsed and checked after staging."""
    return SourceColumn(name, source, expr="NULLIF(trim({col}::VARCHAR), '')")


def interaction_columns(
    user: str,
    item: str,
    timestamp: str,
    timestamp_type: str,
    timestamp_expr: str,
    price: str | None,
    quantity: str | None,
    channel: str | None,
) -> list[SourceColumn]:
    """The canonical interaction columns, read from the named source columns."""
    cols = [
        id_column(C.USER_ID, user),
        id_column(C.ITEM_ID, item),
        SourceColumn(C.TIMESTAMP, timestamp, timestamp_type, expr=timestamp_expr),
        SourceColumn(C.PRICE, price or C.PRICE, "DOUBLE", required=False),
        SourceColumn(
            C.QUANTITY,
            quantity or C.QUANTITY,
            "INTEGER",
            required=False,
            default="1",
            expr="COALESCE({col}, 1)",
        ),
        SourceColumn(C.CHANNEL, channel or C.CHANNEL, required=False, expr="{col}::VARCHAR"),
    ]
    return cols


# Optional business-rule files, the same stems in every layout: stem -> (the canonical id
# column, which says whether the rows are about items or users; the value column).
RULE_TABLES: dict[str, tuple[str, str]] = {
    "inventory": (C.ITEM_ID, C.UNITS),
    "item_regions": (C.ITEM_ID, C.REGION),
    "user_regions": (C.USER_ID, C.REGION),
    "item_restrictions": (C.ITEM_ID, C.MIN_AGE),
}


def rule_sources(folder: Path, item_id: str, user_id: str) -> dict[str, TableSource]:
    """The business-rule files present in `folder` (`stem.csv` or `stem.parquet`), their ids
    read from the adapter's `item_id` / `user_id` source columns. Values stay text here;
    ingest parses and checks them."""
    out: dict[str, TableSource] = {}
    for stem, (key, value) in RULE_TABLES.items():
        path = find_table(folder, stem, required=False)
        if path is not None:
            source = item_id if key == C.ITEM_ID else user_id
            columns = [id_column(key, source), text_column(value, value)]
            out[stem] = TableSource(stem, path, columns)
    return out


def find_table(folder: Path, stem: str, *, required: bool) -> Path | None:
    """`stem.csv` or `stem.parquet` in `folder` (exactly one of them)."""
    found = [p for p in (folder / f"{stem}.csv", folder / f"{stem}.parquet") if p.is_file()]
    if len(found) > 1:
        raise DataError(f"both {stem}.csv and {stem}.parquet exist in {folder}; keep one")
    if not found:
        if required:
            raise DataError(f"missing file {stem}.csv (or {stem}.parquet) in {folder}")
        return None
    return found[0]
