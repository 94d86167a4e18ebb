"""The LightGBM ranker: trained on past periods, validated on the latest, saved as plain text.

Both objectives are tried when asked ("auto"): lambdarank optimises the order within a
request directly, binary learns calibrated purchase odds; which ranks better depends on the
data, so the latest period decides: MAP@12 over its buyers with all their candidates (the
guard's validation requests, when the pipeline passes them), else over its sampled requests.
The winner is then refitted on every period, latest included, for the number of rounds early
stopping found.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import lightgbm as lgb
import numpy as np

from shortlist.errors import ConfigError, WorkspaceError
from shortlist.progress import Advance, track
from shortlist.ranking.dataset import RankingSet
from shortlist.ranking.metrics import average_precision
from shortlist.resources import thread_count

OBJECTIVES = ("lambdarank", "binary")
MODEL_FILE, META_FILE = "ranker.txt", "ranker.json"


def group_map(scores: np.ndarray, y: np.ndarray, group: np.ndarray, k: int = 12) -> float:
    """Mean AP@k (the evaluation's metric) over groups with a positive row, ranked by score."""
    aps = []
    start = 0
    for size in group.tolist():
        s, t = scores[start : start + size], y[start : start + size]
        start += size
        if t.sum() > 0:
            ranked = np.argsort(-s, kind="stable")[:k].tolist()
            aps.append(average_precision(ranked, np.flatnonzero(t).tolist(), k))
    return float(np.mean(aps)) if aps else 0.0


@dataclass
class LightGBMRanker:
    """fit(train, valid) -> self; `predict` gives raw scores (higher ranks first)."""

    name = "lightgbm"

    objective: str = "auto"
    num_leaves: int = 0  # 0: grows with the data (see `capacity`)
    learning_rate: float = 0.05
    max_rounds: int = 500
    early_stopping: int = 40
    min_data_in_leaf: int = 0  # 0: grows with the data
    seed: int = 0
    threads: int = 0  # 0: one below 500k rows (threads only spin there), else [resources]
    booster_: lgb.Booster | None = None
    names_: list[str] = field(default_factory=list)
    categorical_: list[str] = field(default_factory=list)
    report_: dict[str, Any] = field(default_factory=dict)
    capacity_: tuple[int, int] = (63, 20)
    threads_: int = 1
    held_out_: tuple[lgb.Booster, int] | None = None  # the winner before the refit (see below)

    def capacity(self, rows: int, groups: int) -> tuple[int, int]:
        """(num_leaves, min_data_in_leaf): small trees on thin data, where a few hundred
        requests make 63-leaf trees memorise them; up to 63 leaves from ~750 requests on."""
        leaves = self.num_leaves or int(np.clip(groups // 12, 7, 63))
        min_leaf = self.min_data_in_leaf or int(np.clip(rows // 400, 20, 200))
        return leaves, min_leaf

    def _params(self, objective: str, threads: int | None = None) -> dict[str, Any]:
        leaves, min_leaf = self.capacity_
        params: dict[str, Any] = {
            "objective": objective,
            "learning_rate": self.learning_rate,
            "num_leaves": leaves,
            "min_data_in_leaf": min_leaf,
            "feature_fraction": 0.8,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            "seed": self.seed,
            "deterministic": True,
            "num_threads": threads or self.threads_,
            "verbosity": -1,
        }
        if objective == "lambdarank":
            params["lambdarank_truncation_level"] = 20
            params["eval_at"] = [12]
        return params

    def _dataset(self, rs: RankingSet, reference: lgb.Dataset | None = None) -> lgb.Dataset:
        return lgb.Dataset(
            rs.X,
            rs.y,
            group=rs.group,
            feature_name=rs.names,
            categorical_feature=rs.categorical,
            reference=reference,
            free_raw_data=False,
        )

    def fit(
        self,
        train: RankingSet,
        valid: RankingSet,
        held_out: Callable[[Callable[[np.ndarray], np.ndarray]], float] | None = None,
    ) -> Self:
        """Train on `train` with early stopping on `valid`, choose the objective, refit the
        winner on both. `held_out(score) -> MAP@12`, when given, scores an objective's
        booster on the validation requests with all their candidates (pipeline/guard.py), and
        that decides between the objectives instead of `valid`'s sampled negatives."""
        if self.objective not in (*OBJECTIVES, "auto"):
            raise ConfigError(
                f"ranking objective '{self.objective}' is not one of auto, "
                + ", ".join(OBJECTIVES),
                key="ranking.objective",
            )
        if train.positives == 0 or valid.positives == 0:
            raise WorkspaceError(
                "no purchases among the candidates of the training periods: the ranker has "
                "nothing to learn (more history, more periods or more candidates needed)"
            )
        choices = OBJECTIVES if self.objective == "auto" else (self.objective,)
        rows = len(train.y) + len(valid.y)
        self.capacity_ = self.capacity(rows, len(train.group))
        self.threads_ = self.threads or (1 if rows < 500_000 else thread_count())
        # Single-threaded trainings (small sets) of both objectives run side by side, one per
        # core; LightGBM releases the GIL. Each has its own Datasets: nothing shared is mutated.
        side_by_side = self.threads_ == 1 and len(choices) > 1 and thread_count() > 1
        boosters: dict[str, lgb.Booster] = {}
        with track(
            f"Ranker, {' and '.join(choices)}", total=self.max_rounds * len(choices)
        ) as advance:

            def one(objective: str) -> tuple[str, dict[str, Any]]:
                dtrain = self._dataset(train)
                booster = lgb.train(
                    self._params(objective),
                    dtrain,
                    num_boost_round=self.max_rounds,
                    valid_sets=[self._dataset(valid, dtrain)],
                    callbacks=[
                        lgb.early_stopping(self.early_stopping, verbose=False),
                        _progress(advance, objective),
                    ],
                )
                rounds = max(1, booster.best_iteration)
                predicted = booster.predict(valid.X, num_iteration=rounds)
                score = group_map(predicted, valid.y, valid.group)
                boosters[objective] = booster
                return objective, {"valid_map@12": score, "rounds": rounds}

            if side_by_side:
                with ThreadPoolExecutor(len(choices)) as pool:
                    results = dict(pool.map(one, choices))
            else:
                results = dict(map(one, choices))
        decides = "valid_map@12"
        if held_out is not None and len(choices) > 1:
            decides = "held_out_map@12"
            for objective, result in results.items():
                booster, rounds = boosters[objective], result["rounds"]
                result[decides] = held_out(
                    lambda X, b=booster, n=rounds: b.predict(
                        X, raw_score=True, num_iteration=n, num_threads=thread_count()
                    )
                )
        best = max(results, key=lambda o: results[o][decides])
        full = RankingSet.concat([train, valid])
        rounds = results[best]["rounds"]
        self.held_out_ = (boosters[best], rounds)
        with track(f"Ranker, {best} on every period", total=rounds) as advance:
            self.booster_ = lgb.train(
                self._params(best, self.threads or thread_count()),  # alone now: every core
                self._dataset(full),
                num_boost_round=rounds,
                callbacks=[_progress(advance)],
            )
        self.names_, self.categorical_ = list(train.names), list(train.categorical)
        self.report_ = {
            "objective": best,
            "num_leaves": self.capacity_[0],
            "min_data_in_leaf": self.capacity_[1],
            "candidates": results,
            "train_rows": len(train.y) + len(valid.y),
            "train_groups": len(train.group) + len(valid.group),
            "positives": train.positives + valid.positives,
        }
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.booster_ is None:
            raise WorkspaceError("the ranker is not trained")
        return self.booster_.predict(X, raw_score=True, num_threads=1)

    def predict_held_out(self, X: np.ndarray) -> np.ndarray:
        """Raw scores of the winning objective as trained on the older periods only, before
        the refit on every period: what may be judged on the latest period (pipeline/guard)."""
        if self.held_out_ is None:
            raise WorkspaceError("the ranker was not trained in this process")
        booster, rounds = self.held_out_
        return booster.predict(X, raw_score=True, num_iteration=rounds, num_threads=thread_count())

    def refit_held_out(
        self, rs: RankingSet, threads: int | None = None
    ) -> Callable[[np.ndarray], np.ndarray]:
        """The held-out winner's objective and rounds trained anew on `rs` (no early
        stopping), as raw scores of X: the guard's cross-fitted judge (pipeline/training.py).
        threads: LightGBM's (default: the ranker's setting, else every core)."""
        if self.held_out_ is None:
            raise WorkspaceError("the ranker was not trained in this process")
        rounds = self.held_out_[1]
        booster = lgb.train(
            self._params(self.report_["objective"], threads or self.threads or thread_count()),
            self._dataset(rs),
            num_boost_round=rounds,
        )
        return lambda X: booster.predict(X, raw_score=True, num_threads=thread_count())

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """(rows, features + 1) each feature's share of the raw score (last column: bias)."""
        if self.booster_ is None:
            raise WorkspaceError("the ranker is not trained")
        return self.booster_.predict(X, pred_contrib=True, num_threads=1)

    def importance(self) -> list[tuple[str, float]]:
        """Features by total split gain, largest first."""
        if self.booster_ is None:
            return []
        gain = self.booster_.feature_importance("gain")
        total = float(gain.sum()) or 1.0
        pairs = sorted(zip(self.names_, gain / total, strict=True), key=lambda p: -p[1])
        return [(n, float(g)) for n, g in pairs]

    # -- persistence: LightGBM's own text format and a JSON sidecar, nothing pickled ----------
    def save(self, folder: Path) -> Path:
        if self.booster_ is None:
            raise WorkspaceError("the ranker is not trained")
        folder.mkdir(parents=True, exist_ok=True)
        self.booster_.save_model(str(folder / MODEL_FILE))
        meta = {
            "features": self.names_,
            "categorical": self.categorical_,
            "report": self.report_,
            "importance": self.importance()[:30],
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2))
        return folder / MODEL_FILE

    @classmethod
    def load(cls, folder: Path) -> LightGBMRanker:
        model, meta = folder / MODEL_FILE, folder / META_FILE
        if not model.exists() or not meta.exists():
            raise WorkspaceError(f"no ranker in {folder}: run `shortlist train ranking` first")
        info = json.loads(meta.read_text())
        ranker = cls()
        ranker.booster_ = lgb.Booster(model_file=str(model))
        ranker.names_, ranker.categorical_ = info["features"], info["categorical"]
        ranker.report_ = info.get("report", {})
        if ranker.booster_.feature_name() != ranker.names_:
            raise ConfigError(f"{meta} does not describe the features of {model}")
        return ranker


def _progress(advance: Advance, label: str = "") -> Callable[[Any], None]:
    """A LightGBM callback moving a progress bar one round at a time, with the validation
    metric (when there is one) beside it."""

    def callback(env: Any) -> None:
        note = None
        if env.evaluation_result_list:
            _, metric, value, _ = env.evaluation_result_list[0][:4]
            note = f"{label}{': ' if label else ''}valid {metric} {value:.4f}"
        advance(1, note)

    return callback
