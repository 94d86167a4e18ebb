"""What a bound funnel serves from besides its models, saved so that loading refits nothing.

The sources' fitted arrays (per-user purchase scores, co-purchase neighbour lists, trending lists
per segment, same-group lists, the histories the user tower reads), the bought-before set, the
last prices and the top-up order: `Pipeline.save` writes them as one `.npy` file each (no
pickle) into a new folder `models/state/<version>/`, named in models/pipeline.json; `load` maps
them back copy-on-write (`np.load(mmap_mode="c")`), so it reads no interactions, starts in
seconds whatever the data's size, and every process serving the workspace on one machine shares
the same pages of the page cache (a process that records an event writes to a private copy of
the pages it touches).

A folder is written in full under a temporary name and renamed into place, then the manifest
that names it is replaced: a loader sees an old complete state or a new complete one.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from shortlist.data.arrays import State
from shortlist.errors import WorkspaceError
from shortlist.workspace import Workspace

STATE_DIR = "models/state"
META = "state.json"


def state_root(workspace: Workspace) -> Path:
    return workspace.root / STATE_DIR


def write_state(workspace: Workspace, state: State) -> dict[str, object]:
    """Each array into a new version folder; returns {"version", "arrays", "bytes"} for the
    manifest. Names are dotted paths ("copurchase.neighbours.data"), one file each."""
    version = uuid.uuid4().hex[:16]
    root = state_root(workspace)
    tmp = root / f".{version}.tmp"
    tmp.mkdir(parents=True)
    meta: dict[str, dict[str, object]] = {}
    total = 0
    for name, value in state.items():
        array = np.ascontiguousarray(value)
        if array.dtype == object:
            raise TypeError(f"state '{name}' is not a numeric array")  # never pickled
        np.save(tmp / f"{name}.npy", array, allow_pickle=False)
        meta[name] = {"dtype": array.dtype.str, "shape": list(array.shape)}
        total += array.nbytes
    (tmp / META).write_text(json.dumps({"version": version, "arrays": meta}, indent=1) + "\n")
    os.replace(tmp, root / version)
    return {"version": version, "arrays": len(meta), "bytes": total}


def read_state(workspace: Workspace, version: str) -> State:
    """The arrays of a saved version, memory-mapped copy-on-write.

    Raises:
        WorkspaceError: the version is missing or incomplete (a file gone or of another shape).
    """
    folder = state_root(workspace) / version
    retrain = "run `shortlist train pipeline` (or `shortlist build --source DIR`)"
    try:
        meta = json.loads((folder / META).read_text())["arrays"]
    except (OSError, ValueError, KeyError):
        raise WorkspaceError(
            f"the pipeline's saved state {folder} is missing or unreadable: {retrain}"
        ) from None
    out: State = {}
    for name, spec in meta.items():
        path = folder / f"{name}.npy"
        try:
            # numpy cannot map an empty file region: small or empty arrays are read
            mode = "c" if np.prod(spec["shape"]) > 0 else None
            array = np.load(path, mmap_mode=mode, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise WorkspaceError(f"{path} cannot be read ({e}): {retrain}") from None
        if array.dtype.str != spec["dtype"] or list(array.shape) != spec["shape"]:
            raise WorkspaceError(f"{path} is not the array the pipeline saved: {retrain}")
        out[name] = array
    return out


def remove_other_states(workspace: Workspace, keep: str) -> None:
    """Every saved state but `keep` (after the manifest names it; a process still mapping an
    old one keeps its pages until it reloads)."""
    root = state_root(workspace)
    if root.is_dir():
        for folder in root.iterdir():
            if folder.name != keep:
                shutil.rmtree(folder, ignore_errors=True)
