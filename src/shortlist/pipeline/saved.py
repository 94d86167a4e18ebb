"""A fitted pipeline on disk: the models it trained, and a manifest that ties them together.

`save_trained` writes the two-tower model, its item index and the ranker, each where the
workspace keeps it (models/two_tower/, index/items/, models/ranker/), and models/pipeline.json
with the cutoff, the fingerprint of the offline store it was fitted on, the sources, and the
fingerprint of each model. `load_trained` refuses any part that is not the one recorded, with
the command that mends it: what is served is what was fitted (and, in `evaluate`, measured).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shortlist.config import PipelineSettings, Settings
from shortlist.data.arrays import Dataset, State, from_us, under
from shortlist.errors import WorkspaceError
from shortlist.pipeline.guard import RankingChoice
from shortlist.pipeline.state import read_state, remove_other_states, write_state
from shortlist.ranking.features import RANKING_GROUPS, RankingFeatures
from shortlist.ranking.ranker import MODEL_FILE, LightGBMRanker
from shortlist.retrieval.build import index_folder, model_folder
from shortlist.retrieval.sources import TwoTowerSource
from shortlist.workspace import Workspace, file_digest

if TYPE_CHECKING:
    from shortlist.features.online.base import OnlineStore
    from shortlist.pipeline.funnel import Funnel
    from shortlist.ranking.scoring import TreeScorer

MANIFEST = "models/pipeline.json"
RANKER_DIR = "models/ranker"
FORMAT_VERSION = 1
RETRAIN = "run `shortlist train pipeline` (or `shortlist build --source DIR`)"


def ranker_folder(workspace: Workspace) -> Path:
    return workspace.root / RANKER_DIR


@dataclass(frozen=True)
class Trained:
    """The saved parts of a pipeline, checked and loaded."""

    cutoff: int  # microseconds: the pipeline was fitted on the data before it
    two_tower: TwoTowerSource | None
    ranker: LightGBMRanker | None
    scorer: TreeScorer | None
    ranking: RankingChoice | None  # the guard's choice: the ranker, or a source order
    # the ranker's features, read from the feature store's groups the pipeline saved
    features: RankingFeatures | None = None
    state: State | None = None  # the funnel's fitted arrays (pipeline/state.py), mapped


def _sources(spec: PipelineSettings) -> list[dict[str, Any]]:
    return [s.model_dump() for s in spec.sources]


def save_trained(
    workspace: Workspace,
    spec: PipelineSettings,
    funnel: Funnel,
    cutoff: int,
    ranking: RankingChoice | None = None,
    features: dict[str, Any] | None = None,
    steps: dict[str, float] | None = None,
) -> Path:
    """Write the funnel's trained parts and the manifest (last, so a manifest on disk means
    every part it names is there). Returns the manifest's path."""
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "cutoff": from_us(cutoff).isoformat(),
        "cutoff_us": cutoff,
        "data": funnel.catalog.data.fingerprint,
        "sources": _sources(spec),
        "two_tower": None,
        "index": None,
        "ranker": None,
    }
    tt = funnel.retrieval.two_tower
    if tt is not None:
        manifest.update(tt.save(model_folder(workspace), index_folder(workspace)))
    if funnel.ranker is not None:
        folder = ranker_folder(workspace)
        funnel.ranker.save(folder)
        manifest["ranker"] = file_digest(folder / MODEL_FILE)
        manifest["ranker_report"] = funnel.ranker.report_
    if ranking is not None:
        manifest["ranking"] = ranking.to_dict()
    if features is not None:
        manifest["features"] = features  # {"versions": {group: version}, "eligible": [...]}
    # what serving reads instead of refitting: sources' arrays, bought-before set, prices
    manifest["state"] = write_state(workspace, funnel.state())
    manifest["priced"] = funnel.catalog.data.interactions.price is not None
    manifest["steps"] = {k: round(v, 3) for k, v in (steps or {}).items()}  # seconds per step
    path = workspace.root / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)
    remove_other_states(workspace, keep=manifest["state"]["version"])
    return path


