"""Every endpoint of the service in-process (FastAPI's TestClient over the real app, pipeline
and item search of a tiny built workspace): answers, filters, cold starts, the cart, errors with
their exact bodies, OpenAPI and metrics."""

from __future__ import annotations

import hashlib
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shortlist.retrieval.sources import CoPurchaseSource
from shortlist.service import create_app
from tests.service.conftest import TestClient

USER = "/v1/users/{user_id}/recommendations"
SIMILAR = "/v1/items/{item_id}/similar"
POST = "/v1/recommendations"
CART = "/v1/cart/recommendations"
ROUTES = {USER, POST, SIMILAR, CART, "/v1/events", "/v1/admin/reload", "/healthz", "/readyz",
          "/metrics"}  # fmt: skip
# the web page's (service/web.py)
ROUTES |= {"/v1/showcase", "/v1/users/{user_id}/history", "/v1/items", "/v1/reports/evaluation"}
ROUTES |= {"/v1/search"}  # service/search.py


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def rules_of(pipeline):
    rules = pipeline.funnel_.catalog.rules
    assert rules is not None and rules.units is not None and rules.min_age is not None
    return rules


def idx(pipeline, item_ids) -> np.ndarray:
    return pipeline.funnel_.catalog.item_idx(list(item_ids))


def in_stock(pipeline, item_ids) -> bool:
    units = rules_of(pipeline).units[idx(pipeline, item_ids)]
    return bool(np.all(~(units <= 0)))


# -- health --------------------------------------------------------------------------------------


def test_healthz_and_readyz(client, ws):
    assert ok(client.get("/healthz")) == {"status": "ok"}
    version = hashlib.sha256((ws.root / "models" / "pipeline.json").read_bytes()).hexdigest()
    assert ok(client.get("/readyz")) == {
        "status": "ready",
        "workspace": str(ws.root),
        "similar": True,
        "version": version[:12],
        "store": "ok",
    }


def test_not_ready_before_the_workspace_is_loaded(ws):
    fresh = TestClient(create_app(ws))  # no `with`: the lifespan has not run
    assert fresh.get("/healthz").status_code == 200
    ready = fresh.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "loading"
    r = fresh.get("/v1/users/anyone/recommendations")
    assert r.status_code == 503
    assert r.json()["error"] == "unavailable" and "not ready" in r.json()["message"]


# -- a user's recommendations ----------------------------------------------------------------------


def test_user_recommendations_are_the_pipelines(client, pipeline, ids):
    user = ids.buyers[0]
    body = ok(client.get(f"/v1/users/{user}/recommendations"))
    assert set(body) == {"user_id", "items", "cold_start", "degraded", "version"}  # no trace
    assert body["user_id"] == user and body["cold_start"] is False and body["degraded"] is False
    got = [i["item_id"] for i in body["items"]]
    assert got == pipeline.recommend(user).item_ids
    assert len(got) == 12 == len(set(got))
    for item in body["items"]:
        assert {"item_id", "score", "sources", "price", "product_type_name"} <= set(item)
        assert "reasons" not in item
    assert any(i["sources"] for i in body["items"])
    five = ok(client.get(f"/v1/users/{user}/recommendations", params={"k": 5}))
    assert [i["item_id"] for i in five["items"]] == got[:5]
    many = ok(client.get(f"/v1/users/{user}/recommendations", params={"k": 40}))
    assert len(many["items"]) == 40


def test_explain_gives_reasons_and_trace_gives_the_stages(client, ids):
    body = ok(client.get(f"/v1/users/{ids.buyers[1]}/recommendations",
                         params={"explain": "true", "trace": "true", "k": 4}))  # fmt: skip
    assert len(body["items"]) == 4
    assert all(item["reasons"] for item in body["items"])
    assert [s["stage"] for s in body["trace"]] == ["retrieve", "filter", "rank", "take"]
    assert all(s["ms"] >= 0 for s in body["trace"]) and body["trace"][-1]["k"] == 4


