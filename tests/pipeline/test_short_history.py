"""A shop that just started: data spanning six days. Every learned part trains on days, not
weeks, or says clearly why it cannot; nothing trains on nothing, and no NaN reaches an index."""

from __future__ import annotations

import numpy as np
import pytest

from shortlist.config import Settings
from shortlist.data.arrays import US_PER_DAY, end_of_data, load_dataset
from shortlist.data.generator import generate
from shortlist.data.ingest import ingest
from shortlist.data.offline import OfflineStore
from shortlist.errors import WorkspaceError
from shortlist.eval.evaluate import evaluate, resolve_methods
from shortlist.pipeline.training import plan_periods
from shortlist.retrieval.index import index_vectors
from shortlist.retrieval.two_tower import TwoTowerModel
from shortlist.workspace import open_workspace

SETTINGS = Settings.model_validate(
    {"retrieval": {"dim": 16, "hidden": 32, "epochs": 2, "max_epochs": 4, "min_steps": 40}}
)


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    root = tmp_path_factory.mktemp("short")
    generate(root / "src", scale="tiny", seed=6, weeks=1)
    ws = open_workspace(root / "ws")
    ingest(ws, root / "src", format="hm")
    data = load_dataset(OfflineStore(ws))
    span = (end_of_data(data) - int(data.interactions.time[0])) // US_PER_DAY
    assert span == 6
    return data


def fit_two_tower(data, cutoff: int) -> TwoTowerModel:
    return TwoTowerModel(SETTINGS.retrieval).fit(
        data.items, data.item_kinds, data.users, data.user_kinds, data.interactions, cutoff
    )


def test_the_two_tower_holds_out_a_day_not_a_week(days):
    model = fit_two_tower(days, end_of_data(days))
    assert model.val_days_ == 1  # a quarter of six days, in whole days
    assert model.schedule_["examples"] > 0
    assert all(np.isfinite(e["loss"]) for e in model.history_)
    assert all(e["val_recall@100"] is not None for e in model.history_)
    assert np.isfinite(model.item_vectors_).all()


def test_with_too_little_to_hold_out_it_trains_on_all_and_keeps_the_last_epoch(days):
    cutoff = int(days.interactions.time[0]) // US_PER_DAY * US_PER_DAY + 2 * US_PER_DAY
    model = fit_two_tower(days, cutoff)  # two days of history: nothing held out
    assert model.val_days_ == 0
    assert [e["val_recall@100"] for e in model.history_] == [None] * len(model.history_)
    assert np.isfinite(model.item_vectors_).all()
    # and `shortlist train retrieval`'s table says so rather than failing on the missing recall
    from rich.console import Console

    from shortlist.cli.models import epochs_table

    console = Console(width=80, record=True)
    console.print(epochs_table(model.history_))
    rows = [line for line in console.export_text().splitlines() if line.strip()[:2] == "│ "]
    assert len(rows) == len(model.history_) and all(r.rstrip(" │").endswith("-") for r in rows)


def test_no_purchases_to_train_on_is_a_clear_error_not_nan(days):
    first = int(days.interactions.time[0]) // US_PER_DAY * US_PER_DAY
    with pytest.raises(WorkspaceError, match="no purchases before .* to train the two-tower"):
        fit_two_tower(days, first)


def test_an_index_refuses_nan_vectors():
    vectors = np.ones((30, 4), np.float32)
    vectors[7, 2] = np.nan
    with pytest.raises(WorkspaceError, match="1 of 30 item vectors hold NaN or inf .item id 7"):
        index_vectors(vectors)


def test_ranking_periods_are_days_on_a_short_history(days):
    plan = plan_periods(days, end_of_data(days), SETTINGS)
    assert plan.days == 1  # weeks = 4 periods and one more must fit in six days
    assert 2 <= plan.periods <= 5


def test_evaluate_on_days_of_data(days):
    methods = ["popular", "repurchase_trending", "two_tower", "pipeline"]
    report = evaluate(days, resolve_methods(methods, SETTINGS), holdout_days=3, settings=SETTINGS)
    got = report["methods"]
    assert set(got) == set(methods)
    for name in methods:
        assert 0 <= got[name]["map@12"] <= 1 and got[name]["users_scored"] > 0
    assert got["pipeline"]["map@12"] > 0
