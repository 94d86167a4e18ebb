"""Summary statistics of an H&M Kaggle-layout folder, to compare synthetic data with real data."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import duckdb

# (key, label, format): the order of rows in statistics_table.
METRICS = [
    ("customers", "customers", "int"),
    ("articles", "articles", "int"),
    ("transactions", "transactions (rows)", "int"),
    ("weeks", "weeks covered", "int"),
    ("purchases_per_customer_mean", "rows per buying customer: mean", "f1"),
    ("purchases_per_customer_median", "rows per buying customer: median", "f1"),
    ("purchases_per_customer_p90", "rows per buying customer: p90", "f1"),
    ("repeat_share", "rows repeating an earlier (customer, article), incl. same day", "pct"),
    (
        "repeat_share_later_day",
        "rows repeating an earlier (customer, article) on a later day",
        "pct",
    ),
    ("basket_size_mean", "rows per customer-day: mean", "f2"),
    ("basket_size_median", "rows per customer-day: median", "f1"),
    ("top1pct_article_share", "rows on the top 1% of catalogue articles", "pct"),
    ("never_bought_share", "catalogue articles never bought", "pct"),
    ("price_p1", "price p1", "f4"),
    ("price_p50", "price p50", "f4"),
    ("price_p99", "price p99", "f4"),
    ("channel2_share", "rows in sales channel 2 (online)", "pct"),
]


def _csv(path: Path, types: dict[str, str]) -> str:
    spec = ", ".join(f"'{k}': '{v}'" for k, v in types.items())
    quoted = str(path).replace("'", "''")
    return f"read_csv('{quoted}', header = true, types = {{{spec}}})"


def hm_statistics(source_dir: Path | str) -> dict:
    """Size, activity, repeat, basket, popularity, price and channel figures of a dataset.

    Computed with DuckDB straight from the CSVs, so the real sample and generated data of any
    size (31.8M rows at full scale) are measured by the same code.
    """
    src = Path(source_dir)
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET memory_limit = '4GB'")
    # Ids are hashed to 64-bit integers: collisions among ~1.4M ids are vanishingly unlikely, and
    # the table is a quarter the size of one with 64-character strings.
    con.execute(
        "CREATE TEMP TABLE t AS SELECT t_dat, hash(customer_id) AS c, hash(article_id) AS a, "
        "price, sales_channel_id AS ch FROM "
        + _csv(
            src / "transactions_train.csv",
            {"t_dat": "DATE", "customer_id": "VARCHAR", "article_id": "VARCHAR", "price": "DOUBLE"},
        )
    )

    def one(sql: str) -> tuple:
        return con.execute(sql).fetchall()[0]

    n_cust = one(f"SELECT count(*) FROM {_csv(src / 'customers.csv', {'customer_id': 'VARCHAR'})}")
    n_art = one(f"SELECT count(*) FROM {_csv(src / 'articles.csv', {'article_id': 'VARCHAR'})}")
    n, ch2, p1, p50, p99, bought = one(
        "SELECT count(*), avg((ch = 2)::DOUBLE), quantile_cont(price, 0.01), "
        "quantile_cont(price, 0.5), quantile_cont(price, 0.99), count(DISTINCT a) FROM t"
    )
    weeks = one("SELECT count(DISTINCT ((SELECT max(t_dat) FROM t) - t_dat) // 7) FROM t")[0]
    per_mean, per_median, per_p90 = one(
        "SELECT avg(n), median(n), quantile_cont(n, 0.9) FROM (SELECT count(*) n FROM t GROUP BY c)"
    )
    rep, rep_later = one(
        "WITH g AS (SELECT c, a, t_dat, count(*) n FROM t GROUP BY ALL), "
        "p AS (SELECT sum(n) total, arg_min(n, t_dat) first_day FROM g GROUP BY c, a) "
        "SELECT sum(total - 1), sum(total - first_day) FROM p"
    )
    b_mean, b_median = one(
        "SELECT avg(n), median(n) FROM (SELECT count(*) n FROM t GROUP BY c, t_dat)"
    )
    k = max(1, round(0.01 * n_art[0]))
    top = one(f"SELECT sum(n) FROM (SELECT count(*) n FROM t GROUP BY a ORDER BY n DESC LIMIT {k})")
    con.close()
    return {
        "customers": n_cust[0],
        "articles": n_art[0],
        "transactions": n,
        "weeks": weeks,
        "purchases_per_customer_mean": per_mean,
        "purchases_per_customer_median": float(per_median),
        "purchases_per_customer_p90": per_p90,
        "repeat_share": float(rep) / n,
        "repeat_share_later_day": float(rep_later) / n,
        "basket_size_mean": b_mean,
        "basket_size_median": float(b_median),
        "top1pct_article_share": float(top[0]) / n,
        "never_bought_share": 1 - bought / n_art[0],
        "price_p1": p1,
        "price_p50": p50,
        "price_p99": p99,
        "channel2_share": ch2,
    }


def _fmt(value: object, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if kind == "int":
        return f"{int(value):,}"
    if kind == "pct":
        return f"{100 * float(value):.1f}%"
    return f"{float(value):.{int(kind[1:])}f}"


def statistics_table(named: dict[str, dict]) -> str:
    """A Markdown table with one column per dataset, for docs and side-by-side comparison."""
    names = list(named)
    lines = ["| statistic | " + " | ".join(names) + " |", "|---" + "|---:" * len(names) + "|"]
    for key, label, kind in METRICS:
        cells = [_fmt(named[name].get(key), kind) for name in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """`python -m shortlist.data.stats DIR [DIR...]`: print the table for these folders."""
    parser = argparse.ArgumentParser(prog="python -m shortlist.data.stats", description=__doc__)
    parser.add_argument("dirs", nargs="+", type=Path, help="folders with the three H&M CSVs")
    args = parser.parse_args(argv)
    named = {}
    for d in args.dirs:
        name = d.resolve().name or str(d)
        while name in named:
            name += "'"
        named[name] = hm_statistics(d)
    print(statistics_table(named))


if __name__ == "__main__":
    main()
