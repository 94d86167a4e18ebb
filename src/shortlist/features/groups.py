"""The feature groups by name: each builds a lazy Ibis table as of a cutoff, on any backend."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from shortlist.errors import ConfigError
from shortlist.features import affinity, history, items, segments, user_items, users
from shortlist.features.base import FeatureOptions, GroupFrame
from shortlist.features.engine import OfflineTables

Builder = Callable[[OfflineTables, datetime, FeatureOptions], GroupFrame]

# Materialization order; the names are the store's folder names.
GROUPS: dict[str, Builder] = {
    items.NAME: items.build,
    segments.NAME: segments.build,
    users.NAME: users.build,
    affinity.NAME: affinity.build,
    user_items.NAME: user_items.build,
    history.NAME: history.build,
}
KEYS: dict[str, tuple[str, ...]] = {
    items.NAME: items.KEYS,
    segments.NAME: segments.KEYS,
    users.NAME: users.KEYS,
    affinity.NAME: affinity.KEYS,
    user_items.NAME: user_items.KEYS,
    history.NAME: history.KEYS,
}


def resolve(names: Iterable[str] | None) -> list[str]:
    """Group names in materialization order; None means all of them."""
    if names is None:
        return list(GROUPS)
    wanted = list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in GROUPS]
    if unknown:
        raise ConfigError(
            f"unknown feature group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}"
        )
    return [n for n in GROUPS if n in wanted]


def build(
    name: str, src: OfflineTables, cutoff: datetime, options: FeatureOptions | None = None
) -> GroupFrame:
    """Group `name` as of `cutoff` (naive UTC): a lazy table, nothing runs until it is executed."""
    (name,) = resolve([name])
    return GROUPS[name](src, cutoff, options or FeatureOptions())
