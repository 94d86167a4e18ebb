"""The generic adapter: items, optional users, and interactions as CSV or Parquet files."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from shortlist import columns as C
from shortlist.config import AttributeKind, SchemaSettings, Settings
from shortlist.data.layout import (
    SourceLayout,
    TableSource,
    find_table,
    id_column,
    interaction_columns,
    rule_sources,
)
from shortlist.data.reader import read_header
from shortlist.errors import DataError

_UNIX = re.compile(r"^\s*-?\d+(\.\d+)?\s*$")
SNIFF_ROWS = 1000


def _timestamp_format(path: Path) -> tuple[str, str]:
    """(SQL type, expression) for the timestamp column: unix seconds or ISO date/datetime.

    Decided from the first rows; rows in the other format are then rejected with their line.
    ISO datetimes with an offset are converted to UTC; without one they are taken as UTC.
    """
    unix = iso = 0
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        field = pq.read_schema(path).field(C.TIMESTAMP)
        if str(field.type).startswith(("int", "uint", "double", "float")):
            return "DOUBLE", "to_timestamp({col})::TIMESTAMP"
        return "TIMESTAMPTZ", "{col}::TIMESTAMP"
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        for i, row in enumerate(reader):
            value = row.get(C.TIMESTAMP) or ""
            if value:
                unix, iso = (unix + 1, iso) if _UNIX.match(value) else (unix, iso + 1)
            if i >= SNIFF_ROWS:
                break
    if unix > iso:
        return "DOUBLE", "to_timestamp({col})::TIMESTAMP"
    return "TIMESTAMPTZ", "{col}::TIMESTAMP"


def layout(folder: Path, settings: Settings) -> SourceLayout:
    """Files `items`, `users` (optional) and `interactions`, each `.csv` or `.parquet`, plus
    the optional business-rule files (`inventory`, `item_regions`, `user_regions`,
    `item_restrictions`, keyed by `item_id` or `user_id`).

    Raises:
        DataError: a required file is missing, or an attribute override names no column.
    """
    if not folder.is_dir():
        raise DataError(f"source folder {folder} does not exist")
    items = find_table(folder, "items", required=True)
    users = find_table(folder, "users", required=False)
    inter = find_table(folder, "interactions", required=True)
    assert items is not None and inter is not None  # required=True raised otherwise
    for path, overrides, key in (
        (items, settings.ingest.item_attributes, "ingest.item_attributes"),
        (users, settings.ingest.user_attributes, "ingest.user_attributes"),
    ):
        header = read_header(path) if path else []
        for name in overrides:
            if name not in header:
                raise DataError(
                    f"{key}.{name} names no column of {path.name if path else 'users'}"
                    f" (columns: {', '.join(header)})"
                )
    ts_type, ts_expr = _timestamp_format(inter)
    roles = settings.schema_
    if roles.user_age is None and users is not None and "age" in read_header(users):
        roles = roles.model_copy(update={"user_age": "age"})
    kinds_users: dict[str, AttributeKind] = dict(settings.ingest.user_attributes)
    if roles.user_age:
        kinds_users.setdefault(roles.user_age, AttributeKind.NUMERIC)
    return SourceLayout(
        adapter="generic",
        items=TableSource(
            "items",
            items,
            [id_column(C.ITEM_ID, C.ITEM_ID)],
            kinds=dict(settings.ingest.item_attributes),
        ),
        users=None
        if users is None
        else TableSource("users", users, [id_column(C.USER_ID, C.USER_ID)], kinds=kinds_users),
        interactions=TableSource(
            "interactions",
            inter,
            interaction_columns(
                C.USER_ID, C.ITEM_ID, C.TIMESTAMP, ts_type, ts_expr, None, None, None
            ),
        ),
        roles=SchemaSettings.model_validate(roles.model_dump()),
        rules=rule_sources(folder, C.ITEM_ID, C.USER_ID),
    )
