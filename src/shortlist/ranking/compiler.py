"""Compiling a LightGBM text model to a shared library: treelite and tl2cgen write the trees as
C (one nested if/else per tree), a small row loop of our own is added, and the machine's C
compiler builds it into a cache folder, named after the model text's hash (see scoring.py for
why the loop is ours and what the compiled scorer guarantees).

What the C code cannot reproduce (zero-as-missing splits, linear trees, several classes,
category codes beyond 2^24) is refused here, before compiling.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shortlist.errors import ConfigError

log = logging.getLogger("shortlist.ranking")

#: bump when the C loop, the flags or the checks change: a new key, so stale libraries are
#: never reused
BUILD_VERSION = 1
#: -O2 scores 3-5 % faster than -O1 here (the time is branch mispredictions, -O3 is no faster)
#: but compiles 500 trees in ~30-45 s instead of ~18 s on two shared cores: once per model
OPT_LEVEL = "-O2"
#: trees per translation unit (tl2cgen's parallel_comp): a unit runs over a block of rows
#: before the next one, so its code should stay in the instruction caches; gcc is also faster
#: on small functions, and the units compile in parallel
TREES_PER_UNIT, MAX_UNITS = 5, 512
#: tl2cgen's quantize: numeric values become bin indices once per row, splits compare ints
#: (~7 % faster at 500 trees, and a bin index can never read as missing)
QUANTIZE = True
ROW_BLOCK = 512  # rows per block: one request's candidates in one pass over the trees
_CAT_LIMIT = 1 << 24  # the generated code sends categories >= 2^24 right, LightGBM does not
_MISSING_ZERO = 1  # LightGBM decision_type bits 2-3: 0 none, 1 zero, 2 NaN


class CompileError(RuntimeError):
    """The model cannot be compiled here (no compiler, no treelite/tl2cgen, unsupported)."""


def _model_text(model_path: Path) -> bytes:
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"no LightGBM model at {model_path}")
    return model_path.read_bytes()


# -- LightGBM itself: the reference and the fallback -------------------------------------------


@dataclass
class _ModelInfo:
    num_feature: int
    categorical: np.ndarray  # bool per feature: split categorically somewhere
    categories: dict[int, np.ndarray] = field(default_factory=dict)  # feature -> codes seen
    thresholds: dict[int, np.ndarray] = field(default_factory=dict)  # feature -> numeric cuts
    ranges: dict[int, tuple[float, float]] = field(default_factory=dict)
    n_trees: int = 0


def _parse_model(text: bytes, source: Path) -> _ModelInfo:
    """The header and splits of a LightGBM text model; raises CompileError for what the
    generated C code gets wrong, ConfigError for text that is not a LightGBM model."""
    lines = text.decode(errors="replace").splitlines()
    if not lines or lines[0].strip() != "tree":
        raise ConfigError(f"{source} is not a LightGBM text model (it must start with 'tree')")
    header: dict[str, str] = {}
    trees: list[dict[str, str]] = []
    current = header
    for line in lines[1:]:
        if line.startswith("end of trees"):
            break
        if line.startswith("Tree="):
            current = {}
            trees.append(current)
            continue
        key, sep, value = line.partition("=")
        if sep:
            current[key] = value
    try:
        num_feature = int(header["max_feature_idx"]) + 1
        num_class = int(header.get("num_class", "1"))
        per_iteration = int(header.get("num_tree_per_iteration", "1"))
    except (KeyError, ValueError) as e:
        raise ConfigError(f"{source} is not a LightGBM text model: no {e}") from e
    if num_class != 1 or per_iteration != 1:
        raise CompileError(f"{num_class} classes: only one score per row is compiled")
    categorical = np.zeros(num_feature, dtype=bool)
    cuts: dict[int, list[np.ndarray]] = {}
    cats: dict[int, set[int]] = {}
    for tree in trees:
        if tree.get("is_linear", "0") != "0":
            raise CompileError("linear trees are not compiled")
        if "split_feature" not in tree:  # a single leaf
            continue
        feature = np.array(tree["split_feature"].split(), dtype=np.int64)
        decision = np.array(tree["decision_type"].split(), dtype=np.int64)
        threshold = np.array(tree["threshold"].split(), dtype=np.float64)
        if ((decision >> 2) & 3 == _MISSING_ZERO).any():
            raise CompileError("zero-as-missing splits (zero_as_missing=true) are not compiled")
        is_cat = (decision & 1).astype(bool)
        categorical[feature[is_cat]] = True
        for f in np.unique(feature[~is_cat]):
            cuts.setdefault(int(f), []).append(threshold[~is_cat & (feature == f)])
        if is_cat.any():
            bounds = np.array(tree["cat_boundaries"].split(), dtype=np.int64)
            words = np.array(tree["cat_threshold"].split(), dtype=np.uint64).astype(np.uint32)
            for f, index in zip(feature[is_cat], threshold[is_cat].astype(np.int64), strict=True):
                bits = np.unpackbits(
                    words[bounds[index] : bounds[index + 1]].view(np.uint8), bitorder="little"
                )
                codes = np.flatnonzero(bits)
                if len(codes) and codes[-1] >= _CAT_LIMIT:
                    raise CompileError(f"feature {f} has category codes >= 2^24")
                cats.setdefault(int(f), set()).update(codes.tolist())
    ranges = {}
    for f, info in enumerate(header.get("feature_infos", "").split()):
        if info.startswith("[") and f < num_feature:
            low, _, high = info.strip("[]").partition(":")
            ranges[f] = (float(low), float(high))
    return _ModelInfo(
        num_feature=num_feature,
        categorical=categorical,
        categories={f: np.array(sorted(c), dtype=np.float64) for f, c in cats.items()},
        thresholds={f: np.unique(np.concatenate(c)) for f, c in cuts.items()},
        ranges=ranges,
        n_trees=len(trees),
    )


# -- the C loop over rows, compiled beside tl2cgen's code ---------------------------------------

_ROWS_C = r"""/* shortlist: rows through tl2cgen's trees (see shortlist/ranking/scoring.py).
 * Tree-major: each unit of trees runs over a block of rows before the next unit, so a unit's
 * code stays in the instruction cache (row-major, the whole library streams per row). */
