"""`Pipeline`: retrieve -> filter -> rank -> diversify -> take, declared in Python or TOML.

    pipeline = (Pipeline(workspace)
        .retrieve(TwoTower(k=100), Repurchase(k=50), CoPurchase(k=100), Trending(k=50))
        .filter(InStock(), AvailableInRegion(), AgeAllowed())
        .rank(Ranker())
        .diversify(by="product_type_name", method="round_robin")
        .take(12))
    result = pipeline.recommend(user_id, context={"cart": [...], "filters": {...}})

Declaring is free. `fit` binds a pipeline to the data before a cutoff, training what needs
training: that is how `shortlist evaluate` scores it, window by window, and how `shortlist
build` trains it at the end of the data before `save` writes it into the workspace. The first
`recommend` binds the pipeline to what was saved (`load`), once.
"""

from __future__ import annotations

import gc
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shortlist import resources
from shortlist.config import (
    FilterSettings,
    OnlineSettings,
    PipelineSettings,
    Settings,
    SourceSettings,
)
from shortlist.data.arrays import Dataset, TrainData, from_us, load_dataset, under
from shortlist.data.offline import OfflineStore
from shortlist.errors import ConfigError, WorkspaceError
from shortlist.pipeline.catalog import Catalog
from shortlist.pipeline.explain import explain_row
from shortlist.pipeline.funnel import Funnel, Output, bind_diversifier, bind_filter
from shortlist.pipeline.guard import RankingChoice
from shortlist.pipeline.live import LiveReader
from shortlist.pipeline.steps import Ranker, diversify_settings
from shortlist.pipeline.training import RankingGroups, fit_ranker, ranking_features
from shortlist.progress import track
from shortlist.ranking.features import RankingFeatures
from shortlist.ranking.ranker import LightGBMRanker
from shortlist.retrieval.sources import TrendingSource
from shortlist.retrieval.stage import Retrieval, make_retrieval
from shortlist.workspace import Workspace, open_workspace

if TYPE_CHECKING:
    from shortlist.features.online.base import OnlineStore
    from shortlist.pipeline.search import SearchResult
    from shortlist.retrieval.text import TextIndex


@dataclass(frozen=True)
class RecommendedItem:
    item_id: str
    score: float | None  # the ranker's raw score; None for top-up items
    sources: dict[str, int]  # source -> rank at which it proposed the item
    reasons: list[str] | None = None  # with explain=True
    attributes: dict[str, Any] = field(default_factory=dict)  # display attributes, last price

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.attributes,  # first: an attribute called "score" cannot hide the score
            "item_id": self.item_id,
            "score": self.score,
            "sources": self.sources,
        }
        if self.reasons is not None:
            out["reasons"] = self.reasons
        return out


@dataclass(frozen=True)
class Recommendation:
    user_id: str
    items: list[RecommendedItem]
    trace: list[dict[str, Any]] = field(default_factory=list)

    @property
    def item_ids(self) -> list[str]:
        return [i.item_id for i in self.items]

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "items": [i.to_dict() for i in self.items],
            "trace": self.trace,
        }


