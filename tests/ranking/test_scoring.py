"""Compiled tree scoring against LightGBM itself, on small real models trained here."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from shortlist.errors import ConfigError
from shortlist.ranking.scoring import (
    CompiledScorer,
    LightGBMScorer,
    TreeScorer,
    library_path,
    load_scorer,
)

N_FEATURES = 8
CATEGORICAL = [0, 1]  # 0: 30 codes, 1: 5 codes
NO_NAN_IN_TRAINING = 7  # LightGBM then maps NaN to 0 for this feature ("none" missing type)
GROUP = 30


def make_rows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    X = rng.normal(size=(n, N_FEATURES))
    X[:, 0] = rng.integers(0, 30, n)
    X[:, 1] = rng.integers(0, 5, n)
    signal = (
        1.5 * np.isin(X[:, 0], [1, 4, 9, 16, 25])
        + (X[:, 1] == 2)
        + X[:, 2]
        + np.sin(2 * X[:, 3]) * X[:, 4]
        + 0.5 * X[:, NO_NAN_IN_TRAINING]
    )
    missing = rng.random(X.shape) < 0.1
    missing[:, NO_NAN_IN_TRAINING] = False
    X[missing] = np.nan
    return X, signal + rng.normal(scale=0.5, size=n)


def train(objective: str, path: Path, rounds: int = 50, **extra) -> Path:
    rng = np.random.default_rng(0)
    X, score = make_rows(rng, 3000)
    params = {"objective": objective, "num_leaves": 31, "min_data_in_leaf": 10, "verbosity": -1}
    params |= {"min_data_per_group": 5, "cat_smooth": 1.0, "num_threads": 1}  # 1: shared CPUs
    if objective == "lambdarank":
        y = np.digitize(score, np.quantile(score, [0.7, 0.9, 0.97]))
        data = lgb.Dataset(X, y, group=[GROUP] * (len(X) // GROUP), categorical_feature=CATEGORICAL)
    else:
        data = lgb.Dataset(X, score > np.quantile(score, 0.8), categorical_feature=CATEGORICAL)
    lgb.train({**params, **extra}, data, num_boost_round=rounds).save_model(str(path))
    return path


def edge_rows(model_path: Path, n: int = 3000) -> np.ndarray:
    """Random rows, with every numeric threshold hit exactly and one step either side, NaN,
    zero and +-1e-35 (LightGBM's zero threshold), infinities, and categorical codes that are
    unseen, negative, fractional in (-1, 0) or beyond any bitset."""
    rng = np.random.default_rng(1)
    X, _ = make_rows(rng, n)
    X[:, 0] = rng.integers(-2, 40, n)  # 30..39 unseen, -2..-1 negative
    cuts = lgb.Booster(model_file=str(model_path)).trees_to_dataframe()
    cuts = cuts[cuts.decision_type == "<="]
    for f in range(N_FEATURES):
        if f in CATEGORICAL:
            pool = np.array([-0.5, -0.99, -1.0, 2.7, 4.2, 1e6, 2.0**24 + 1, np.inf])
        else:
            t = cuts.threshold[cuts.split_feature == f"Column_{f}"].to_numpy(dtype=np.float64)
            tiny = [0.0, -0.0, 1e-35, -1e-35, 1e-36, float(np.float32(1e-35)), np.inf, -np.inf]
            pool = np.concatenate([t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf), tiny])
        chosen = rng.random(n) < 0.3
        X[chosen, f] = rng.choice(pool, chosen.sum())
    X[rng.random(X.shape) < 0.1] = np.nan
    return X


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {o: train(o, folder / f"{o}.txt") for o in ("binary", "lambdarank")}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compiled")


@pytest.fixture(scope="module")
def compiled(models: dict[str, Path], cache: Path) -> dict[str, CompiledScorer]:
    """Both models compiled once and loaded in the same process."""
    return {o: CompiledScorer(path, cache) for o, path in models.items()}


@pytest.mark.parametrize("objective", ["binary", "lambdarank"])
def test_compiled_equals_lightgbm_raw_scores(objective, models, compiled):
    scorer, reference = compiled[objective], LightGBMScorer(models[objective])
    assert scorer.compiled_now and scorer.name == "compiled"
    assert isinstance(scorer, TreeScorer) and isinstance(reference, TreeScorer)
    X = edge_rows(models[objective])
    want = reference.predict(X)
    assert_same(scorer.predict(X), want)
    assert_same(scorer.predict(X[:300]), want[:300])  # one request
    assert_same(scorer.predict(X[:1]), want[:1])
    assert scorer.predict(X[:0]).shape == (0,)
    # float32 rows (as the feature pipeline makes them) are read without conversion
    with np.errstate(over="ignore"):  # thresholds beyond float32 become infinities
        X32 = X.astype(np.float32)
    assert_same(scorer.predict(X32), reference.predict(X32))
    # a non-contiguous view and a batch split over threads
    assert_same(scorer.predict(np.asfortranarray(X)), want)
    big = np.vstack([X] * 3)
    assert_same(scorer.predict(big, nthread=2), np.concatenate([want] * 3))


def test_categorical_value_that_reads_as_missing_is_scored_by_lightgbm(models, compiled):
    """The generated code flags a missing value with the int -1 in the low 4 bytes of an
    8-byte slot: a categorical value with those bytes all ones would be read as missing."""
    X = edge_rows(models["binary"], 50)
    X[:, 0] = np.nan
    bits = np.array([3.0, 4.0, 16.0]).view(np.uint64) | np.uint64(0xFFFFFFFF)
    X[:3, 0] = bits.view(np.float64)  # 3.0000000019..., 4.000000003..., 16.00000001...
    assert np.floor(X[:3, 0]).tolist() == [3.0, 4.0, 16.0]
    assert_same(compiled["binary"].predict(X), LightGBMScorer(models["binary"]).predict(X))


def test_second_load_reuses_the_library(models, cache, compiled):
    first = compiled["lambdarank"]
    before = first.library.stat()
    again = CompiledScorer(models["lambdarank"], cache)
    assert not again.compiled_now and again.compile_seconds == 0.0
    assert again.library == first.library and again.library.parent == cache
    after = again.library.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    model_hash = hashlib.sha256(models["lambdarank"].read_bytes()).hexdigest()[:16]
    assert first.library.name.startswith(f"{model_hash}-") and first.library.suffix == ".so"
    assert sorted(p.suffix for p in cache.iterdir()) == [".so", ".so"]  # no build leftovers
    X = edge_rows(models["lambdarank"], 200)
    assert_same(again.predict(X), first.predict(X))
    scorer = load_scorer(models["lambdarank"], cache)
    assert isinstance(scorer, CompiledScorer) and not scorer.compiled_now


def test_a_damaged_cached_library_is_rebuilt(models, tmp_path, caplog):
    path = models["binary"]
    library = library_path(path.read_bytes(), tmp_path / "cache")
    library.parent.mkdir()
    library.write_bytes(b"\x7fELF truncated")
    with caplog.at_level(logging.WARNING, logger="shortlist.ranking"):
        scorer = CompiledScorer(path, tmp_path / "cache")
    assert scorer.compiled_now and scorer.library == library
    assert any("recompiling" in r.getMessage() for r in caplog.records)
    X = edge_rows(path, 200)
    assert_same(scorer.predict(X), LightGBMScorer(path).predict(X))


def test_compiled_false_gives_lightgbm_without_warning(models, cache, caplog):
    with caplog.at_level(logging.WARNING, logger="shortlist.ranking"):
        scorer = load_scorer(models["binary"], cache, compiled=False)
    assert isinstance(scorer, LightGBMScorer) and scorer.name == "lightgbm"
    assert not caplog.records
    X = edge_rows(models["binary"], 100)
    want = lgb.Booster(model_file=str(models["binary"])).predict(X, raw_score=True)
    assert_same(scorer.predict(X), want)


def test_falls_back_with_a_warning_when_no_compiler(models, tmp_path, monkeypatch, caplog):
    """A fresh machine without gcc: nothing cached, nothing to compile with."""
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("CC", raising=False)
    with caplog.at_level(logging.WARNING, logger="shortlist.ranking"):
        scorer = load_scorer(models["binary"], tmp_path / "cache")
    assert isinstance(scorer, LightGBMScorer)
    assert any("no C compiler" in r.getMessage() for r in caplog.records)
    assert not list((tmp_path / "cache").glob("*.so"))


def test_falls_back_with_a_warning_on_zero_as_missing(tmp_path, caplog):
    """Splits where zero means missing are not reproduced by the generated code: refused."""
    path = train("binary", tmp_path / "zero.txt", rounds=10, zero_as_missing=True)
    with caplog.at_level(logging.WARNING, logger="shortlist.ranking"):
        scorer = load_scorer(path, tmp_path / "cache")
    assert isinstance(scorer, LightGBMScorer)
    assert any("zero-as-missing" in r.getMessage() for r in caplog.records)
    X = edge_rows(path, 100)
    assert_same(scorer.predict(X), lgb.Booster(model_file=str(path)).predict(X, raw_score=True))


def test_bad_model_path_and_bad_model_text(tmp_path):
    missing = tmp_path / "nope" / "ranker.txt"
    for compiled in (True, False):
        with pytest.raises(FileNotFoundError, match="ranker.txt"):
            load_scorer(missing, tmp_path / "cache", compiled=compiled)
    with pytest.raises(FileNotFoundError):
        CompiledScorer(missing, tmp_path / "cache")
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("this is not a model\n")
    for compiled in (True, False):
        with pytest.raises(ConfigError, match="not a LightGBM text model"):
            load_scorer(garbage, tmp_path / "cache", compiled=compiled)
    assert not list(tmp_path.glob("cache/*.so"))


def test_wrong_number_of_features_is_refused(models, compiled):
    for scorer in (compiled["binary"], LightGBMScorer(models["binary"])):
        with pytest.raises(ValueError, match=f"{N_FEATURES} features"):
            scorer.predict(np.zeros((3, N_FEATURES + 1)))
        with pytest.raises(ValueError):
            scorer.predict(np.zeros(N_FEATURES))


def test_library_loads_in_another_process(models, cache, compiled):
    """A served process opens the cached library without treelite, tl2cgen or gcc."""
    code = (
        "import sys, numpy as np; sys.modules['treelite'] = None; sys.modules['tl2cgen'] = None\n"
        "from shortlist.ranking.scoring import CompiledScorer\n"
        f"s = CompiledScorer({str(models['binary'])!r}, {str(cache)!r})\n"
        "assert not s.compiled_now\n"
        f"print(s.predict(np.zeros((2, {N_FEATURES}))).tolist())\n"
    )
    env = {**os.environ, "PATH": ""}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    want = LightGBMScorer(models["binary"]).predict(np.zeros((2, N_FEATURES)))
    assert_same(np.array(json.loads(out.stdout)), want)
