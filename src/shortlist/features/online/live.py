"""The online store's event groups: what real-time events write in place, beside the feature
groups a materialization writes (docs/service.md, "What each event updates").

| group     | key            | value                                                          |
|-----------|----------------|----------------------------------------------------------------|
| `recent`  | user_idx       | records (item_idx, day, quantity): the user's purchases since   |
|           |                | the cutoff (day: days after it), oldest first, the last 100     |
| `stock`   | item_idx       | row [units]: the units in stock the last stock event gave       |
| `sales`   | 0              | records (item_idx, units): units sold since the cutoff, every   |
|           |                | item sold (the 4,096 best sellers when more), by item           |
| `applied` | 0              | records (seq): the last event of the log applied to the version |

A version starts with them empty (`Pipeline.save` writes them with its feature groups;
`OnlineStore.add_groups` adds them to a version that lacks them). Their `source` names the data
and cutoff of the pipeline whose events they hold, so that no pipeline reads or writes another
build's events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shortlist.features.online.base import GroupLayout

RECENT, STOCK, SALES, APPLIED = "recent", "stock", "sales", "applied"
LIVE_GROUPS = (RECENT, STOCK, SALES, APPLIED)
GLOBAL_KEY = 0  # the one key of `sales` and `applied`


def live_layouts(tag: Mapping[str, Any]) -> list[GroupLayout]:
    """The event groups' layouts; `tag` ({"data": fingerprint, "cutoff": ISO}) says whose."""
    source = {"live": True, **tag}
    return [
        GroupLayout(
            name=RECENT,
            kind="records",
            key="user_idx",
            fields=[("item_idx", "<i4"), ("day", "<f4"), ("quantity", "<f4")],
            source=source,
        ),
        GroupLayout(name=STOCK, kind="row", key="item_idx", columns=["units"], source=source),
        GroupLayout(
            name=SALES,
            kind="records",
            key="segment",
            fields=[("item_idx", "<i4"), ("units", "<f4")],
            source=source,
        ),
        GroupLayout(
            name=APPLIED, kind="records", key="log", fields=[("seq", "<i8")], source=source
        ),
    ]


def live_tag(layout: GroupLayout) -> dict[str, Any]:
    """The tag a live group was written with ({} for another kind of group)."""
    if not layout.source.get("live"):
        return {}
    return {k: v for k, v in layout.source.items() if k != "live"}
