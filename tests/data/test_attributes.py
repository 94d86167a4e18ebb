"""Automatic typing of attribute columns on hand-made columns whose kind is obvious."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from shortlist.data.attributes import infer_kinds


def test_kinds(tmp_path):
    table = pa.table(
        {
            "weight": ["1.5", "2", None],
            "store_no": ["12", "13", "14"],
            "zipcode": ["01234", "22222", "33333"],
            "colour": ["red", "blue", "red"],
            "flag": ["true", "false", None],
            "empty": pa.array([None, None, None], pa.string()),
            "desc": ["A soft cotton top with straps", "Slim trousers in dark denim blue", None],
            "native_float": [0.5, 1.0, 2.0],
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    kinds = infer_kinds(duckdb.connect(), tmp_path / "t.parquet", table.column_names)
    assert {k: v.value for k, v in kinds.items()} == {
        "weight": "numeric",
        "store_no": "categorical",
        "zipcode": "categorical",
        "colour": "categorical",
        "flag": "categorical",
        "empty": "categorical",
        "desc": "text",
        "native_float": "numeric",
    }
