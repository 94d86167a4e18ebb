"""How far segment popularity takes customers who never bought: the check behind the README's
Short histories figures (a quality analysis, not a speed benchmark).

A customer with no purchase before the cutoff has, for any method, only what the data knows of
them: their segments (the age bucket; the region of the `user_regions` table), as
`features.segments.user_segments` defines them. For the window's customers of that kind, this
prints MAP@12 (± standard error over them) of four orders of the items, the same for every
customer of one segment combination:

    best sellers         units in the last 7 days before the cutoff (popular)
    age bucket           the same within the customer's age bucket (popular_by_age)
    segments             p(i) x the item's lift in each of the customer's segments, the
                         ranker's `segment_share` (features.segments.lifts), from the 7 days
    segments, scored     the same counted on the scored days themselves, each customer's own
    days                 purchases taken out: segment popularity as well as it can be known,
                         an estimate of how far it can take these customers at all

No business rule is applied (the pipeline applies regions and age limits; the baselines none).

    python benchmarks/segment_ceiling.py --workspace W [--source DIR --format hm]
        [--holdout-days 3] [--windows 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from shortlist.data.arrays import US_PER_DAY, Dataset, Interactions, load_dataset, targets
from shortlist.eval.protocol import windows
from shortlist.features.segments import lifts, user_segments
from shortlist.ranking.metrics import average_precision

K = 12
DAYS = 7  # the item_segments group's window
DEPTH = 200  # each combination's best items kept; a customer's own ones are added


def units(inter: Interactions, values: np.ndarray, n_values: int, n_items: int) -> np.ndarray:
    """(values + 1, items) units bought, the last row for users of unknown value."""
    out = np.zeros((n_values + 1, n_items))
    v = values[inter.user]
    np.add.at(out, (np.where(v >= 0, v, n_values), inter.item), inter.quantity)
    return out


def segment_score(
    counts: dict[str, np.ndarray], combo: tuple[int, ...], kinds: list[str]
) -> np.ndarray:
    """p(i) (averaged over the kinds) x the lift in each known value of the combination."""
    shares, score = [], None
    for kind, value in zip(kinds, combo, strict=True):
        known = counts[kind][:-1]  # lifts over the users of known value, as the ranker's
        lift, p = lifts(known)
        shares.append(p)
        got = lift[value] if value >= 0 else np.ones(known.shape[1])
        score = got if score is None else score * got
    assert score is not None
    return np.mean(shares, axis=0) * score


def top(score: np.ndarray, k: int) -> np.ndarray:
    part = np.argpartition(-score, min(k, len(score) - 1))[:k]
    return part[np.argsort(-score[part], kind="stable")]


def window_figures(data: Dataset, cutoff: int, end: int) -> dict[str, object]:
    inter = data.interactions
    history = inter.between(cutoff - DAYS * US_PER_DAY, cutoff)
    scored = inter.between(cutoff, end)
    tg = targets(scored)
    seen = np.zeros(data.n_users, bool)
    seen[inter.between(int(inter.time[0]), cutoff).user] = True
    new = np.flatnonzero(~seen[tg.users])
    segs = user_segments(data)
    kinds = sorted(segs)
    if not kinds:
        raise SystemExit("the data has no segment (neither an age role nor user_regions)")
    n_values = {k: int(max(segs[k].max(), -1)) + 1 for k in kinds}
    past = {k: units(history, segs[k], n_values[k], data.n_items) for k in kinds}
    now = {k: units(scored, segs[k], n_values[k], data.n_items) for k in kinds}
    best = top(np.bincount(history.item, history.quantity, data.n_items), K)
    age = segs.get("age")
    aps: dict[str, list[float]] = {
        "best sellers": [],
        "age bucket": [],
        "segments": [],
        "segments, scored days": [],
    }
    by_combo = {}
    for i in new:
        user = int(tg.users[i])
        truth = tg.of(int(i)).tolist()
        combo = tuple(int(segs[k][user]) for k in kinds)
        if combo not in by_combo:
            by_combo[combo] = (
                top(segment_score(past, combo, kinds), K),
                segment_score(now, combo, kinds),
            )
        from_past, scores_now = by_combo[combo]
        aps["best sellers"].append(average_precision(best.tolist(), truth, K))
        a = int(age[user]) if age is not None and age[user] >= 0 else n_values.get("age", 0)
        bucket = top(past["age"][a], K) if age is not None else best
        aps["age bucket"].append(average_precision(bucket.tolist(), truth, K))
        aps["segments"].append(average_precision(from_past.tolist(), truth, K))
        # the scored days without this customer's own purchases: their items' counts lowered
        mine = scored.user == user
        own_items, at = np.unique(scored.item[mine], return_inverse=True)
        own_units = np.bincount(at, scored.quantity[mine])
        rows = {k: int(segs[k][user]) if segs[k][user] >= 0 else n_values[k] for k in kinds}
        for k in kinds:  # taken out in place, put back below
            now[k][rows[k], own_items] -= own_units
        pool = np.union1d(top(scores_now, DEPTH), own_items)
        adjusted = segment_score(now, combo, kinds)[pool]
        order = pool[np.argsort(-adjusted, kind="stable")][:K]
        for k in kinds:
            now[k][rows[k], own_items] += own_units
        aps["segments, scored days"].append(average_precision(order.tolist(), truth, K))
    return {
        "cutoff_day": int(cutoff // US_PER_DAY),
        "scored": len(tg.users),
        "new": len(new),
        "segment_kinds": kinds,
        "map@12": {m: float(np.mean(v)) if v else float("nan") for m, v in aps.items()},
        "se": {
            m: float(np.std(v) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
            for m, v in aps.items()
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--source", type=Path, help="ingested into the workspace first")
    ap.add_argument("--format", default=None)
    ap.add_argument("--holdout-days", type=int, default=3)
    ap.add_argument("--windows", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from shortlist.data.ingest import ingest, is_current
    from shortlist.data.offline import OfflineStore
    from shortlist.workspace import Workspace

    ws = Workspace(args.workspace)
    if args.source is not None and not is_current(ws, args.source, args.format):
        ingest(ws, args.source, format=args.format)
    data = load_dataset(OfflineStore(ws))
    wins = windows(int(data.interactions.time[-1]), args.holdout_days, args.windows)
    rows = [window_figures(data, w.cutoff, w.end) for w in wins]
    for r in rows:
        print(f"cutoff day {r['cutoff_day']}: {r['new']:,} of {r['scored']:,} scored never bought")
        for m, v in r["map@12"].items():
            print(f"  {m:24s} {v:.5f} ± {r['se'][m]:.5f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
