"""The whole funnel on a tiny generated workspace: `shortlist build`, then the Pipeline API,
`recommend` and `predict` as a user runs them (real LightGBM, FAISS, torch, DuckDB)."""

from __future__ import annotations

import csv
import json
import re
import shutil

import numpy as np
import pytest

from shortlist.data.arrays import end_of_data, load_dataset
from shortlist.data.generator import generate
from shortlist.data.offline import OfflineStore
from shortlist.errors import FilterError, NotFoundError, RequestError, WorkspaceError
from shortlist.filtering import FilterContext
from shortlist.pipeline import (
    AgeAllowed,
    AvailableInRegion,
    CoPurchase,
    InStock,
    NotBoughtBefore,
    Pipeline,
    Ranker,
    Repurchase,
    SameGroup,
    Trending,
    TwoTower,
)
from shortlist.pipeline.build import train_pipeline
from shortlist.workspace import open_workspace
from tests.conftest import write
from tests.test_cli import shortlist

FAST = """
[retrieval]
epochs = 2
max_epochs = 2
min_steps = 0
batch_size = 512
dim = 32
hidden = 64

[ranking]
weeks = 3
max_weeks = 3
"""


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    generate(root / "src", scale="tiny", seed=4)
    write(root / "ws", "shortlist.toml", FAST)
    result = shortlist("--workspace", str(root / "ws"), "build", "--source", str(root / "src"),
                       "--format", "hm")  # fmt: skip
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())
    assert "2/2 pipeline trained and saved, its feature groups written to the feature " in said
    assert "store and the online store" in said
    return open_workspace(root / "ws")


@pytest.fixture(scope="module")
def pipeline(ws) -> Pipeline:
    return Pipeline.from_config(ws).load()


@pytest.fixture(scope="module")
def user_ids(ws, pipeline) -> list[str]:
    data = load_dataset(OfflineStore(ws))  # a loaded pipeline holds no interactions
    active = np.unique(data.interactions.user[-2000:])[:5]  # recent buyers
    return [str(pipeline.funnel_.catalog.user_ids[u]) for u in active]