def test_query_filters_price_range_and_attribute_set(client, ids):
    user = ids.buyers[0]
    first = ok(client.get(f"/v1/users/{user}/recommendations", params={"k": 30}))["items"]
    groups = sorted({i["product_group_name"] for i in first})[:2]
    prices = sorted(i["price"] for i in first if i["price"] is not None)
    lo, hi = prices[len(prices) // 4], prices[3 * len(prices) // 4]
    params = {"price_min": lo, "price_max": hi, "attribute": "product_group_name",
              "values": groups, "k": 8}  # fmt: skip
    body = ok(client.get(f"/v1/users/{user}/recommendations", params=params))
    assert body["items"]
    for item in body["items"]:
        assert lo <= item["price"] <= hi
        assert item["product_group_name"] in groups
    # the same filter in the filter language, as JSON
    spec = f'{{"price": {{"gte": {lo}, "lte": {hi}}}, "product_group_name": {{"in": {groups}}}}}'
    same = ok(client.get(f"/v1/users/{user}/recommendations",
                         params={"filter": spec.replace("'", '"'), "k": 8}))  # fmt: skip
    assert same["items"] == body["items"]


def test_post_recommendations_with_cart_exclusions_and_filters(client, pipeline, ids):
    user = ids.buyers[0]
    top = [i["item_id"] for i in ok(client.get(f"/v1/users/{user}/recommendations"))["items"]]
    request = {
        "user_id": user,
        "k": 10,
        "cart": [top[0]],
        "exclude": [top[1], top[2]],
        "filters": {"price": {"lte": 0.06}},
        "explain": True,
    }
    body = ok(client.post(POST, json=request))
    got = [i["item_id"] for i in body["items"]]
    assert len(got) == 10 and not set(got) & set(top[:3])
    assert all(i["price"] is not None and i["price"] <= 0.06 for i in body["items"])
    assert all(i["reasons"] for i in body["items"])
    context = {k: request[k] for k in ("cart", "exclude", "filters")}
    assert got == pipeline.recommend(user, context).item_ids[:10]  # the top 10 of its 12


# -- cold start ----------------------------------------------------------------------------------


def test_unknown_user_gets_the_best_sellers_of_their_segment(client, pipeline):
    rules = rules_of(pipeline)
    region = rules.region_names[0]
    body = ok(client.post(POST, json={"user_id": "new-visitor", "region": region, "age": 16,
                                      "trace": True, "explain": True}))  # fmt: skip
    assert body["cold_start"] is True and body["user_id"] == "new-visitor"
    items = body["items"]
    assert len(items) == 12
    assert "trending_region" in items[0]["sources"]
    assert all(set(i["sources"]) <= {"trending_region", "trending_age", "trending"} for i in items)
    assert all(i["reasons"][0].startswith("new customer") for i in items)
    stages = [s["stage"] for s in body["trace"]]
    assert stages == ["cold_start", "filter", "take"]
    assert body["trace"][0]["segment"] == {"region": region, "age": 16.0, "age_bucket": "0-19"}
    # filtered like any recommendation: sold in the region, allowed at 16, in stock
    at = idx(pipeline, [i["item_id"] for i in items])
    code = rules.region_names.index(region)
    assert np.all(rules.availability[at, code].toarray().ravel() > 0)
    limits = rules.min_age[at]
    assert np.all(np.isnan(limits) | (limits <= 16))
    assert in_stock(pipeline, [i["item_id"] for i in items])
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)


def test_cold_start_without_a_segment_and_with_filters(client):
    body = ok(client.get("/v1/users/someone-new/recommendations",
                         params={"price_max": 0.03, "k": 6}))  # fmt: skip
    assert body["cold_start"] is True
    assert len(body["items"]) == 6
    assert "trending" in body["items"][0]["sources"]
    assert all(i["price"] is not None and i["price"] <= 0.03 for i in body["items"])


def test_cold_start_still_checks_region_and_age(client):
    r = client.get("/v1/users/someone-new/recommendations", params={"region": "Atlantis"})
    assert r.status_code == 422
    assert (r.json()["field"], r.json()["value"]) == ("region", "Atlantis")


# -- similar items -------------------------------------------------------------------------------


