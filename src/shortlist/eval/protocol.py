"""The H&M competition's protocol: predict the week after a cutoff from everything before it."""

from __future__ import annotations

from dataclasses import dataclass

from shortlist.data.arrays import US_PER_DAY


@dataclass(frozen=True)
class Window:
    """Targets are purchases with cutoff <= time < end; methods see only time < cutoff."""

    cutoff: int  # microseconds since the epoch, a midnight UTC
    end: int


def windows(last_time: int, holdout_days: int, count: int) -> list[Window]:
    """`count` consecutive windows of `holdout_days`, the last ending at the end of the data.

    The data ends at the midnight after its last interaction, so with daily timestamps the
    final window covers the last `holdout_days` calendar days (H&M: 2020-09-16 to 2020-09-22).
    Oldest window first.
    """
    end = (last_time // US_PER_DAY + 1) * US_PER_DAY
    span = holdout_days * US_PER_DAY
    return [Window(end - (count - i) * span, end - (count - i - 1) * span) for i in range(count)]
