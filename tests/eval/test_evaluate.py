"""The protocol end to end: windows, no peeking past the cutoff, the JSON contract, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import datetime

import numpy as np
import pytest

from shortlist.data.arrays import US_PER_DAY, Dataset, Interactions, TrainData, from_us, targets
from shortlist.errors import ConfigError
from shortlist.eval.baselines import Popular
from shortlist.eval.evaluate import evaluate, resolve_methods
from shortlist.eval.protocol import windows
from shortlist.eval.report import history_note


def test_windows_end_at_midnight_after_last_day():
    last = int((datetime(2020, 9, 22) - datetime(1970, 1, 1)).total_seconds()) * 1_000_000
    wins = windows(last, 7, 3)
    assert [from_us(w.cutoff).date().isoformat() for w in wins] == [
        "2020-09-02",
        "2020-09-09",
        "2020-09-16",
    ]
    assert from_us(wins[-1].end) == datetime(2020, 9, 23)
    assert all(a.end == b.cutoff for a, b in zip(wins, wins[1:], strict=False))


def test_targets_are_distinct_items_per_user():
    inter = Interactions(
        np.array([2, 1, 2, 2], np.int32),
        np.array([5, 5, 6, 5], np.int32),
        np.zeros(4, np.int64),
        np.ones(4, np.int32),
    )
    tg = targets(inter)
    assert tg.users.tolist() == [1, 2]
    assert tg.of(0).tolist() == [5] and tg.of(1).tolist() == [5, 6]


@dataclass
class Spy:
    """Records what it was shown, and recommends what the user will buy (a perfect oracle)."""

    name: str = "spy"
    seen_max: list[int] = field(default_factory=list)
    future: dict[int, list[int]] = field(default_factory=dict)

    def fit(self, data: TrainData):
        self.seen_max.append(int(data.interactions.time.max()))
        self.cutoff = data.cutoff
        return self

    def recommend(self, users, k):
        return np.array([(self.future[u] + [-1] * k)[:k] for u in users.tolist()], np.int32)


def _dataset(days: int = 30, n_users: int = 6, n_items: int = 8) -> Dataset:
    rng = np.random.default_rng(1)
    n = 400
    time = np.sort(rng.integers(0, days * US_PER_DAY, n))
    inter = Interactions(
        rng.integers(0, n_users, n).astype(np.int32),
        rng.integers(0, n_items, n).astype(np.int32),
        time.astype(np.int64),
        np.ones(n, np.int32),
    )
    return Dataset(inter, n_users, n_items, None, None)


def test_methods_never_see_the_target_window_and_oracle_scores_one():
    data = _dataset()
    spy = Spy()

    # The oracle is told each window's answers just before it is asked.
    wins = windows(int(data.interactions.time[-1]), 7, 3)
    answers = [targets(data.interactions.between(w.cutoff, w.end)) for w in wins]

    calls = iter(answers)

    def factory():
        tg = next(calls)
        spy.future = {int(u): tg.of(i).tolist() for i, u in enumerate(tg.users)}
        return spy

    report = evaluate(data, {"spy": factory}, n_windows=3, holdout_days=7, k=12)
    for w, seen in zip(wins, spy.seen_max, strict=True):
        assert seen < w.cutoff
    assert report["methods"]["spy"]["map@12"] == pytest.approx(1.0)
    assert report["methods"]["spy"]["recall@12"] == pytest.approx(1.0)


@dataclass
class Peeker:
    """A cheat: reads every interaction its inputs can reach (walking the TrainData and what it
    holds) and recommends what was bought at or after the cutoff."""

    name: str = "peeker"
    reached: list[int] = field(default_factory=list)  # latest time reachable per fit

    def fit(self, data: TrainData):
        found = list(_interactions_in(data))
        self.reached.append(max(int(i.time.max()) for i in found if len(i)))
        future = [i.item[i.time >= data.cutoff] for i in found]
        self.items = np.unique(np.concatenate(future)).astype(np.int32)
        return self

    def recommend(self, users, k):
        row = np.full(k, -1, np.int32)
        row[: min(k, len(self.items))] = self.items[:k]
        return np.tile(row, (len(users), 1))


def _interactions_in(obj, seen=None):
    """Every Interactions reachable from `obj` through dataclass fields."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, Interactions):
        yield obj
    elif is_dataclass(obj):
        for f in fields(obj):
            yield from _interactions_in(getattr(obj, f.name), seen)