def test_similar_items(client, pipeline, ids):
    item = ids.popular[0]
    body = ok(client.get(f"/v1/items/{item}/similar", params={"k": 5, "trace": True}))
    assert body["item_id"] == item and body["degraded"] is False
    got = [i["item_id"] for i in body["items"]]
    assert len(got) == 5 == len(set(got)) and item not in got
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert [i["sources"] for i in body["items"]] == [{"similar": r} for r in range(1, 6)]
    assert in_stock(pipeline, got)
    assert [s["stage"] for s in body["trace"]] == ["search", "filter"]
    filtered = ok(client.get(f"/v1/items/{item}/similar",
                             params={"k": 5, "price_max": 0.03, "attribute": "product_group_name",
                                     "values": ["Garment Upper body", "Underwear"]}))  # fmt: skip
    assert filtered["items"]
    for i in filtered["items"]:
        assert i["price"] <= 0.03 and i["product_group_name"] in ("Garment Upper body", "Underwear")


# -- the cart ------------------------------------------------------------------------------------


def test_cart_recommendations_are_co_bought_and_never_in_the_cart(client, pipeline, ids):
    cart = ids.popular[:2]
    body = ok(client.post(CART, json={"cart": cart, "k": 8, "explain": True, "trace": True}))
    assert body["cart"] == cart and body["user_id"] is None and body["cold_start"] is False
    items = body["items"]
    assert len(items) == 8 and not {i["item_id"] for i in items} & set(cart)
    co = [i for i in items if i["sources"]]
    assert co and all(set(i["sources"]) == {"copurchase"} for i in co)
    assert [i["score"] for i in co] == sorted((i["score"] for i in co), reverse=True)
    assert all(any(c in i["reasons"][0] for c in cart) for i in co)
    assert [s["stage"] for s in body["trace"]] == ["copurchase", "filter", "take"]
    # the co-bought items, scored as the co-purchase source's neighbour lists say
    source = next(s for s, _ in pipeline.funnel_.retrieval.sources
                  if isinstance(s, CoPurchaseSource))  # fmt: skip
    weights = np.asarray(source.neighbours_[idx(pipeline, cart)].sum(axis=0)).ravel()
    for i in co:
        assert math.isclose(i["score"], weights[idx(pipeline, [i["item_id"]])[0]], rel_tol=1e-6)


def test_cart_leaves_out_what_the_filters_remove(client, pipeline, ids):
    """Out-of-stock co-bought items never come back (a cart is found where some were)."""
    found = None
    for item in ids.popular:
        body = ok(client.post(CART, json={"cart": [item], "k": 50, "trace": True}))
        if body["trace"][1]["removed"].get("in_stock", 0) > 0:
            found = body
            break
    assert found is not None, "no popular item has an out-of-stock co-bought item"
    assert in_stock(pipeline, [i["item_id"] for i in found["items"]])
    cheap = ok(client.post(CART, json={"cart": ids.popular[:3], "filters": {"price": {"lte": 0.02}},
                                       "exclude": [ids.popular[5]]}))  # fmt: skip
    assert all(i["price"] <= 0.02 for i in cheap["items"])
    assert ids.popular[5] not in [i["item_id"] for i in cheap["items"]]


def test_cart_of_known_and_unknown_users(client, ids):
    known = ok(client.post(CART, json={"cart": ids.popular[:1], "user_id": ids.buyers[0]}))
    assert known["cold_start"] is False and known["user_id"] == ids.buyers[0]
    unknown = ok(client.post(CART, json={"cart": ids.popular[:1], "user_id": "newcomer",
                                         "region": "nordics"}))  # fmt: skip
    assert unknown["cold_start"] is True and len(unknown["items"]) == 12


# -- errors --------------------------------------------------------------------------------------

U = "/v1/users/{user}/recommendations"
S = "/v1/items/{item}/similar"
LONG = "x" * 5000