def test_recommend_from_the_cli_with_reasons_and_trace(ws, user_ids):
    result = shortlist("--workspace", str(ws.root), "recommend", "--user", user_ids[0],
                       "--explain", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    ids = [i["item_id"] for i in got["items"]]
    assert len(ids) == 12 == len(set(ids))
    assert all(i["reasons"] for i in got["items"])
    ranked = [i for i in got["items"] if i["sources"]]
    assert ranked and any("raises the score" in r or "lowers the score" in r
                          for r in ranked[0]["reasons"])  # fmt: skip
    assert [s["stage"] for s in got["trace"]] == ["retrieve", "filter", "rank", "take"]
    # each item says what it is: its display attributes (names) and the price it last sold at
    assert {"product_type_name", "colour_group_name", "price"} <= set(got["items"][0])
    table = shortlist("--workspace", str(ws.root), "recommend", "--user", user_ids[0], "--trace")
    assert table.returncode == 0, table.stderr
    assert "Trace" in table.stdout and "retrieve" in table.stdout and "{" not in table.stdout
    # the ranker's trees score (compiled to C, or LightGBM's own), alone or in a blend
    assert re.fullmatch(r"(compiled|lightgbm)|blend: .+ \((compiled|lightgbm)\)",
                        got["trace"][2]["scorer"])  # fmt: skip
    assert 0 < got["trace"][2]["score_ms"] <= got["trace"][2]["ms"]


def test_the_toml_pipeline_equals_the_same_pipeline_in_python(ws, pipeline, user_ids):
    python = (
        Pipeline(ws)
        .retrieve(
            Repurchase(k=50),
            SameGroup(k=50),
            CoPurchase(k=100),
            TwoTower(k=100),
            Trending(k=50, segment="age"),
            Trending(k=50),
        )  # fmt: skip
        .filter(InStock(), AvailableInRegion(), AgeAllowed())
        .rank(Ranker())
        .take(12)
    )
    assert python == pipeline
    assert python != pipeline.take(5)
    for user in user_ids[:3]:
        assert python.recommend(user).item_ids == pipeline.recommend(user).item_ids


def test_trace_accounts_for_every_candidate(pipeline, user_ids):
    trace = pipeline.recommend(user_ids[1]).trace
    retrieve, filt, rank, take = trace
    assert retrieve["out"] >= 12
    assert set(retrieve["sources"]) == {"repurchase", "same_group", "copurchase", "two_tower",
                                         "trending_age", "trending"}  # fmt: skip
    assert filt["in"] == retrieve["out"]
    assert filt["in"] - sum(filt["removed"].values()) == filt["out"] == rank["in"]
    assert take["out"] == 12
    assert all(stage["ms"] >= 0 for stage in trace)


def test_loaded_state_is_out_of_the_collectors_reach(pipeline):
    """What load() binds lives as long as the process: frozen, so full collections skip it."""
    import gc

    assert gc.get_freeze_count() > 0
    assert not any(gc.is_tracked(o) and o is pipeline.funnel_ for o in gc.get_objects())


def test_recommendations_pass_every_business_rule(pipeline, user_ids):
    funnel = pipeline.funnel_
    rules = funnel.catalog.rules
    assert rules is not None and rules.units is not None and rules.min_age is not None
    removed = 0
    for user_id in user_ids:
        u = funnel.catalog.user_idx(user_id)
        rec = pipeline.recommend(user_id)
        items = funnel.catalog.item_idx(rec.item_ids)
        assert np.all(~(rules.units[items] <= 0))  # in stock (or untracked)
        region = rules.user_region[u]
        if region >= 0:
            assert np.all(rules.availability[items, region].toarray().ravel() > 0)
        age = funnel.catalog.data.user_age[u]
        limit = rules.min_age[items]
        assert np.all(np.isnan(limit) | (age >= limit))
        removed += sum(rec.trace[1]["removed"].values())
    assert removed > 0  # the filters did something on these users


def test_top_up_returns_k_when_filters_leave_too_few(pipeline, user_ids):
    funnel = pipeline.funnel_
    items = funnel.catalog.data.items
    rare = items["product_type_name"].value_counts().index[-1]  # the rarest product type
    n_rare = int((items["product_type_name"] == rare).sum())
    spec = {"product_type_name": rare}
    rec = pipeline.recommend(user_ids[0], {"filters": spec})
    passing = funnel.catalog.attributes.mask(spec)
    chosen = funnel.catalog.item_idx(rec.item_ids)
    assert passing[chosen].all()
    ctx = funnel.context(np.array([funnel.catalog.user_idx(user_ids[0])]))
    allowed = np.arange(funnel.catalog.data.n_items)[passing][None, :]
    chain = funnel._chain(None)
    possible = int(chain.apply(FilterContext(ctx.users, region=ctx.region, age=ctx.age,
                                             filters=spec), allowed).keep.sum())  # fmt: skip
    assert len(rec.items) == min(12, possible) and possible <= n_rare
    # top-up items are the ones no source proposed
    assert rec.trace[-1]["topped_up"] == sum(1 for i in rec.items if not i.sources)
    nothing = pipeline.recommend(user_ids[0], {"filters": {"price": {"lt": -1}}})
    assert nothing.items == []


def test_cart_items_are_not_recommended_again(pipeline, user_ids):
    first = pipeline.recommend(user_ids[2]).item_ids
    again = pipeline.recommend(user_ids[2], {"cart": first[:3]}).item_ids
    assert not set(first[:3]) & set(again) and len(again) == 12


def test_diversity_step_caps_items_per_product_type(pipeline, user_ids):
    capped = pipeline.diversify(by="product_type_name", method="max_per_value", limit=1).load()
    types = capped.funnel_.catalog.data.items["product_type_name"].to_numpy()
    for user in user_ids[:3]:
        items = capped.funnel_.catalog.item_idx(capped.recommend(user).item_ids)
        assert len(set(types[items])) == len(items) == 12


def test_bad_requests(pipeline, user_ids, ws):
    with pytest.raises(NotFoundError):
        pipeline.recommend("no-such-user")
    with pytest.raises(NotFoundError):
        pipeline.recommend(user_ids[0], {"cart": ["no-such-item"]})
    with pytest.raises(FilterError, match="nope"):
        pipeline.recommend(user_ids[0], {"filters": {"nope": 1}})
    # a misspelled region or an impossible age must not silently turn a filter off
    with pytest.raises(RequestError, match="region: unknown region 'Nordc' .known: "):
        pipeline.recommend(user_ids[0], {"region": "Nordc"})
    with pytest.raises(RequestError, match="age: must be from 0 to 150 years, got -3"):
        pipeline.recommend(user_ids[0], {"age": -3})
    with pytest.raises(RequestError, match="age: must be a number of years, got 'old'"):
        pipeline.recommend(user_ids[0], {"age": "old"})
    region = pipeline.funnel_.catalog.rules.region_names[0]
    assert len(pipeline.recommend(user_ids[0], {"region": region, "age": 30}).items) == 12
    result = shortlist("--workspace", str(ws.root), "recommend", "--user", user_ids[0],
                       "--filter", "{not json")  # fmt: skip
    assert result.returncode == 1 and "not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_ranker_trained_for_other_sources_is_refused(ws):
    other = Pipeline(ws).retrieve(Repurchase(k=20), Trending(k=20)).rank(Ranker())
    with pytest.raises(WorkspaceError, match="other sources .* `shortlist train pipeline`"):
        other.recommend("anyone")


def test_predict_writes_every_user(ws, pipeline, tmp_path):
    path = tmp_path / "submission.csv"
    result = shortlist("--workspace", str(ws.root), "predict", "--out", str(path))
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["customer_id", "prediction"]
    n_users = pipeline.funnel_.catalog.data.n_users
    assert len(rows) == n_users + 1
    assert len({r[0] for r in rows[1:]}) == n_users
    assert all(len(r[1].split()) == 12 for r in rows[1:])
    # the batch path and the one-user path agree
    first = rows[1]
    assert pipeline.recommend(first[0]).item_ids == first[1].split()


def test_evaluate_scores_the_pipeline_and_its_ablations(ws):
    from shortlist.eval.evaluate import evaluate_workspace

    methods = ["repurchase_trending", "pipeline", "pipeline_no_ranker", "pipeline_no_trending",
               "pipeline_div_max_per_value", "pipeline_with_not_bought_before"]  # fmt: skip
    report = evaluate_workspace(ws, methods, n_windows=1)
    got = report["methods"]
    assert list(got) == methods
    for name in methods:
        assert 0 <= got[name]["map@12"] <= 1 and got[name]["users_scored"] > 0
    # the diversity variant reports its diversity, and has at least the pipeline's
    # the rules that hold in the past run; the end-of-data inventory would leak: skipped, said
    filters = got["pipeline"]["filters"]
    assert filters["available_in_region"] == filters["age_allowed"] == "ran"
    assert filters["in_stock"].startswith("skipped: the inventory is a snapshot of the end")
    assert got["repurchase_trending"]["filters"] == {}
    key = next(k for k in got["pipeline"] if k.startswith("distinct_"))
    assert got["pipeline_div_max_per_value"][key] >= got["pipeline"][key]
    assert got["pipeline_div_max_per_value"][key] > 1


@pytest.fixture(scope="module")
def week_ago(ws):
    """The pipeline family of `evaluate`, fitted a week before the end of the data (customers
    who first bought in that week are new there), and its training data."""
    from shortlist.data.arrays import US_PER_DAY, TrainData
    from shortlist.eval.pipeline_methods import PipelineFamily

    data = load_dataset(OfflineStore(ws))
    train = TrainData.before(data, end_of_data(data) - 7 * US_PER_DAY)
    family = PipelineFamily(ws.settings())
    family.fitted(train)
    return family, train


def test_an_ablation_keeps_the_pipelines_objective(week_ago):
    """`pipeline_no_<source>` retrains the ranker with the objective the pipeline's ranker was
    trained with (chosen on the guard's held-out requests), not choosing again on sampled
    negatives: the ablation differs from the pipeline by its source only."""
    family, train = week_ago
    ranker = family.fitted(train).funnel_.ranker
    assert sorted(ranker.report_["candidates"]) == ["binary", "lambdarank"]  # "auto": both
    ablated = family.variant(train, "pipeline_no_trending")
    assert "trending" not in ablated.retrieval.names
    assert list(ablated.ranker.report_["candidates"]) == [ranker.report_["objective"]]
    assert ablated.ranker.report_["objective"] == ranker.report_["objective"]


def test_customers_who_never_bought_get_the_guards_order_for_them(week_ago):
    """Where the guard chose an order for customers who never bought (pipeline/guard.py,
    NewCustomerOrder), theirs are ranked by `segment_share`, and a customer who bought gets
    the ranker's order unchanged."""
    from dataclasses import replace

    from shortlist.pipeline.explain import explain_row
    from shortlist.pipeline.guard import NewCustomerOrder

    family, train = week_ago
    funnel = family.fitted(train).funnel_
    assert funnel.scorer is not None and funnel.order is None  # the ranker serves here
    bought = np.zeros(train.n_users, bool)
    bought[train.interactions.user] = True
    new, old = np.flatnonzero(~bought)[:5], np.flatnonzero(bought)[-5:]
    assert len(new) == 5
    cold = replace(funnel, new_customers=NewCustomerOrder())
    out = cold.run(new, keep_features=True)
    names = funnel.features.feature_names(
        list(out.candidates.sources), list(out.candidates.columns)
    )
    ranked = out.candidates.items  # every candidate, in the order served
    np.testing.assert_array_equal(out.items, ranked[:, : funnel.k])
    assert (out.features[:, :, names.index("user_purchases_all")][ranked >= 0] == 0).all()
    share = np.nan_to_num(out.features[:, :, names.index("segment_share")], nan=-1.0)
    for row, items in zip(share, ranked, strict=True):
        got = row[items >= 0]
        assert len(got) > funnel.k and (np.diff(got) <= 0).all()  # by share, largest first
    as_ranked = funnel.run(new, keep_features=True)  # the ranker alone: another order
    assert not np.array_equal(as_ranked.items, out.items)
    rank = next(s for s in out.trace if s["stage"] == "rank")
    assert rank["scorer"].endswith("; segment_share for customers who never bought")
    np.testing.assert_array_equal(cold.run(old).items, funnel.run(old).items)
    # the reasons say so, not the ranker's contributions
    top = out.candidates
    sources = {n: int(r[0, 0]) for n, r in top.ranks.items() if r[0, 0] > 0}
    reasons = explain_row(cold, sources, out.features[0, 0])
    assert reasons[-1].startswith("ordered for a customer who never bought: ")
    assert reasons[-1].endswith(" of what customers like them buy")
    assert not any("the score by" in r for r in reasons)
    assert any("the score by" in r for r in explain_row(funnel, sources, out.features[0, 0]))


def test_build_compiles_the_served_rankers_trees_so_loading_does_not(ws, pipeline):
    """The first process loading a built pipeline finds the ranker's trees compiled in the
    workspace's cache (build did it) and compiles nothing itself."""
    from shortlist.ranking.scoring import CompiledScorer

    funnel = pipeline.funnel_
    assert funnel.order is None or funnel.order.needs_ranker  # the ranker serves here
    libraries = list((ws.root / "models" / "ranker" / "compiled").glob("*.so"))
    assert len(libraries) == 1
    assert isinstance(funnel.scorer, CompiledScorer) and not funnel.scorer.compiled_now


def test_windows_side_by_side_give_the_figures_of_one_process(ws, tmp_path):
    """`evaluate --jobs 2` evaluates each window whole in one of two spawned processes: with
    the same threads per process (one), every figure equals the one-process run's, windows in
    order; the processes read the workspace themselves (here: a user part, which they must
    apply too)."""
    from shortlist.eval.evaluate import evaluate_workspace

    shutil.copytree(ws.root, tmp_path / "ws")
    (tmp_path / "ws" / "shortlist.toml").write_text(FAST + "\n[resources]\nthreads = 1\n")
    copy = open_workspace(tmp_path / "ws")
    methods = ["repurchase_trending", "pipeline"]

    def run(jobs: int) -> dict:
        report = evaluate_workspace(copy, methods, n_windows=2, user_part=(1, 2), jobs=jobs)
        for figures in report["methods"].values():
            figures.pop("seconds")
        return report

    one, two = run(1), run(2)
    cutoffs = [w["cutoff"] for w in two["methods"]["pipeline"]["per_window"]]
    assert cutoffs == one["protocol"]["cutoffs"] and len(cutoffs) == 2
    whole = evaluate_workspace(copy, ["repurchase_trending"], n_windows=2, jobs=2)
    part = one["methods"]["repurchase_trending"]["users_scored"]
    assert 0 < part < whole["methods"]["repurchase_trending"]["users_scored"]
    assert two == one


def test_a_pipeline_fitted_at_a_cutoff_binds_nothing_after_it(ws):
    """Evaluation fits at a cutoff: the bought-before filter must not know the scored window."""
    from shortlist.data.arrays import load_dataset
    from shortlist.data.offline import OfflineStore

    data = load_dataset(OfflineStore(ws))
    inter = data.interactions
    cutoff = int(inter.time[len(inter) * 3 // 4])
    pipeline = (
        Pipeline(ws).retrieve(Repurchase(k=20)).filter(NotBoughtBefore()).rank(None).take(12)
    ).fit(data, cutoff)
    funnel = pipeline.funnel_
    assert funnel.catalog.data.interactions.time.max() < cutoff
    before = set(
        zip(
            inter.user[inter.time < cutoff].tolist(),
            inter.item[inter.time < cutoff].tolist(),
            strict=True,
        )
    )
    later = [
        (u, i)
        for u, i in zip(
            inter.user[inter.time >= cutoff].tolist(),
            inter.item[inter.time >= cutoff].tolist(),
            strict=True,
        )
        if (u, i) not in before
    ]
    bought_before = next(iter(before))
    assert later
    nbb = next(b.filter for b in funnel.filters if b.name == "not_bought_before")
    for user, item, kept in [(*later[0], True), (*bought_before, False)]:
        got = nbb.keep(FilterContext(np.array([user])), np.array([[item]]))
        assert bool(got[0, 0]) is kept


def test_info_lists_the_business_rule_tables(ws):
    result = shortlist("--workspace", str(ws.root), "info")
    assert result.returncode == 0, result.stderr
    assert "Business rules: inventory" in result.stdout and "8 regions" in result.stdout


@pytest.fixture
def ws_copy(ws, tmp_path):
    """The built workspace copied, scored by LightGBM itself: the compiled trees agree with it
    to 1e-5, not bit for bit, and a near tie could then flip two items."""
    shutil.copytree(ws.root, tmp_path / "ws")
    (tmp_path / "ws" / "shortlist.toml").write_text(FAST + "compiled = false\n")
    return open_workspace(tmp_path / "ws")


def _mapped(array: np.ndarray) -> bool:
    """Whether the array's memory is a file mapping (not a copy in the process's heap)."""
    import mmap

    while array is not None:
        if isinstance(array, np.memmap | mmap.mmap):
            return True
        array = getattr(array, "base", None)
    return False


def test_a_fitted_pipeline_saved_and_loaded_recommends_the_same(ws_copy):
    """What `build` serves is what `evaluate` measures: one code path (fit, then save)."""
    data = load_dataset(OfflineStore(ws_copy))
    fitted = Pipeline.from_config(ws_copy).fit(data, end_of_data(data))
    fitted.save()
    # a load refits nothing and reads no interaction: it serves with their files gone
    shutil.rmtree(ws_copy.offline / "interactions")
    loaded = Pipeline.from_config(ws_copy).load()
    assert loaded.cutoff_ == fitted.cutoff_ == end_of_data(data)
    assert len(loaded.funnel_.catalog.data.interactions) == 0
    # the sources' arrays are mapped from the saved state, not rebuilt in memory
    copurchase = next(s for s, _ in loaded.funnel_.retrieval.sources if s.name == "copurchase")
    assert _mapped(copurchase.neighbours_.indices) and _mapped(copurchase.bought_.data)
    np.testing.assert_array_equal(
        copurchase.neighbours_.toarray(),
        next(
            s for s, _ in fitted.funnel_.retrieval.sources if s.name == "copurchase"
        ).neighbours_.toarray(),
    )
    # so are the two-tower's encoded item and user inputs (not encoded again), equal to those
    # the fitted model encoded
    model, fitted_model = (p.funnel_.retrieval.two_tower.model_ for p in (loaded, fitted))
    for side in ("item_inputs_", "user_inputs_"):
        got, want = getattr(model, side), getattr(fitted_model, side)
        assert _mapped(got.categorical)  # (an empty part, e.g. no numeric column, is read)
        for part in ("categorical", "text", "numeric"):
            np.testing.assert_array_equal(getattr(got, part), getattr(want, part))
    rng = np.random.default_rng(0)
    recent = np.unique(data.interactions.user[-3000:])
    users = np.concatenate([rng.choice(recent, 20, False), rng.choice(data.n_users, 10, False)])
    for user in data.user_ids[users]:
        a, b = fitted.recommend(user), loaded.recommend(user)
        assert a.item_ids == b.item_ids
        np.testing.assert_allclose(
            [i.score or 0.0 for i in a.items], [i.score or 0.0 for i in b.items], rtol=1e-6
        )


def test_parts_that_do_not_belong_together_are_refused(ws_copy):
    from shortlist.retrieval.build import build_item_index, train_retrieval
    from shortlist.retrieval.similar import ItemSearch

    Pipeline.from_config(ws_copy).load()  # as built: the parts belong together
    # the two-tower retrained alone: its old index is stale, the pipeline's ranker too
    train_retrieval(ws_copy)
    with pytest.raises(WorkspaceError, match="another model's item vectors.*`shortlist index`"):
        ItemSearch(ws_copy)
    with pytest.raises(WorkspaceError, match="another model than .*`shortlist train pipeline`"):
        Pipeline.from_config(ws_copy).load()
    build_item_index(ws_copy)
    ItemSearch(ws_copy).similar(str(load_dataset(OfflineStore(ws_copy)).item_ids[0]), 3)
    with pytest.raises(WorkspaceError, match="`shortlist train pipeline`"):
        Pipeline.from_config(ws_copy).load()
    # retrained as a pipeline: loads again; then new data: refused until retrained
    train_pipeline(ws_copy)
    Pipeline.from_config(ws_copy).load()
    manifest = ws_copy.offline / "manifest.json"
    meta = json.loads(manifest.read_text())
    meta["source_rows"] += 1  # as if ingest had read one more row
    manifest.write_text(json.dumps(meta))
    with pytest.raises(WorkspaceError, match="offline store changed since the pipeline was"):
        Pipeline.from_config(ws_copy).load()


def test_a_loaded_pipeline_reads_its_features_from_the_feature_store(ws_copy):
    """`save` writes the feature groups as of the cutoff into the feature store and records
    their versions; `load` reads exactly those (nothing recomputed), and refuses without them."""
    from shortlist.features.store import FeatureStore

    saved = json.loads((ws_copy.root / "models" / "pipeline.json").read_text())["features"]
    store = FeatureStore(ws_copy)
    assert set(saved["versions"]) >= {
        "items",
        "item_segments",
        "users",
        "user_items",
        "user_category",
    }
    cutoff = json.loads((ws_copy.root / "models" / "pipeline.json").read_text())["cutoff"]
    for group, version in saved["versions"].items():
        assert store.get(group, version).cutoff.isoformat() == cutoff
    loaded = Pipeline.from_config(ws_copy).load()
    item_units = loaded.funnel_.features.item_numeric_["item_units_all"]
    table = store.read("items", saved["versions"]["items"]).to_pandas().set_index("item_idx")
    np.testing.assert_array_equal(item_units[table.index], table["units_all"].astype(np.float32))
    shutil.rmtree(store.path(store.get("user_items", saved["versions"]["user_items"])))
    manifest = store.manifest()
    manifest.groups["user_items"] = [
        v for v in manifest.groups["user_items"] if v.version != saved["versions"]["user_items"]
    ]
    store._save(manifest)
    with pytest.raises(WorkspaceError, match="no longer has version .* 'user_items' group"):
        Pipeline.from_config(ws_copy).load()
    # a pipeline saved before a group existed (the item_segments of stop 32): retrain
    path = ws_copy.root / "models" / "pipeline.json"
    manifest_json = json.loads(path.read_text())
    del manifest_json["features"]["versions"]["item_segments"]
    path.write_text(json.dumps(manifest_json))
    with pytest.raises(
        WorkspaceError, match="saved without the 'item_segments' feature group.* train pipeline"
    ):
        Pipeline.from_config(ws_copy).load()


def test_a_categorical_reason_names_the_value_not_its_code(pipeline, user_ids):
    from shortlist.pipeline.explain import feature_phrase

    assert (
        feature_phrase("item_colour_group_name", 3.0, "Black") == "its colour_group_name is Black"
    )
    assert feature_phrase("user_club_member_status", 1.0, "ACTIVE") == (
        "the customer's club_member_status is ACTIVE"
    )
    reasons = [r for u in user_ids for i in pipeline.recommend(u, explain=True).items
               for r in i.reasons]  # fmt: skip
    # a categorical contribution names its value ("its product_type_no is 275"), never just
    # the attribute ("raises the score by 0.42: its department_no")
    assert not [r for r in reasons if re.search(r"score by [0-9.]+: its \w+$", r)]
    assert any(re.search(r"score by [0-9.]+: its \w+ is ", r) for r in reasons)


def test_a_loaded_pipeline_keeps_the_users_text_attributes_as_categoricals(ws, pipeline):
    """A serving process keeps the users table's categorical text columns as codes and their
    distinct values (less memory), value for value the offline store's; an explanation
    decodes a user feature's code to the value the ranking features coded it from."""
    import pandas as pd

    from shortlist.pipeline.explain import _decode

    offline = load_dataset(OfflineStore(ws)).users
    funnel = pipeline.funnel_
    served = funnel.catalog.data.users
    text = [c for c in offline.columns if not pd.api.types.is_numeric_dtype(offline[c])]
    assert "club_member_status" in text
    for column in text:
        assert isinstance(served[column].dtype, pd.CategoricalDtype), column
        expected = offline[column].astype(object).where(offline[column].notna(), None)
        got = served[column].astype(object).where(served[column].notna(), None)
        assert got.tolist() == expected.tolist(), column
    users = [n for n in funnel.features.categorical_ if n.startswith("user_")]
    assert users
    for name in users:
        values = sorted(offline[name.removeprefix("user_")].dropna().unique())
        assert [_decode(funnel, name, float(code)) for code in range(len(values))] == [
            str(v) for v in values
        ]