#include "header.h"

#define SL_NF @NUM_FEATURE@
#define SL_BLOCK @BLOCK@
#define SL_QUANTIZE @QUANTIZE@
#define SL_ZERO ((double)1e-35f) /* LightGBM's kZeroThreshold */

static const unsigned char sl_categorical[SL_NF] = {@CATEGORICAL@};
static const double sl_base_score = @BASE_SCORE@;
typedef void (*sl_unit_fn)(union Entry*, double*);
static const sl_unit_fn sl_units[] = {@UNITS@};
#define SL_N_UNITS (sizeof(sl_units) / sizeof(sl_units[0]))

/* One value as LightGBM reads it; 1 when a real value would read as missing. */
static inline int sl_set(union Entry* e, double v, int j) {
  if (isnan(v)) { e->missing = -1; return 0; }
  if (fabs(v) <= SL_ZERO) v = 0.0;                  /* LightGBM drops |v| <= kZeroThreshold */
  if (sl_categorical[j] && v > -1.0 && v < 0.0) v = 0.0;  /* LightGBM truncates to category 0 */
#if SL_QUANTIZE
  if (!sl_categorical[j]) { e->qvalue = quantize(v, (unsigned)j); return 0; }
#endif
  e->fvalue = v;
  return e->missing == -1;
}

/* The same additions in the same order as the generated predict(): bit-identical sums. */
static void sl_block(union Entry* entries, const unsigned char* flagged, int64_t n, double* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = 0.0;
  for (size_t u = 0; u < SL_N_UNITS; ++u) {
    for (int64_t i = 0; i < n; ++i) sl_units[u](entries + i * SL_NF, out + i);
  }
  for (int64_t i = 0; i < n; ++i) out[i] = flagged[i] ? NAN : out[i] + sl_base_score;
}

