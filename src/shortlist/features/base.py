"""Pieces every feature group shares: options, the computed-group type, cutoffs and day counts."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import ibis
import ibis.expr.types as ir

from shortlist.config import FeaturesSettings
from shortlist.errors import ConfigError

# Not in shortlist.columns (owned elsewhere); candidates to move there.
FEATURE_TIME = "feature_time"  # the cutoff a snapshot row was computed at: it saw data < this
EVENT_TIME = "event_time"  # when a label event happened (point-in-time joins)

SECONDS_PER_DAY = 86_400
_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class FeatureOptions:
    """Knobs of the feature definitions; defaults suit H&M-sized data."""

    history_length: int = 50  # purchases kept per user in `history`
    # user_category covers categorical item attributes with at most this many distinct values:
    # wider ones (product codes) make a huge, sparse long table and are better learnt as ids.
    max_category_values: int = 200
    category_attributes: tuple[str, ...] | None = None  # restrict user_category; None: all fit
    max_channels: int = 16  # channel share columns: the most frequent values, the rest ignored

    @classmethod
    def from_settings(cls, settings: FeaturesSettings) -> FeatureOptions:
        """The options the workspace's [features] section describes."""
        return cls(
            history_length=settings.history_length,
            max_category_values=settings.max_category_values,
            category_attributes=(
                tuple(settings.category_attributes)
                if settings.category_attributes is not None
                else None
            ),
            max_channels=settings.max_channels,
        )

    def __post_init__(self) -> None:
        if self.history_length < 1:
            raise ConfigError("must be at least 1", key="features.history_length")
        if self.max_category_values < 1:
            raise ConfigError("must be at least 1", key="features.max_category_values")
        if self.max_channels < 0:
            raise ConfigError("must not be negative", key="features.max_channels")


@dataclass
class GroupFrame:
    """One feature group computed as of a cutoff: a lazy Ibis table plus what its columns mean.

    `features` maps every non-key column except feature_time to a one-line definition, in
    column order; it is what the feature manifest and docs list.
    """

    name: str
    keys: tuple[str, ...]
    table: ir.Table
    features: dict[str, str] = field(default_factory=dict)
    description: str = ""


def to_utc_naive(value: datetime | str) -> datetime:
    """A cutoff or event time as naive UTC (the offline store's convention).

    Aware values are converted to UTC; naive ones are taken to be UTC already.
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(
                f"not an ISO date or datetime: {value!r}", key="features.cutoff"
            ) from None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def timestamp_literal(value: datetime) -> ir.TimestampScalar:
    return ibis.literal(value, type="timestamp")


def days_before(ts: ir.TimestampValue, cutoff: datetime) -> ir.FloatingValue:
    """Days from `ts` to the cutoff as a float (2.5 = two and a half days before).

    Through epoch seconds, because interval arithmetic differs between engines; whole-second
    resolution (PySpark truncates fractions).
    """
    cutoff_s = int((cutoff - _EPOCH).total_seconds())
    seconds = ibis.literal(cutoff_s, type="int64") - ts.epoch_seconds().cast("int64")
    # Both operands double: Spark reads a literal 86400.0 as DECIMAL and would return decimals.
    day = ibis.literal(float(SECONDS_PER_DAY), type="float64")
    return (seconds.cast("float64") / day).cast("float64")


def int_sum(value: ir.IntegerValue, where: ir.BooleanValue | None = None) -> ir.IntegerValue:
    """sum() as int64 on every engine.

    DuckDB sums integers into HUGEINT (written to Parquet as double) and Ibis drops a cast to
    int64 it thinks is a no-op; summing as double then casting is a real cast, exact to 2**53.
    """
    return value.cast("float64").sum(where=where).cast("int64")


def window_start(cutoff: datetime, days: int) -> ir.TimestampScalar:
    """Start of the `days`-day window ending at the cutoff: the window is [start, cutoff)."""
    return timestamp_literal(cutoff - timedelta(days=days))


def sanitize(values: Iterable[str], prefix: str, suffix: str = "") -> dict[str, str]:
    """Column names for data values: lowercase [a-z0-9_], unique, `prefix` + name + `suffix`."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for value in values:
        stem = re.sub(r"[^0-9a-z]+", "_", str(value).lower()).strip("_") or "value"
        name, n = f"{prefix}{stem}{suffix}", 2
        while name in taken:
            name, n = f"{prefix}{stem}_{n}{suffix}", n + 1
        taken.add(name)
        out[value] = name
    return out


def with_feature_time(table: ir.Table, keys: tuple[str, ...], cutoff: datetime) -> ir.Table:
    """Keys first, then feature_time (= cutoff), then the features."""
    rest = [c for c in table.columns if c not in keys]
    return table.select(*keys, timestamp_literal(cutoff).name(FEATURE_TIME), *rest)
