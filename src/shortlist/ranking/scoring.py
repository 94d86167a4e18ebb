"""Fast scoring of the LightGBM ranker for one request: the trees compiled to C.

LightGBM's own `Booster.predict` spends ~110 ns per (row, tree) on the development machine:
~10 ms for 300 rows on 300 trees of 63 leaves. `CompiledScorer` turns the saved text model into
C with treelite and tl2cgen (one nested if/else per tree), compiles it with the machine's C
compiler into a shared library kept in a cache folder (named after the model text's hash, so
the next load only opens it: a few ms), and calls it through ctypes: one call per request, on
the caller's thread. There it takes ~3.2 ms (p50) on 300 trees and ~5 ms on 500: about 3x
(benchmarks/bench_ranker.py).

The rows go through a small C loop of our own compiled into the same library, not tl2cgen's
`Predictor`/`DMatrix` runtime, for three reasons:

* speed: the loop is tree-major (a unit of a few trees runs over all the request's rows before
  the next unit, so the unit's code stays in the instruction cache; row-major, as tl2cgen's
  predict() goes, the whole ~1 MB library streams through the caches once per row: 7.9 ms
  instead of 3.2 ms). What remains is mostly branch mispredictions: the same row 300 times
  scores ~7x faster than 300 different rows.
* exactness: tl2cgen's generated code differs from LightGBM at three edges the loop closes.
  LightGBM reads |v| <= 1e-35 (its kZeroThreshold) as 0, which decides splits at +-1e-35;
  it truncates a categorical value in (-1, 0) to category 0 where the code sends it right;
  and the code marks a missing value with the int -1 in the low 4 bytes of an 8-byte slot
  (`union Entry`), so a categorical value with those 4 bytes all ones would read as missing:
  such rows (numeric values are quantized first, so only these) are scored by LightGBM.
* no OpenMP, no copy of the rows; float32 rows are read as they are.

What the C code cannot reproduce (zero-as-missing splits, linear trees, several classes,
category codes beyond 2^24) is refused before compiling, and a new library is checked against
LightGBM on probe rows (every threshold hit exactly and one step either side, NaN, unseen,
negative and fractional categories) before it is kept. `load_scorer` falls back to LightGBM,
with a warning, whenever compiling is impossible. Nothing is unpickled: the library is built
here from a LightGBM text model, so the cache folder must be as trusted as the model itself.
"""

from __future__ import annotations

import ctypes
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from shortlist.errors import ConfigError
from shortlist.ranking.compiler import (
    OPT_LEVEL,
    CompileError,
    _model_text,
    _ModelInfo,
    _parse_model,
    _probe_rows,
    compile_model,
    library_path,
)

log = logging.getLogger("shortlist.ranking")


@runtime_checkable
class TreeScorer(Protocol):
    """Raw scores (higher ranks first) of candidate rows, shape (n, num_feature) -> (n,)."""

    name: str

    def predict(self, X: np.ndarray) -> np.ndarray: ...


def _check_rows(X: np.ndarray, num_feature: int) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != num_feature:
        raise ValueError(f"expected rows of {num_feature} features, got shape {X.shape}")
    return X


class LightGBMScorer:
    """`lightgbm.Booster.predict(raw_score=True)` on `nthread` threads (1 for one request)."""

    name = "lightgbm"

    def __init__(self, model_path: Path, *, nthread: int = 1):
        import lightgbm as lgb

        text = _model_text(model_path)
        try:
            self.booster = lgb.Booster(model_str=text.decode())
        except (lgb.basic.LightGBMError, UnicodeDecodeError) as e:
            raise ConfigError(f"{model_path} is not a LightGBM text model: {e}") from e
        self.model_path = Path(model_path)
        self.num_feature = self.booster.num_feature()
        self.nthread = nthread

    def predict(self, X: np.ndarray, *, nthread: int | None = None) -> np.ndarray:
        X = _check_rows(X, self.num_feature)
        threads = nthread or self.nthread
        return self.booster.predict(X, raw_score=True, num_threads=threads).reshape(-1)


# -- the model text: what the C code must reproduce --------------------------------------------


def _self_check(library: Path, model_path: Path, info: _ModelInfo) -> None:
    compiled = CompiledScorer._open(library, model_path, info.num_feature)
    reference = LightGBMScorer(model_path)
    X = _probe_rows(info)
    got, want = compiled.predict(X), reference.predict(X)
    bad = ~np.isclose(got, want, rtol=1e-5, atol=1e-6)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CompileError(
            f"compiled scores differ from LightGBM on {int(bad.sum())} of {len(X)} probe rows "
            f"(row {i}: {got[i]!r} vs {want[i]!r})"
        )


# -- the compiled library -----------------------------------------------------------------------


