"""Automatic typing of item and user attribute columns: categorical, numeric or text."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from shortlist.config import AttributeKind

# Integer-valued columns named like codes are labels, not quantities (colour_code, store_no).
_CODE_NAME = re.compile(r"(^|_)(id|no|nr|code|key|sku|zip)$", re.IGNORECASE)
# Strings averaging this many words or more are prose (names, descriptions), indexed as text.
TEXT_MIN_WORDS = 4.0


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def infer_kinds(
    con: duckdb.DuckDBPyConnection, parquet: Path, columns: list[str]
) -> dict[str, AttributeKind]:
    """Kind of each column from its values, in one scan of the staged table.

    numeric: every non-empty value parses as a number, no leading zeros, name not code-like;
    text: strings of four or more words on average; categorical: everything else, including
    empty columns and booleans.
    """
    if not columns:
        return {}
    parts = []
    for c in columns:
        v = f"NULLIF(trim({_q(c)}::VARCHAR), '')"
        parts += [
            f"count({v})",
            f"count(TRY_CAST({v} AS DOUBLE))",
            f"count(*) FILTER (WHERE regexp_matches({v}, '^[+-]?0[0-9]'))",
            f"avg(len(string_split({v}, ' ')))",
        ]
    row = con.execute(f"SELECT {', '.join(parts)} FROM read_parquet('{parquet}')").fetchall()[0]
    assert row is not None  # an aggregate always returns one row
    kinds = {}
    for i, c in enumerate(columns):
        n, numeric, leading_zero, words = row[4 * i : 4 * i + 4]
        if n and numeric == n and not leading_zero and not _CODE_NAME.search(c):
            kinds[c] = AttributeKind.NUMERIC
        elif n and numeric < n and (words or 0) >= TEXT_MIN_WORDS:
            kinds[c] = AttributeKind.TEXT
        else:
            kinds[c] = AttributeKind.CATEGORICAL
    return kinds