class Pipeline:
    """A funnel over one workspace; builder methods return a new pipeline."""

    def __init__(
        self,
        workspace: Workspace | str | Path | None = None,
        *,
        settings: PipelineSettings | None = None,
    ):
        self.workspace = (
            workspace if isinstance(workspace, Workspace) or workspace is None
            else open_workspace(workspace)
        )  # fmt: skip
        self.spec = settings or PipelineSettings(sources=[], filters=[], ranker="none")
        self.funnel_: Funnel | None = None
        self.cutoff_: int | None = None  # what the bound funnel was fitted before
        self.ranking_set_ = None  # after `fit`, what the ranker learnt from (ablations)
        self.ranking_: RankingChoice | None = None  # the guard's choice (pipeline/guard.py)
        # after `fit`: the feature groups, as of any cutoff (what `save` writes)
        self.groups_: RankingGroups | None = None
        self.timings_: dict[str, float] = {}  # seconds per step of `fit` and `save`
        self.online_: OnlineStore | None = None  # after `load`: where requests read users
        # after `load`: the text index of search (pipeline/search.py), or why there is none
        self.text_: TextIndex | None = None
        self.text_error_: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, workspace: Workspace | str | Path | None = None) -> Pipeline:
        """The pipeline `[pipeline]` of the workspace's shortlist.toml declares."""
        ws = workspace if isinstance(workspace, Workspace) else open_workspace(workspace)
        return cls(ws, settings=ws.settings().pipeline)

    # -- declaring ----------------------------------------------------------------------
    def _with(self, **changes: Any) -> Pipeline:
        spec = self.spec.model_copy(update=changes)
        return Pipeline(
            self.workspace, settings=PipelineSettings.model_validate(spec.model_dump(by_alias=True))
        )

    def retrieve(self, *sources: SourceSettings) -> Pipeline:
        return self._with(sources=[SourceSettings(**s.model_dump()) for s in sources])

    def filter(self, *filters: FilterSettings) -> Pipeline:
        return self._with(filters=[FilterSettings(**f.model_dump()) for f in filters])

    def rank(self, ranker: Ranker | None = None) -> Pipeline:
        return self._with(ranker="lightgbm" if ranker is not None else "none")

    def diversify(
        self, by: str = "", method: str = "round_robin", limit: int = 2, lambda_: float = 0.7
    ) -> Pipeline:
        return self._with(diversify=diversify_settings(by, method, limit, lambda_))

    def take(self, k: int) -> Pipeline:
        return self._with(k=k)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pipeline) and self.spec.model_dump() == other.spec.model_dump()

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        s = self.spec
        parts = [f"retrieve({', '.join(f'{x.name}:{x.k}' for x in s.sources)})"]
        if s.filters:
            parts.append(f"filter({', '.join(f.name for f in s.filters)})")
        parts.append(f"rank({s.ranker})")
        if s.diversify.method != "none":
            parts.append(f"diversify({s.diversify.method}, by={s.diversify.by or '-'})")
        parts.append(f"take({s.k})")
        return "Pipeline(" + " -> ".join(parts) + ")"

    # -- binding ------------------------------------------------------------------------
    def _settings(self) -> Settings:
        return self.workspace.settings() if self.workspace is not None else Settings()

    def load(self, online: OnlineSettings | None = None) -> Pipeline:
        """Bind to what `save` (run by `shortlist build`) left in the workspace: the two-tower
        model, its index, the ranker, the ranking features (the feature groups as of the
        cutoff, read from the feature store) and the funnel's fitted arrays (the sources'
        lists, the bought-before set, last prices: pipeline/state.py), memory-mapped. Nothing
        is refitted and no interaction is read: what is served is what was fitted, a load
        takes seconds, and processes serving one workspace share its pages.

        The loaded state then lives as long as the process, so it is moved out of the garbage
        collector's reach (`gc.freeze`): at full scale the collector walking it paused about
        one request in a hundred, some by hundreds of milliseconds (p99 15 ms -> 9 ms).

        online: the online store's settings for this process (the service's shorter
        timeouts), instead of the workspace's `[online]`; used by the first load only.

        Raises:
            WorkspaceError: nothing trained yet, or saved parts that do not belong together
            (another two-tower, index, ranker, state or offline store than the pipeline was
            trained with); the message says what to run.
        """
        with self._lock:
            if self.funnel_ is None:
                self.funnel_ = self._load(online)
                gc.collect()
                gc.freeze()
                resources.release_unused_memory()
        return self

    def _load(self, online_settings: OnlineSettings | None = None) -> Funnel:
        from shortlist.pipeline.saved import load_trained, read_manifest

        if self.workspace is None:
            raise WorkspaceError("this pipeline has no workspace: give one, or call fit()")
        settings = self._settings()
        resources.configure(settings)
        manifest = read_manifest(self.workspace)
        data = load_dataset(
            OfflineStore(self.workspace, interactions=False),
            read_interactions=False,
            priced=bool(manifest.get("priced", True)),
        )
        from shortlist.features.online.base import open_online_store

        # the users' ranking features (with a ranker) and what real-time events recorded
        # since the cutoff are read per request from the online store
        self.online_ = open_online_store(None, self.workspace, online_settings or settings.online)
        online = self.online_ if self.spec.ranker == "lightgbm" else None
        trained = load_trained(self.workspace, self.spec, settings, data, online, manifest)
        state = trained.state
        assert state is not None
        catalog = Catalog.from_dataset(data, price=state["catalog.price"])
        retrieval = make_retrieval(self.spec.sources, settings.retrieval, trained.two_tower)
        retrieval.restore(under("retrieval", state))
        features = trained.features  # read from the feature store, not recomputed
        if trained.ranker is not None:
            assert features is not None
            check_features(trained.ranker, features, retrieval)
        self.cutoff_ = trained.cutoff
        self.ranking_ = trained.ranking
        filters = [
            bind_filter(f, catalog, under(f"filter.{f.name}", state)) for f in self.spec.filters
        ]
        funnel = self._funnel(
            catalog,
            retrieval,
            state["fallback"],
            features,
            trained.ranker,
            trained.scorer,
            trained.ranking,
            filters,
        )
        funnel.live = LiveReader(
            self.online_,
            self.live_tag(catalog),
            sales=any(
                isinstance(s, TrendingSource) and s.segment is None for s, _ in retrieval.sources
            ),
            stock=True,
        )
        self._load_text(settings, data)
        return funnel

    def _load_text(self, settings: Settings, data: Dataset) -> None:
        """The workspace's text index (`search`), built from these items: missing or stale,
        search alone is refused (saying what to run), recommendations serve on."""
        import pandas as pd

        from shortlist.retrieval.text import items_digest, load_text_index

        self.text_, self.text_error_ = None, None
        if not settings.search.enabled or self.workspace is None:
            return
        items = data.items if data.items is not None else pd.DataFrame(index=range(data.n_items))
        try:
            self.text_ = load_text_index(self.workspace, settings.search, items=items_digest(items))
        except (WorkspaceError, ConfigError) as exc:
            self.text_error_ = str(exc)

    def live_tag(self, catalog: Catalog | None = None) -> dict[str, str]:
        """Whose events the online store's event groups hold: this pipeline's data and cutoff
        (features/online/live.py)."""
        catalog = catalog or (self.funnel_.catalog if self.funnel_ is not None else None)
        if catalog is None or self.cutoff_ is None:
            raise WorkspaceError("the pipeline is not bound to data yet: load() or fit() first")
        return {"data": str(catalog.data.fingerprint), "cutoff": from_us(self.cutoff_).isoformat()}

    def fit(self, data: Dataset, cutoff: int, settings: Settings | None = None) -> Pipeline:
        """Bind to the data before `cutoff`, training the two-tower and the ranker on it.

        The dataset is cut at `cutoff` first, so nothing bound (the bought-before filter, last
        prices) sees the window an evaluation scores. Its business rules are used as given:
        an evaluation passes `rules.as_of_past()`, a build the rules as they are.
        """
        settings = settings or self._settings()
        self.timings_ = {}
        started = time.perf_counter()
        past = data.before(cutoff)
        catalog = Catalog.from_dataset(past)
        train = TrainData.before(past, cutoff)
        retrieval = make_retrieval(self.spec.sources, settings.retrieval)
        ranker = features = None
        self.ranking_set_ = self.ranking_ = None
        self.groups_ = None
        if self.spec.ranker == "lightgbm":
            # one set of feature groups for every period and the cutoff
            self.groups_ = ranking_features(past, settings)
            # the two-tower trained for the ranking set's oldest period also serves the cutoff
            ranker, self.ranking_set_, self.ranking_ = fit_ranker(
                past, cutoff, retrieval, settings, self.groups_
            )
            # the two-tower (trained before the oldest period), the periods' candidates and
            # feature groups, the ranker and the guard's validation
            self.timings_["two-tower, ranking set and ranker"] = time.perf_counter() - started
        started = time.perf_counter()
        retrieval.fit(train)
        if ranker is not None:
            assert self.groups_ is not None
            features = self.groups_(cutoff)
            check_features(ranker, features, retrieval)
        self.cutoff_ = cutoff
        self.timings_["sources and features at the cutoff"] = time.perf_counter() - started
        # LightGBM's own predict: batches are large here; `load` compiles the trees to serve
        self.funnel_ = self._funnel(
            catalog, retrieval, _fallback_order(train), features, ranker, ranker, self.ranking_
        )
        return self

    def save(self) -> Path:
        """Write what `fit` trained into the workspace (two-tower, index, ranker) with the
        fingerprints that tie them together and to the data; `load` then serves exactly it.

        Raises:
            WorkspaceError: no workspace, or not fitted.
        """
        from shortlist.pipeline.saved import save_trained

        if self.workspace is None or self.funnel_ is None or self.cutoff_ is None:
            raise WorkspaceError("fit the pipeline on a workspace's data before saving it")
        features = None
        if self.groups_ is not None:  # the groups as of the cutoff, where `load` reads them
            from shortlist.features.online.live import live_layouts
            from shortlist.features.online.materialize import materialize_online

            started = time.perf_counter()
            versions = self.groups_.save(self.workspace, self.cutoff_)
            features = {"versions": versions, "eligible": self.groups_.eligible}
            self.timings_["feature groups written"] = time.perf_counter() - started
            # the same versions into the online store, where requests read the users' values,
            # with the empty event groups that real-time events update in place
            started = time.perf_counter()
            materialize_online(
                self.workspace,
                groups=list(versions),
                versions=versions,
                extra=live_layouts(self.live_tag()),
            )
            self.timings_["online store written"] = time.perf_counter() - started
        started = time.perf_counter()
        path = save_trained(
            self.workspace,
            self.spec,
            self.funnel_,
            self.cutoff_,
            self.ranking_,
            features,
            self.timings_,
        )
        self.timings_["models and state saved"] = time.perf_counter() - started
        self._compile_ranker()
        return path

    def _compile_ranker(self) -> None:
        """The served ranker's trees compiled now, into the workspace's cache where `load`
        looks, so that the first process to load the pipeline (the first `recommend`, a
        service starting or reloading) does not: a few seconds on the demo's data, 30-45 s
        for 500 trees. Nothing when the guard bypasses the ranker or [ranking] compiled is
        off; on a machine that cannot compile, the warning that loading gives (LightGBM's own
        predict serves) comes here first."""
        assert self.workspace is not None and self.funnel_ is not None
        bypassed = self.ranking_ is not None and self.ranking_.bypassed
        if self.funnel_.ranker is None or bypassed:
            return
        if not self._settings().ranking.compiled:
            return
        from shortlist.pipeline.saved import ranker_folder
        from shortlist.ranking.ranker import MODEL_FILE
        from shortlist.ranking.scoring import load_scorer

        started = time.perf_counter()
        folder = ranker_folder(self.workspace)
        with track("Compiling the ranker's trees"):
            load_scorer(folder / MODEL_FILE, folder / "compiled", compiled=True)
        self.timings_["ranker compiled"] = time.perf_counter() - started

    def _funnel(
        self, catalog, retrieval, fallback, features, ranker, scorer, ranking, filters=None
    ) -> Funnel:
        tt = retrieval.two_tower
        vectors = tt.item_vectors if tt is not None else None
        if filters is None:
            filters = [bind_filter(f, catalog) for f in self.spec.filters]
        return Funnel(
            catalog,
            retrieval,
            filters,
            features,
            ranker,
            scorer,
            bind_diversifier(self.spec.diversify, catalog, vectors),
            fallback,
            self.spec.k,
            ranking.order if ranking is not None else None,
            ranking.note if ranking is not None else "",
            ranking.new_customers if ranking is not None else None,
        )

    # -- running ------------------------------------------------------------------------
    def run(self, users: np.ndarray, request: Mapping[str, Any] | None = None, **kw: Any) -> Output:
        """The funnel for a batch of user idx (dense ids); see Funnel.run."""
        return self.load().funnel_.run(users, request, **kw)  # type: ignore[union-attr]

    def recommend(
        self,
        user_id: object,
        context: Mapping[str, Any] | None = None,
        *,
        explain: bool = False,
        k: int | None = None,
    ) -> Recommendation:
        """The top k for one user (`k`: this request's, default the pipeline's).

        context: "cart" (item ids, excluded), "exclude" (item ids), "filters" (the filter
        language of docs/index.md), "region" (name) and "age" (years) overriding the user's.

        Raises:
            NotFoundError: unknown user or item. FilterError: a malformed filter.
        """
        funnel = self.load().funnel_
        assert funnel is not None
        context = dict(context or {})
        unknown = set(context) - {"cart", "exclude", "filters", "region", "age"}
        if unknown:
            raise ConfigError(f"unknown context key '{sorted(unknown)[0]}'", key="context")
        user = funnel.catalog.user_idx(user_id)
        excluded = list(context.get("cart") or []) + list(context.get("exclude") or [])
        exclude = funnel.catalog.item_idx(excluded) if excluded else None
        out = funnel.run(np.array([user]), context, exclude=exclude, keep_features=explain, k=k)
        return self._result(str(user_id), out, explain)

    def search(
        self,
        query: str,
        user_id: object = None,
        context: Mapping[str, Any] | None = None,
        *,
        k: int = 24,
        personalize: bool = True,
    ) -> SearchResult:
        """The top k items for a text query, ordered for the user when one the workspace
        knows is given (see pipeline/search.py); `context` as for `recommend`, less the cart.

        Raises:
            RequestError: an empty or over-long query, a bad k, region or age. FilterError: a
            malformed filter. WorkspaceError: no (current) text index: `shortlist build`.
        """
        from shortlist.pipeline.search import search

        return search(self, query, user_id, context, k=k, personalize=personalize)

    def _result(self, user_id: str, out: Output, explain: bool) -> Recommendation:
        funnel = self.funnel_
        assert funnel is not None
        cs = out.candidates
        position = {i: j for j, i in enumerate(cs.items[0].tolist())} if cs is not None else {}
        # each source's rank of every candidate as Python ints, once (not 2 numpy reads per
        # source and item)
        ranks = {n: r[0].tolist() for n, r in cs.ranks.items()} if cs is not None else {}
        items = []
        for item, score in zip(out.items[0].tolist(), out.scores[0].tolist(), strict=True):
            if item < 0:
                continue
            j = position.get(item)
            sources = {n: r[j] for n, r in ranks.items() if r[j] > 0} if j is not None else {}
            score = score if math.isfinite(score) else None
            reasons = None
            if explain:
                x = out.features[0, j] if out.features is not None and j is not None else None
                reasons = explain_row(funnel, sources, x)
            items.append(
                RecommendedItem(
                    str(funnel.catalog.item_ids[item]),
                    score,
                    sources,
                    reasons,
                    funnel.catalog.describe(item),
                )
            )
        return Recommendation(user_id, items, out.trace)


def check_features(ranker: LightGBMRanker, features: RankingFeatures, retrieval: Retrieval) -> None:
    """The ranker must have been trained on exactly the features this funnel computes."""
    expected = features.feature_names(retrieval.names, retrieval.column_names)
    if list(ranker.names_) != expected:
        raise WorkspaceError(
            "the ranker was trained for other sources or features than this pipeline's: "
            "run `shortlist train pipeline` again"
        )


def _fallback_order(train: TrainData) -> np.ndarray:
    """Every item, most sold in the last week first, then the last 4 weeks, then ever."""

    def units(days: float | None) -> np.ndarray:
        inter = train.last_days(days) if days else train.interactions
        return np.bincount(inter.item, weights=inter.quantity, minlength=train.n_items)

    order = np.lexsort((np.arange(train.n_items), -units(None), -units(28), -units(7)))
    return order.astype(np.int64)