# (method, path, query or body, status, field, value)
ERRORS = [
    ("get", U, {"k": "0"}, 422, "k", "0"),
    ("get", U, {"k": "-1"}, 422, "k", "-1"),
    ("get", U, {"k": str(10**9)}, 422, "k", str(10**9)),
    ("get", U, {"k": "twelve"}, 422, "k", "twelve"),
    ("get", U, {"explain": "maybe"}, 422, "explain", "maybe"),
    ("get", U, {"region": "Atlantis"}, 422, "region", "Atlantis"),
    ("get", U, {"age": "200"}, 422, "age", "200"),
    ("get", U, {"age": "-3"}, 422, "age", "-3"),
    ("get", U, {"age": "nan"}, 422, "age", "nan"),
    ("get", U, {"price_min": "inf"}, 422, "price_min", "inf"),
    ("get", U, {"price_min": "0.5", "price_max": "0.1"}, 422, "price_min", 0.5),
    ("get", U, {"filter": '{"price": '}, 422, "filter", '{"price": '),
    ("get", U, {"filter": '{"colour": "red"}'}, 422, "filter.colour", "red"),
    ("get", U, {"filter": '{"price": {"between": 1}}'}, 422, "filter.price", {"between": 1}),
    ("get", U, {"filter": '["price"]'}, 422, "filter", '["price"]'),
    ("get", U, {"attribute": "product_group_name"}, 422, "values", None),
    ("get", U, {"values": "Shoes"}, 422, "attribute", None),
    ("get", U, {"attribute": "colour", "values": "red"}, 422, "attribute", "colour"),
    ("get", U, {"attribute": "price", "values": "cheap"}, 422, "values", "cheap"),
    ("get", U, {"exclude": "no-such-item"}, 404, "exclude.0", "no-such-item"),
    ("get", "/v1/users/" + LONG + "/recommendations", {}, 422, "user_id", LONG[:120] + "..."),
    ("get", S, {"k": "1001"}, 422, "k", "1001"),
    ("get", "/v1/items/no-such-item/similar", {}, 404, "item_id", "no-such-item"),
    ("get", S, {"region": "Atlantis"}, 422, "region", "Atlantis"),
    ("post", POST, {}, 422, "user_id", None),
    ("post", POST, {"user_id": "u", "k": "12"}, 422, "k", "12"),
    ("post", POST, {"user_id": "u", "k": 0}, 422, "k", 0),
    ("post", POST, {"user_id": "u", "colour": "red"}, 422, "colour", "red"),
    ("post", POST, {"user_id": 42}, 422, "user_id", 42),
    ("post", POST, {"user_id": "u", "age": "old"}, 422, "age", "old"),
    ("post", POST, {"user_id": "u", "age": 151}, 422, "age", 151),
    ("post", POST, {"user_id": "u", "age": True}, 422, "age", True),
    ("post", POST, {"user_id": "u", "cart": ["no-such-item"]}, 404, "cart.0", "no-such-item"),
    ("post", POST, {"user_id": "u", "cart": "abc"}, 422, "cart", "abc"),
    ("post", POST, {"user_id": "u", "filters": {"price": {"lte": "x"}}}, 422, "filters.price",
     {"lte": "x"}),
    ("post", POST, {"user_id": "u", "filters": {"price": {"lte": 10**30}}}, 422, "filters",
     "{'price': {'lte': 1000000000000000000000000000000}}"),
    ("post", POST, {"user_id": "u", "filters": {"price": {"gt": 1, "gte": 2}}}, 422,
     "filters.price", {"gt": 1, "gte": 2}),
    ("post", POST, {"user_id": "u", "filters": "cheap"}, 422, "filters", "cheap"),
    ("post", POST, {"user_id": "u", "region": LONG}, 422, "region", LONG[:120] + "..."),
    ("post", CART, {"cart": []}, 422, "cart", []),
    ("post", CART, {"cart": ["no-such-item"]}, 404, "cart.0", "no-such-item"),
    ("post", CART, {"cart": ["{item}"], "exclude": ["x"]}, 404, "exclude.0", "x"),
    ("post", CART, {"cart": ["{item}"], "age": -1}, 422, "age", -1),
    ("post", CART, {"cart": ["{item}"], "region": "Atlantis"}, 422, "region", "Atlantis"),
]  # fmt: skip


def _fill(value, user, item):
    if isinstance(value, str):
        return value.replace("{user}", user).replace("{item}", item)
    if isinstance(value, list):
        return [_fill(v, user, item) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, user, item) for k, v in value.items()}
    return value