/* Raw scores of n_rows C-contiguous rows; the number of rows set to NaN for LightGBM to
 * score instead, or -1 when out of memory. */
#define SL_ROWS(NAME, T)                                                              \
  int64_t NAME(const T* X, int64_t n_rows, double* out) {                             \
    union Entry* entries = malloc(sizeof(union Entry) * SL_NF * SL_BLOCK);            \
    unsigned char flagged[SL_BLOCK];                                                  \
    int64_t n_flagged = 0;                                                            \
    if (!entries) return -1;                                                          \
    for (int64_t start = 0; start < n_rows; start += SL_BLOCK) {                      \
      int64_t n = n_rows - start < SL_BLOCK ? n_rows - start : SL_BLOCK;              \
      for (int64_t i = 0; i < n; ++i) {                                               \
        const T* x = X + (start + i) * SL_NF;                                         \
        union Entry* e = entries + i * SL_NF;                                         \
        int ambiguous = 0;                                                            \
        for (int j = 0; j < SL_NF; ++j) {                                             \
          ambiguous |= sl_set(e + j, (double)x[j], j);                              \
        }                                                                             \
        flagged[i] = (unsigned char)ambiguous;                                        \
        n_flagged += ambiguous;                                                       \
      }                                                                               \
      sl_block(entries, flagged, n, out + start);                                     \
    }                                                                                 \
    free(entries);                                                                    \
    return n_flagged;                                                                 \
  }

SL_ROWS(shortlist_rows_f64, double)
SL_ROWS(shortlist_rows_f32, float)
"""


def _find_compiler() -> str:
    candidates = [os.environ.get("CC", ""), "gcc", "cc", "clang"]
    for name in candidates:
        if name and " " not in name.strip() and (path := shutil.which(name.strip())):
            return path
    raise CompileError("no C compiler found (looked for $CC, gcc, cc, clang)")


def _build_tag(opt_level: str) -> str:
    """What else, besides the model text, decides the library's bytes."""
    try:
        from importlib.metadata import version

        versions = f"treelite {version('treelite')} tl2cgen {version('tl2cgen')}"
    except Exception:  # noqa: BLE001 - metadata missing: compiling will say why
        versions = "unknown"
    parts = (BUILD_VERSION, opt_level, TREES_PER_UNIT, ROW_BLOCK, QUANTIZE, versions, sys.platform)
    parts += (platform.machine(), _ROWS_C)
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def library_path(model_text: bytes, cache_dir: Path, opt_level: str = OPT_LEVEL) -> Path:
    """`<cache_dir>/<sha256 of the model text>[:16]-<build tag>[:8].so`."""
    model_hash = hashlib.sha256(model_text).hexdigest()[:16]
    return Path(cache_dir) / f"{model_hash}-{_build_tag(opt_level)[:8]}.so"


def _run(cmds: list[list[str]], cwd: Path, jobs: int) -> None:
    """Run compiler commands, `jobs` at a time; CompileError with the compiler's output."""

    def one(cmd: list[str]) -> tuple[list[str], subprocess.CompletedProcess[bytes]]:
        return cmd, subprocess.run(cmd, cwd=cwd, capture_output=True, check=False)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for cmd, done in pool.map(one, cmds):
            if done.returncode != 0:
                output = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
                raise CompileError(f"{' '.join(cmd)} failed ({done.returncode}): {output}")