def read_manifest(workspace: Workspace) -> dict[str, Any]:
    path = workspace.root / MANIFEST
    if not path.is_file():
        raise WorkspaceError(
            f"no trained pipeline in {workspace.root}: run `shortlist build --source DIR` "
            "(or `shortlist train pipeline` on an ingested workspace)"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise WorkspaceError(f"{path} was written by another shortlist version: {RETRAIN}")
    return manifest


def load_trained(
    workspace: Workspace,
    spec: PipelineSettings,
    settings: Settings,
    data: Dataset,
    online: OnlineStore | None = None,
    manifest: dict[str, Any] | None = None,
) -> Trained:
    """The saved parts `spec` needs, each checked against the manifest.

    Raises:
        WorkspaceError: nothing saved, or a part that is not the one the pipeline was fitted
        with (another offline store, two-tower, index or ranker, other sources); the message
        names the part and what to run.
    """
    from shortlist.ranking.scoring import load_scorer
    from shortlist.retrieval.index import load_index
    from shortlist.retrieval.two_tower import TwoTowerModel

    m = manifest if manifest is not None else read_manifest(workspace)
    if "state" not in m:
        raise WorkspaceError(f"the pipeline was saved by an older shortlist: {RETRAIN}")
    if m["data"] != data.fingerprint:
        raise WorkspaceError(
            "the offline store changed since the pipeline was trained (it was fitted on data "
            f"up to {m['cutoff'][:10]}): {RETRAIN}"
        )
    two_tower = state = None
    if any(s.name == "two_tower" for s in spec.sources):
        if m["two_tower"] is None:
            raise WorkspaceError(f"the pipeline was trained without a two-tower source: {RETRAIN}")
        assert data.items is not None and data.users is not None
        state = read_state(workspace, m["state"]["version"])
        # the encoded inputs saved with the state (same data: checked above), not re-encoded
        inputs = under("retrieval.two_tower.inputs", state)
        model = TwoTowerModel.load(model_folder(workspace), data.items, data.users, inputs)
        if model.fingerprint_ != m["two_tower"]:
            raise WorkspaceError(
                f"{model_folder(workspace)} holds another model than the one the pipeline was "
                f"trained with (retrained by `shortlist train retrieval`?): {RETRAIN}"
            )
        index = load_index(index_folder(workspace), model=model.fingerprint_)
        if index.fingerprint_ != m["index"]:
            raise WorkspaceError(
                f"{index_folder(workspace)} is not the index the pipeline was trained with "
                f"(rebuilt by `shortlist index`?): {RETRAIN}"
            )
        two_tower = TwoTowerSource.from_model(model, index, settings.retrieval)
    ranker = scorer = None
    if spec.ranker == "lightgbm":
        if m["ranker"] is None:
            raise WorkspaceError(f"the pipeline was trained without a ranker: {RETRAIN}")
        if m["sources"] != _sources(spec):
            raise WorkspaceError(
                "the ranker was trained for other sources than this pipeline's ("
                + ", ".join(f"{s['name']}:{s['k']}" for s in m["sources"])
                + f"): {RETRAIN}"
            )
        folder = ranker_folder(workspace)
        ranker = LightGBMRanker.load(folder)
        if file_digest(folder / MODEL_FILE) != m["ranker"]:
            raise WorkspaceError(f"{folder} holds another ranker than the pipeline's: {RETRAIN}")
        ranking = RankingChoice.from_dict(m["ranking"]) if m.get("ranking") else None
        if ranking is None or not ranking.bypassed:  # a bypassed ranker is never scored
            scorer = load_scorer(
                folder / MODEL_FILE, folder / "compiled", compiled=settings.ranking.compiled
            )
        cutoff = int(m["cutoff_us"])
        features = _load_features(workspace, m, data, settings, cutoff, online)
    else:
        ranking = features = None
    if state is None:
        state = read_state(workspace, m["state"]["version"])
    return Trained(int(m["cutoff_us"]), two_tower, ranker, scorer, ranking, features, state)


def _load_features(
    workspace: Workspace,
    m: dict[str, Any],
    data: Dataset,
    settings: Settings,
    cutoff: int,
    online: OnlineStore | None = None,
) -> RankingFeatures:
    """The ranker's features as the pipeline saved them: the feature store's versions of the
    ranking groups at the pipeline's cutoff (nothing recomputed). With an online store, the
    user groups are not read here: each request reads its users' rows from the store
    (ranking/online.py), which must hold the same versions."""
    from shortlist.features.store import FeatureStore
    from shortlist.ranking.online import USER_GROUPS, OnlineUsers

    saved = m.get("features")
    if not saved:
        raise WorkspaceError(f"the pipeline was saved without its feature groups: {RETRAIN}")
    lacking = [name for name in RANKING_GROUPS if name not in saved["versions"]]
    if lacking:
        raise WorkspaceError(
            f"the pipeline was saved without the {', '.join(map(repr, lacking))} feature "
            f"group(s), which this version of shortlist ranks with: {RETRAIN}"
        )
    store = FeatureStore(workspace)
    groups = {}
    for name in RANKING_GROUPS:
        version = saved["versions"].get(name)
        entry = next((v for v in store.versions(name) if v.version == version), None)
        if entry is None or entry.cutoff != from_us(cutoff):
            raise WorkspaceError(
                f"the feature store ({store.root}) no longer has version {version} of the "
                f"'{name}' group, which the pipeline was trained with: {RETRAIN}"
            )
        if online is not None and name in USER_GROUPS:
            groups[name] = store.read_empty(name, version)
        else:
            groups[name] = store.read(name, version)
    r = settings.ranking
    features = RankingFeatures(
        max_values=r.max_category_values, affinity_attributes=r.affinity_attributes
    ).from_groups(groups, cutoff, data, saved["eligible"])
    if online is not None:
        features.online_ = OnlineUsers(features, online, data, saved["versions"], saved["eligible"])
    return features
