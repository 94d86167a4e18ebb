"""Staging a CSV: rejected records are recorded with their line, and rows map back to lines."""

from __future__ import annotations

import duckdb

from shortlist.data.reader import SourceColumn, stage


def test_staged_rows_map_back_to_their_lines(tmp_path):
    lines = ["a,b"]
    bad = {5, 6, 40, 41, 42, 100}  # file line numbers (header is line 1)
    for line in range(2, 150):
        lines.append(f"x{line},oops" if line in bad else f"x{line},{line}")
    src = tmp_path / "t.csv"
    src.write_text("\n".join(lines) + "\n")
    con = duckdb.connect()
    staged = stage(
        con,
        "t",
        src,
        [SourceColumn("a", "a"), SourceColumn("b", "b", "INTEGER")],
        tmp_path / "t.parquet",
    )
    assert [r.location for r in staged.rejections] == [f"line {n}" for n in sorted(bad)]
    values = con.execute(
        f"SELECT a FROM read_parquet('{tmp_path / 't.parquet'}', "
        "file_row_number=true) ORDER BY file_row_number"
    ).fetchall()
    for row, (a,) in enumerate(values):
        assert staged.location(row) == f"line {a[1:]}"