def compile_model(
    model_path: Path,
    library: Path,
    *,
    opt_level: str = OPT_LEVEL,
    jobs: int | None = None,
    info: _ModelInfo | None = None,
    check: Callable[[Path], None] | None = None,
) -> float:
    """Compile the LightGBM text model into `library`; seconds taken. The library appears
    atomically and only once `check(built library)` passes (the scorer's: probe rows score
    as in LightGBM; CompileError otherwise)."""
    started = time.perf_counter()
    compiler = _find_compiler()
    try:
        import tl2cgen
        import treelite
    except ImportError as e:
        raise CompileError(f"treelite/tl2cgen not importable: {e}") from e
    text = _model_text(model_path)
    info = info or _parse_model(text, model_path)
    jobs = max(1, jobs or len(os.sched_getaffinity(0)))
    library.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=library.parent))
    try:
        # both libraries print their native logs to stdout (a CLI's output): keep them here
        chatter = io.StringIO()
        try:
            with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = treelite.frontend.load_lightgbm_model(str(model_path))
                base_scores = np.asarray(model.get_header_accessor().get_field("base_scores"))
                units = max(1, min(MAX_UNITS, -(-info.n_trees // TREES_PER_UNIT)))
                tl2cgen.generate_c_code(
                    model, work, {"parallel_comp": units, "quantize": int(QUANTIZE)}
                )
        except Exception as e:  # treelite/tl2cgen raise their own error types
            raise CompileError(f"treelite/tl2cgen could not convert the model: {e}") from e
        finally:
            if chatter.getvalue().strip():
                log.debug("treelite/tl2cgen: %s", chatter.getvalue().strip())
        unit_names = sorted(
            set(re.findall(r"\bpredict_unit(\d+)\(", (work / "header.h").read_text())), key=int
        )
        if not unit_names or base_scores.size != 1:
            raise CompileError("tl2cgen's generated code is not laid out as expected")
        if QUANTIZE:  # the loop quantizes the features treelite thinks numeric: the same?
            found = re.search(
                r"is_categorical\[\]\s*=\s*\{([^}]*)\}", (work / "main.c").read_text()
            )
            theirs = [int(v) for v in found.group(1).replace(",", " ").split()] if found else []
            if theirs != info.categorical.astype(int).tolist():
                raise CompileError("treelite and LightGBM disagree on the categorical features")
        fill = {
            "@NUM_FEATURE@": str(info.num_feature),
            "@BLOCK@": str(ROW_BLOCK),
            "@QUANTIZE@": str(int(QUANTIZE)),
            "@CATEGORICAL@": ", ".join("1" if c else "0" for c in info.categorical),
            "@BASE_SCORE@": repr(float(base_scores[0])),
            "@UNITS@": ", ".join(f"predict_unit{u}" for u in unit_names),
        }
        rows_c = _ROWS_C
        for key, value in fill.items():
            rows_c = rows_c.replace(key, value)
        (work / "shortlist_rows.c").write_text(rows_c)
        sources = sorted(p.stem for p in work.glob("*.c"))
        flags = [opt_level, "-fPIC", "-std=c99", "-fno-strict-aliasing"]
        _run([[compiler, "-c", *flags, "-o", f"{s}.o", f"{s}.c"] for s in sources], work, jobs)
        built = work / library.name
        link = [compiler, "-shared", "-Wl,-Bsymbolic", "-o", built.name]
        _run([[*link, *(f"{s}.o" for s in sources), "-lm"]], work, 1)
        if check is not None:
            check(built)
        os.replace(built, library)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return time.perf_counter() - started


def _probe_rows(info: _ModelInfo, n: int = 512, seed: int = 0) -> np.ndarray:
    """Rows that hit every kind of branch: thresholds exactly and one step either side,
    NaN, zero, out of range, seen and unseen categories, negative and fractional codes."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, info.num_feature))
    for f in range(info.num_feature):
        if info.categorical[f]:
            seen = info.categories.get(f, np.array([0.0]))
            pool = np.concatenate([seen, seen + 1, [-1.0, -0.5, 0.5, float(_CAT_LIMIT) + 1]])
        else:
            cuts = info.thresholds.get(f, np.array([0.0]))
            low, high = info.ranges.get(f, (-3.0, 3.0))
            pool = np.concatenate(
                [
                    cuts,
                    np.nextafter(cuts, np.inf),
                    np.nextafter(cuts, -np.inf),
                    rng.uniform(low, high, 32),
                    [0.0, -0.0, low - 1, high + 1, np.inf, -np.inf],
                ]
            )
        X[:, f] = rng.choice(pool, n)
        X[rng.random(n) < 0.15, f] = np.nan
    return X