def test_nothing_a_method_is_given_reaches_the_target_window():
    data = _dataset()
    peeker = Peeker()
    report = evaluate(data, {"peeker": lambda: peeker}, n_windows=3, holdout_days=7, k=12)
    wins = windows(int(data.interactions.time[-1]), 7, 3)
    assert [seen < w.cutoff for w, seen in zip(wins, peeker.reached, strict=True)] == [True] * 3
    assert report["methods"]["peeker"]["map@12"] == 0.0
    # the walk does find the future when it is there: the check above can fail
    leaky = TrainData(data.interactions, wins[0].cutoff, data.n_users, data.n_items, None, data)
    assert max(int(i.time.max()) for i in _interactions_in(leaky)) >= wins[0].cutoff


def test_two_tower_and_candidates_use_the_workspaces_retrieval_settings(tmp_path):
    from shortlist.config import Settings
    from shortlist.data.arrays import load_dataset
    from shortlist.data.generator import generate
    from shortlist.data.ingest import ingest
    from shortlist.data.offline import OfflineStore
    from shortlist.eval.baselines import TwoTowerNearest
    from shortlist.workspace import open_workspace

    generate(tmp_path / "src", scale="tiny", seed=5, weeks=6)
    ws = open_workspace(tmp_path / "ws")
    ingest(ws, tmp_path / "src", format="hm")
    settings = Settings.model_validate(
        {"retrieval": {"dim": 8, "hidden": 16, "epochs": 1, "max_epochs": 1, "min_steps": 0}}
    )
    made = resolve_methods(["two_tower"], settings)["two_tower"]()
    assert isinstance(made, TwoTowerNearest) and made.settings == settings.retrieval
    made: list[TwoTowerNearest] = []
    report = evaluate(
        load_dataset(OfflineStore(ws)),
        {"two_tower": lambda: made.append(TwoTowerNearest(settings.retrieval)) or made[-1]},
        candidates=True,
        settings=settings,
    )
    # the method was handed the candidate report's two-tower (one training per window), so
    # this checks both: trained with the workspace's settings, not the defaults (dim 64)
    model = made[0].source.model_
    assert model.config_.dim == 8 and model.settings == settings.retrieval
    assert "two_tower" in report["candidates"]


def test_report_contract():
    report = evaluate(_dataset(), {"popular": Popular}, n_windows=2, holdout_days=7)
    assert set(report) == {"dataset", "protocol", "methods"}
    assert set(report["dataset"]) == {"users", "items", "interactions", "start", "end"}
    assert report["protocol"]["windows"] == 2 and len(report["protocol"]["cutoffs"]) == 2
    m = report["methods"]["popular"]
    for key in ("map@12", "recall@12", "ndcg@12", "recall@100", "users_scored", "per_window"):
        assert key in m
    # recall@100 scores a deeper list of the same ranking: never lower than recall@12
    assert m["recall@100"] >= m["recall@12"]
    assert [set(w) >= {"cutoff", "map@12"} for w in m["per_window"]] == [True, True]
    assert m["map@12"] == pytest.approx(np.mean([w["map@12"] for w in m["per_window"]]))
    # every figure with its uncertainty
    for key in ("map@12_se", "map@12_window_sd", "recall@12_se"):
        assert m[key] >= 0
    assert "compared" not in m  # the reference itself
    assert not any(key.startswith("_") for w in m["per_window"] for key in w)


def test_returning_and_new_customers_are_scored_apart():
    """User 6 buys for the first time in the scored week: a new customer. An oracle that knows
    only returning customers' purchases scores 1 on them and 0 on the new one; the report
    and the line under the table say so."""
    base = _dataset()
    last = int(base.interactions.time[-1])
    extra = np.array([last - US_PER_DAY, last], np.int64)
    merged = np.concatenate([base.interactions.time, extra])
    order = np.argsort(merged, kind="stable")
    inter = Interactions(
        np.concatenate([base.interactions.user, [6, 6]]).astype(np.int32)[order],
        np.concatenate([base.interactions.item, [7, 7]]).astype(np.int32)[order],
        merged[order],
        np.ones(len(merged), np.int32),
    )
    data = Dataset(inter, 7, 8, None, None)
    win = windows(last, 7, 1)[0]
    tg = targets(data.interactions.between(win.cutoff, win.end))
    spy = Spy(future={int(u): tg.of(i).tolist() for i, u in enumerate(tg.users) if u != 6})
    spy.future[6] = []
    report = evaluate(data, {"spy": lambda: spy}, n_windows=1, holdout_days=7)
    m = report["methods"]["spy"]
    assert m["map@12_returning"] == pytest.approx(1.0)
    assert m["map@12_new"] == pytest.approx(0.0)
    assert m["returning_share"] == pytest.approx((len(tg.users) - 1) / len(tg.users))
    assert m["map@12"] == pytest.approx(m["returning_share"])
    (line,) = history_note(report)
    assert line.startswith("MAP@12 of returning / new customers (")
    assert line.endswith("the cutoff): spy 1.00000 / 0.00000")


