"""The evaluation report on the terminal: one row per method, best MAP first."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def report_table(report: dict[str, Any]) -> Table:
    k = report["protocol"]["k"]
    p = report["protocol"]
    title = (
        f"Last-{p['holdout_days']}-days protocol, {p['windows']} window(s), "
        f"cutoffs {p['cutoffs'][0][:10]} .. {p['cutoffs'][-1][:10]}"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("method", no_wrap=True)
    deep = next(
        (
            key
            for key in next(iter(report["methods"].values()))
            if key.startswith("recall@") and key != f"recall@{k}"
        ),
        None,
    )
    reference = comparison_reference(report)
    cols = [
        f"MAP@{k} ± se",
        *([f"vs {reference} [95% CI] wins"] if reference else []),
        f"recall@{k} ± se",
        *([deep] if deep else []),
        f"coverage@{k}",
    ]
    for col in (*cols, "users", "seconds"):
        table.add_column(col, justify="right")
    ranked = sorted(report["methods"].items(), key=lambda kv: -kv[1][f"map@{k}"])
    for name, m in ranked:
        table.add_row(
            name,
            f"{m[f'map@{k}']:.5f} ± {m[f'map@{k}_se']:.5f}",
            *([_compared(m.get("compared"))] if reference else []),
            f"{m[f'recall@{k}']:.4f} ± {m[f'recall@{k}_se']:.4f}",
            *([f"{m[deep]:.4f}"] if deep else []),
            f"{m[f'coverage@{k}']:.4f}",
            f"{m['users_scored']:,}",
            f"{m['seconds']:.1f}",
        )
    return table


def comparison_reference(report: dict[str, Any]) -> str | None:
    """The method every other was compared with (see eval/uncertainty.py), if any."""
    for m in report["methods"].values():
        if "compared" in m:
            return str(m["compared"]["reference"])
    return None


def _compared(c: dict[str, Any] | None) -> str:
    if c is None:
        return "reference"
    if c["ratio"] is None:
        return "-"
    low, high = c["ci95"]
    interval = f"[{low:.2f}-{high:.2f}]" if low is not None and high is not None else "[-]"
    return f"{c['ratio']:.2f}x {interval} {c['windows_won']}/{c['windows']}"


def uncertainty_notes(report: dict[str, Any]) -> list[str]:
    """What the table's uncertainty means, and a warning for every comparison whose run had
    fewer scored users than a 20 % difference needs to be told apart."""
    reference = comparison_reference(report)
    if reference is None:
        return []
    k = report["protocol"]["k"]
    lines = [
        f"± se: standard error over users. vs {reference}: ratio of MAP@{k}, 95% bootstrap "
        "interval over users (paired: the same users), windows won."
    ]
    for name, m in report["methods"].items():
        c = m.get("compared")
        if c is not None and not c["enough_users"]:
            lines.append(
                f"Warning: {name} vs {reference}: {c['users']:,} scored users; telling a 20% "
                f"difference apart needs about {c['users_needed']:,} (more windows, or more "
                "data): the difference may be noise."
            )
    return lines


def candidates_table(report: dict[str, Any]) -> Table:
    """Recall of next-window purchases per candidate source and for the union."""
    cands = report["candidates"]
    budgets = sorted(
        int(key.split("@")[1]) for key in next(iter(cands.values())) if key.startswith("recall@")
    )
    table = Table(
        title="Candidate recall (share of next-window purchases among the candidates)",
        title_justify="left",
    )
    table.add_column("source")
    for n in budgets:
        table.add_column(f"recall@{n}", justify="right")
    table.add_column(f"mean candidates@{budgets[-1]}", justify="right")
    for name, stats in cands.items():
        table.add_row(
            name,
            *[f"{stats[f'recall@{n}']:.4f}" for n in budgets],
            f"{stats['mean_candidates']:.1f}",
        )
    return table


def history_note(report: dict[str, Any]) -> list[str]:
    """MAP@k of returning customers (a purchase before the cutoff) and of new ones, per method,
    best overall first; nothing when the run has no such split (an old report)."""
    k = report["protocol"]["k"]
    methods = report["methods"]
    if not methods or any(f"map@{k}_new" not in m for m in methods.values()):
        return []
    share = next(iter(methods.values()))["returning_share"]

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.5f}"

    ranked = sorted(methods.items(), key=lambda kv: -kv[1][f"map@{k}"])
    parts = [f"{n} {fmt(m[f'map@{k}_returning'])} / {fmt(m[f'map@{k}_new'])}" for n, m in ranked]
    return [
        f"MAP@{k} of returning / new customers ({share:.0%} of the scored users bought before "
        f"the cutoff): {'; '.join(parts)}"
    ]


def filters_note(report: dict[str, Any]) -> list[str]:
    """One line per set of methods that share which filters ran and which were skipped (and
    why); baselines apply no business rules."""
    groups: dict[str, list[str]] = {}
    for name, m in report["methods"].items():
        filters = m.get("filters") or {}
        if not filters:
            continue
        text = "; ".join(f"{f} {status}" for f, status in filters.items())
        groups.setdefault(text, []).append(name)
    lines = [f"Filters of {', '.join(names)}: {text}" for text, names in groups.items()]
    if lines:
        lines.append("The baselines apply no business rules.")
    return lines