@pytest.mark.parametrize(("method", "path", "data", "status", "field", "value"), ERRORS)
def test_errors_name_the_field_and_the_value(client, ids, method, path, data, status, field, value):
    path, data = _fill(path, ids.buyers[0], ids.popular[0]), _fill(data, ids.buyers[0],
                                                                   ids.popular[0])  # fmt: skip
    if method == "get":
        r = client.get(path, params=data)
    else:
        r = client.post(path, json=data)
    assert r.status_code == status, r.text
    body = r.json()
    kind = "not_found" if status == 404 else "invalid_request"
    assert (body["error"], body["status"], body["field"], body["value"]) == (
        kind,
        status,
        field,
        value,
    )
    assert body["message"].startswith(field.split(".")[0])
    assert body["errors"][0] == {"field": field, "value": value, "message": body["message"]}


def test_malformed_bodies_and_unknown_routes(client):
    bad = client.post(POST, content=b'{"user_id": ', headers={"content-type": "application/json"})
    assert bad.status_code == 422 and bad.json()["field"] == "body"
    binary = client.post(
        POST, content=b"\xff\xfe\x00", headers={"content-type": "application/json"}
    )
    assert binary.status_code == 422 and binary.json()["field"] == "body"
    deep = client.post(POST, content=b"[" * 100_000 + b"]" * 100_000,
                       headers={"content-type": "application/json"})  # fmt: skip
    assert deep.status_code == 422 and deep.json()["field"] == "body"
    big = client.post(POST, content=b" " * (2 << 20), headers={"content-type": "application/json"})
    assert big.status_code == 413 and big.json()["error"] == "too_large"
    missing = client.get("/v2/anything")
    assert missing.status_code == 404
    assert missing.json()["message"] == "no such endpoint: GET /v2/anything"
    assert client.delete("/healthz").status_code == 405


# -- OpenAPI, metrics, threads -------------------------------------------------------------------


def test_openapi_lists_every_route_with_its_models(client):
    spec = ok(client.get("/openapi.json"))
    assert set(spec["paths"]) == ROUTES
    schemas = spec["components"]["schemas"]
    assert {"RecommendationsOut", "CartOut", "SimilarOut", "ErrorOut", "ItemOut",
            "RecommendRequest", "CartRequest"} <= set(schemas)  # fmt: skip
    for path in (USER, POST, SIMILAR, CART):
        (op,) = spec["paths"][path].values()
        assert "$ref" in op["responses"]["200"]["content"]["application/json"]["schema"]
        assert op["responses"]["422"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorOut"
        }
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def samples(client) -> dict[tuple[str, tuple], float]:
    text = client.get("/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def delta(before, after, name, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_metrics_count_requests_stages_cold_starts_and_errors(client, ids):
    before = samples(client)
    for user in ids.buyers[:2]:
        ok(client.get(f"/v1/users/{user}/recommendations"))
    ok(client.get("/v1/users/never-seen/recommendations"))
    assert client.get(f"/v1/users/{ids.buyers[0]}/recommendations?k=0").status_code == 422
    ok(client.post(CART, json={"cart": ids.popular[:1]}))
    after = samples(client)
    get = {"endpoint": USER, "method": "GET"}
    assert delta(before, after, "shortlist_http_requests_total", **get, status="200") == 3
    assert delta(before, after, "shortlist_http_requests_total", **get, status="422") == 1
    assert delta(before, after, "shortlist_http_errors_total", endpoint=USER, status="422") == 1
    assert delta(before, after, "shortlist_http_request_duration_seconds_count", **get) == 4
    assert delta(before, after, "shortlist_cold_starts_total", endpoint=USER) == 1
    stage = "shortlist_stage_duration_seconds_count"
    assert delta(before, after, stage, endpoint=USER, stage="retrieve") == 2
    assert delta(before, after, stage, endpoint=USER, stage="rank") == 2
    assert delta(before, after, stage, endpoint=USER, stage="cold_start") == 1
    assert delta(before, after, stage, endpoint=CART, stage="copurchase") == 1
    assert not any("never-seen" in str(key) for key in after)  # ids never become labels
    text = client.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain")


def test_concurrent_requests_answer_as_sequential_ones(client, ids):
    users = ids.buyers[:4] + ["nobody-1", "nobody-2"]

    def items(user):
        return [i["item_id"] for i in ok(client.get(f"/v1/users/{user}/recommendations"))["items"]]

    sequential = [items(u) for u in users]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(items, users * 3))
    assert concurrent == sequential * 3