def test_every_method_is_compared_with_the_best_baseline_or_the_one_named():
    from shortlist.eval.baselines import PopularByAge, RepurchaseTrending

    methods = {"popular": Popular, "popular_by_age": PopularByAge, "rt": RepurchaseTrending}
    report = evaluate(_dataset(), methods, n_windows=2)
    maps = {n: m["map@12"] for n, m in report["methods"].items()}
    best = max(["popular", "popular_by_age"], key=maps.get)  # "rt" is not a baseline name
    for name, m in report["methods"].items():
        if name == best:
            assert "compared" not in m
            continue
        c = m["compared"]
        assert c["reference"] == best and c["windows"] == 2
        assert c["ratio"] == pytest.approx(maps[name] / maps[best], abs=1e-4)
        assert c["ci95"][0] <= c["ratio"] <= c["ci95"][1]
    named = evaluate(_dataset(), methods, n_windows=2, compare_to="rt")
    assert named["methods"]["popular"]["compared"]["reference"] == "rt"
    with pytest.raises(ConfigError, match="compare-to 'als' is not one of the methods run"):
        evaluate(_dataset(), methods, compare_to="als")


def test_bad_protocol_arguments():
    with pytest.raises(ConfigError, match="leave no history"):
        evaluate(_dataset(days=30), {"popular": Popular}, n_windows=5, holdout_days=7)
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        resolve_methods(["popular", "nope"])


def test_cli_on_hm_sample_matches_the_published_cross_check(hm_sample, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shortlist.cli",
            "-q",
            "-w",
            str(tmp_path / "ws"),
            "evaluate",
            "--source",
            str(hm_sample),
            "--format",
            "hm",
            "--windows",
            "12",
            "--json",
            "-",
            "--methods",
            "popular,repurchase_trending",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["protocol"]["cutoffs"][-1] == "2020-09-16T00:00:00"
    assert report["dataset"]["users"] == 687
    methods = report["methods"]
    # shared/data/hm-sample/README.md: popular about 0.0005, own items + top items about 0.011
    assert 0.0002 < methods["popular"]["map@12"] < 0.0015
    assert 0.008 < methods["repurchase_trending"]["map@12"] < 0.015
    assert "repurchase_trending" in result.stderr  # the table goes to stderr with --json -
    # the comparison: repurchase_trending, the best baseline here, is the reference
    assert methods["popular"]["compared"]["reference"] == "repurchase_trending"
    assert "95% bootstrap interval" in result.stderr
    # ... and the same run on one half of the customers (a disjoint population)
    parts = []
    for part in ("1/2", "2/2"):
        result = subprocess.run(
            [sys.executable, "-m", "shortlist.cli", "-q", "-w", str(tmp_path / "ws"), "evaluate",
             "--windows", "12", "--json", "-", "--methods", "popular,repurchase_trending",
             "--user-part", part],
            capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        half = json.loads(result.stdout)
        assert half["protocol"]["user_part"] == part
        parts.append(half["methods"]["popular"]["users_scored"])
        assert "Warning: popular vs repurchase_trending" in result.stderr  # too few users
    # every scored customer of the whole is scored in exactly one half
    assert sum(parts) == methods["popular"]["users_scored"]
    assert all(p > 0.3 * methods["popular"]["users_scored"] for p in parts)


def test_cli_rejects_a_malformed_user_part(tmp_path):
    from tests.test_cli import shortlist

    result = shortlist("-w", str(tmp_path / "ws"), "evaluate", "--user-part", "3/2")
    assert result.returncode != 0
    assert "'3/2': I must be from 1 to N" in result.stderr


def test_a_script_without_a_main_guard_evaluates_in_its_own_process(tmp_path):
    """The Python API runs windows in the calling process unless asked (`jobs=1`): spawned
    processes import the calling script again, and a script with its calls at top level (as
    the README's example has them) would run in each of them. Asked for two processes, the
    same script fails with an error that says why, not a hang."""
    from shortlist.data.generator import generate
    from shortlist.data.ingest import ingest
    from shortlist.workspace import open_workspace

    generate(tmp_path / "src", scale="tiny", seed=5, weeks=6)
    ingest(open_workspace(tmp_path / "ws"), tmp_path / "src", format="hm")
    script = tmp_path / "script.py"
    body = (
        "import shortlist\n"
        f"ws = shortlist.open_workspace({str(tmp_path / 'ws')!r})\n"
        "report = shortlist.evaluate(ws, ['popular'], n_windows=2{jobs})\n"
        "print('windows', len(report['methods']['popular']['per_window']))\n"
    )
    script.write_text(body.format(jobs=""))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "windows 2"
    script.write_text(body.format(jobs=", jobs=2"))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert run.returncode != 0
    assert 'if __name__ == "__main__":' in run.stderr