class CompiledScorer:
    """The trees as a shared library: `predict` is one C call on the caller's thread."""

    name = "compiled"

    def __init__(
        self,
        model_path: Path,
        cache_dir: Path,
        *,
        nthread: int = 1,
        opt_level: str = OPT_LEVEL,
        jobs: int | None = None,
    ):
        model_path = Path(model_path)
        text = _model_text(model_path)
        library = library_path(text, cache_dir, opt_level)
        self.compiled_now = False
        self.compile_seconds = 0.0
        if library.is_file():
            try:
                self._init(library, model_path, nthread)
                return
            except CompileError as e:  # damaged or foreign: build it again
                log.warning("recompiling %s: %s", library, e)
                library.unlink(missing_ok=True)
        info = _parse_model(text, model_path)
        self.compile_seconds = compile_model(
            model_path,
            library,
            opt_level=opt_level,
            jobs=jobs,
            info=info,
            check=lambda built: _self_check(built, model_path, info),
        )
        self.compiled_now = True
        log.info("compiled %s into %s in %.1f s", model_path, library, self.compile_seconds)
        self._init(library, model_path, nthread)

    @classmethod
    def _open(cls, library: Path, model_path: Path, num_feature: int) -> CompiledScorer:
        self = cls.__new__(cls)
        self.compiled_now, self.compile_seconds = False, 0.0
        self._init(library, model_path, 1)
        if self.num_feature != num_feature:
            raise CompileError(f"{library} takes {self.num_feature} features, not {num_feature}")
        return self

    def _init(self, library: Path, model_path: Path, nthread: int) -> None:
        try:
            lib = ctypes.CDLL(str(library))
        except OSError as e:
            raise CompileError(f"cannot load {library}: {e}") from e
        try:
            lib.get_num_feature.restype = ctypes.c_int32
            lib.get_threshold_type.restype = ctypes.c_char_p
            rows = {
                np.dtype(np.float64): lib.shortlist_rows_f64,
                np.dtype(np.float32): lib.shortlist_rows_f32,
            }
        except AttributeError as e:
            raise CompileError(f"{library} is not a library built by this module: {e}") from e
        if lib.get_threshold_type() != b"float64":
            raise CompileError(f"{library} compares float32 thresholds, LightGBM float64")
        for fn in rows.values():
            fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
            fn.restype = ctypes.c_int64
        self._lib, self._rows = lib, rows
        self.library, self.model_path = library, model_path
        self.num_feature = int(lib.get_num_feature())
        self.nthread = nthread
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._reference: LightGBMScorer | None = None

    def _score(self, X: np.ndarray, out: np.ndarray) -> int:
        flagged = self._rows[X.dtype](X.ctypes.data, X.shape[0], out.ctypes.data)
        if flagged < 0:
            raise MemoryError("the compiled scorer could not allocate its row buffer")
        return flagged

    def predict(self, X: np.ndarray, *, nthread: int | None = None) -> np.ndarray:
        """Raw scores, float64 (n,). `nthread` > 1 splits large batches over threads (the
        C call releases the GIL); one request should stay on one thread."""
        X = _check_rows(X, self.num_feature)
        if X.dtype not in self._rows:
            X = X.astype(np.float64)
        X = np.ascontiguousarray(X)
        out = np.empty(X.shape[0], dtype=np.float64)
        threads = min(nthread or self.nthread, max(1, X.shape[0] // 1024))
        if threads <= 1:
            flagged = self._score(X, out)
        else:
            if self._pool is None or self._pool_size < threads:
                self._pool, self._pool_size = ThreadPoolExecutor(max_workers=threads), threads
            bounds = np.linspace(0, X.shape[0], threads + 1).astype(int)
            parts = [(X[a:b], out[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
            flagged = sum(self._pool.map(lambda p: self._score(*p), parts))
        if flagged:  # values the generated code would read as missing: LightGBM scores them
            rows = np.flatnonzero(np.isnan(out))
            if self._reference is None:
                self._reference = LightGBMScorer(self.model_path)
            out[rows] = self._reference.predict(X[rows])
        return out


def load_scorer(
    model_path: Path, cache_dir: Path, *, compiled: bool = True, nthread: int = 1
) -> TreeScorer:
    """The compiled scorer when this machine can build (or has built) it, else LightGBM's
    own predict with a warning on logger "shortlist.ranking" saying why."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"no LightGBM model at {model_path}")
    if compiled:
        try:
            return CompiledScorer(model_path, cache_dir, nthread=nthread)
        except (CompileError, OSError) as e:  # OSError: e.g. a read-only cache folder
            log.warning("scoring %s with LightGBM, not compiled: %s", model_path, e)
    return LightGBMScorer(model_path, nthread=nthread)
