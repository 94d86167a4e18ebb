"""H&M-shaped synthetic data: the three Kaggle CSVs with structure a recommender can learn, and
the optional business-rule files (regions, age limits, stock) the simulated purchases obey."""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from shortlist.data.generator.catalog import generate_catalog
from shortlist.data.generator.customers import generate_customers
from shortlist.data.generator.rules import RECENT_WEEKS, draw_assortment, inventory, markets
from shortlist.data.generator.rules import rule_tables as draw_rule_tables
from shortlist.data.generator.transactions import Calendar, Simulation, week_targets
from shortlist.errors import ConfigError

# Presets; `full` has the size and period of the H&M Personalized Fashion Recommendations data.
SCALES: dict[str, dict] = {
    "tiny": {"users": 1_000, "items": 600, "interactions": 20_000, "weeks": 26},
    "small": {"users": 20_000, "items": 5_000, "interactions": 400_000, "weeks": 105},
    "medium": {"users": 200_000, "items": 30_000, "interactions": 4_000_000, "weeks": 105},
    "full": {"users": 1_371_980, "items": 105_542, "interactions": 31_788_324, "weeks": 105},
}
END = dt.date(2020, 9, 22)  # last day of the H&M training data; 105 weeks start on 2018-09-20
PRICE_UNIT = 59_000  # H&M prices are SEK / 590; the generator counts hundredths of SEK
TRANSACTION_COLUMNS = ["t_dat", "customer_id", "article_id", "price", "sales_channel_id"]


@dataclass(frozen=True)
class GenerateSummary:
    """What `generate` wrote."""

    out_dir: Path
    users: int
    items: int
    interactions: int
    start: dt.date
    end: dt.date
    seconds: float


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ConfigError(f"must be a positive integer, got {value!r}", key=name)
    return int(value)


def resolve(
    scale: str,
    users: int | None = None,
    items: int | None = None,
    interactions: int | None = None,
    weeks: int | None = None,
) -> dict[str, int]:
    """The preset for `scale` with explicit counts overriding it; raises ConfigError if invalid."""
    if scale not in SCALES:
        raise ConfigError(f"must be one of {', '.join(SCALES)}, got {scale!r}", key="scale")
    given = {"users": users, "items": items, "interactions": interactions, "weeks": weeks}
    out = dict(SCALES[scale])
    for name, value in given.items():
        if value is not None:
            out[name] = _positive(name, value)
    if out["weeks"] > 1000:
        raise ConfigError("must be at most 1000", key="weeks")
    return out


def price_strings(max_cents: int = PRICE_UNIT) -> pl.Series:
    """H&M's price text per hundredth of SEK: the value /590 truncated to 16 decimals."""
    text = []
    for cents in range(max_cents):
        digits = cents * 10**16 // PRICE_UNIT
        text.append(f"0.{digits:016d}".rstrip("0") if digits else "0.0")
    return pl.Series("price", text)


def _replace_into(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)  # files appear complete or not at all


def generate(
    out_dir: Path | str,
    *,
    scale: str = "small",
    users: int | None = None,
    items: int | None = None,
    interactions: int | None = None,
    weeks: int | None = None,
    seed: int = 0,
) -> GenerateSummary:
    """Write articles.csv, customers.csv and transactions_train.csv in H&M's Kaggle layout,
    and the business-rule files item_regions.csv, item_restrictions.csv, user_regions.csv and
    inventory.csv (see docs/generator.md).

    Synthetic data lets the whole funnel run and be tested at any size without the competition
    files; the same seed gives byte-identical files.
    """
    cfg = resolve(scale, users, items, interactions, weeks)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"must be a non-negative integer, got {seed!r}", key="seed")
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_weeks = cfg["weeks"]
    cal = Calendar(start=END - dt.timedelta(days=7 * n_weeks - 2), n_days=7 * n_weeks - 1,
                   n_weeks=n_weeks)  # fmt: skip
    # The rules draw from a fourth stream, so the other three draw as before: articles.csv and
    # customers.csv are unchanged for a seed; transactions now obey the rules.
    cat_seq, cus_seq, sim_seq, rules_seq = np.random.SeedSequence(int(seed)).spawn(4)
    cat = generate_catalog(np.random.default_rng(cat_seq), cfg["items"], n_weeks)
    cus = generate_customers(np.random.default_rng(cus_seq), cfg["users"], n_weeks)
    rules_rng = np.random.default_rng(rules_seq)
    assort = draw_assortment(rules_rng, cat)
    tables = {"articles": cat.table, "customers": cus.table}
    tables |= draw_rule_tables(rules_rng, assort, cat, cus)
    for name, table in tables.items():
        table.write_csv(out / f"{name}.csv.partial")
        _replace_into(out / f"{name}.csv.partial", out / f"{name}.csv")

    dates = pl.Series(
        "t_dat", [(cal.start + dt.timedelta(days=d)).isoformat() for d in range(cal.n_days)]
    )
    prices = price_strings()
    article_ids = cat.table["article_id"]
    written = 0
    recent_from = cal.n_days - 7 * RECENT_WEEKS
    recent = np.zeros(cfg["items"], dtype=np.int64)  # units sold in the last weeks
    tmp = out / "transactions_train.csv.partial"
    with open(tmp, "wb") as fh:
        fh.write((",".join(TRANSACTION_COLUMNS) + "\n").encode())

        def sink(day, user, item, cents, channel) -> None:
            nonlocal written, recent
            if day[-1] >= recent_from:  # rows come sorted by day
                recent += np.bincount(item[day >= recent_from], minlength=len(recent))
            frame = pl.DataFrame(
                {
                    "t_dat": dates.gather(day),
                    "customer_id": cus.ids.gather(user),
                    "article_id": article_ids.gather(item),
                    "price": prices.gather(cents),
                    "sales_channel_id": channel,
                }
            )
            frame.write_csv(fh, include_header=False)
            written += len(frame)

        sim = Simulation(
            cat, cus, cal, np.random.default_rng(sim_seq), assort.sold_to(), markets(cus)
        )
        sim.run(week_targets(cfg["interactions"], cal), sink)
    _replace_into(tmp, out / "transactions_train.csv")
    inventory(rules_rng, cat, recent).write_csv(out / "inventory.csv.partial")
    _replace_into(out / "inventory.csv.partial", out / "inventory.csv")
    return GenerateSummary(
        out_dir=out,
        users=cfg["users"],
        items=cfg["items"],
        interactions=written,
        start=cal.start,
        end=END,
        seconds=round(time.perf_counter() - t0, 3),
    )
