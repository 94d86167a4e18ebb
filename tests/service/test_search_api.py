"""`GET /v1/search` in-process over the package's tiny built workspace (FastAPI's TestClient,
the real pipeline and text index): the answer's exact shape, personal and non-personal orders,
the filter parameters, refinements usable as filters, errors with their exact bodies,
OpenAPI and metrics."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shortlist.service import create_app
from tests.service.conftest import TestClient

SEARCH = "/v1/search"
SHAPE = {
    "query", "user_id", "items", "facets", "total", "suggestion", "personalized", "cold_start",
    "degraded",
}  # fmt: skip


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def test_the_answer_is_the_pipelines_search(client, pipeline, ids):
    user = ids.buyers[0]
    body = ok(client.get(SEARCH, params={"q": " black trousers ", "user_id": user, "k": 10}))
    assert set(body) == SHAPE  # no trace unasked
    assert body["query"] == "black trousers" and body["user_id"] == user
    assert body["personalized"] is True and body["cold_start"] is False
    assert body["degraded"] is False
    expected = pipeline.search("black trousers", user, k=10).to_dict()
    expected.pop("trace")
    assert body == expected
    assert len(body["items"]) == 10 and body["total"] >= 10
    for item in body["items"]:
        assert {"item_id", "score", "sources", "price", "product_type_name"} <= set(item)
        assert set(item["sources"]) <= {"lexical", "semantic", "personal"}
    traced = ok(client.get(SEARCH, params={"q": "black trousers", "trace": "true"}))
    stages = [s["stage"] for s in traced["trace"]]
    assert stages == ["lexical", "semantic", "filter", "fuse", "refine", "take"]


def test_users_get_their_own_order_and_strangers_the_common_one(client, ids):
    def order(**params):
        return [
            i["item_id"]
            for i in ok(client.get(SEARCH, params={"q": "trousers", **params}))["items"]
        ]

    assert order(user_id=ids.buyers[0]) != order(user_id=ids.buyers[1])
    stranger = ok(client.get(SEARCH, params={"q": "trousers", "user_id": "never-seen"}))
    assert stranger["cold_start"] is True and stranger["personalized"] is False
    assert stranger["user_id"] == "never-seen"
    assert [i["item_id"] for i in stranger["items"]] == order()
    anonymous = ok(client.get(SEARCH, params={"q": "trousers"}))
    assert anonymous["user_id"] is None and anonymous["cold_start"] is False


def test_the_filter_parameters_of_recommendations(client, pipeline, ids):
    user = ids.buyers[0]
    cheap = ok(client.get(SEARCH, params={"q": "trousers", "user_id": user, "price_max": 0.03}))
    assert cheap["items"] and all(i["price"] <= 0.03 for i in cheap["items"])
    black = ok(client.get(SEARCH, params={"q": "dress", "attribute": "colour_group_name",
                                          "values": ["Black"]}))  # fmt: skip
    assert black["items"] and {i["colour_group_name"] for i in black["items"]} == {"Black"}
    black_json = '{"colour_group_name": "Black"}'
    as_json = ok(client.get(SEARCH, params={"q": "dress", "filter": black_json}))
    assert as_json["items"] == black["items"]
    first = ok(client.get(SEARCH, params={"q": "trousers"}))["items"][0]["item_id"]
    without = ok(client.get(SEARCH, params={"q": "trousers", "exclude": [first]}))
    assert first not in [i["item_id"] for i in without["items"]]
    rules = pipeline.funnel_.catalog.rules
    region = ok(client.get(SEARCH, params={"q": "trousers", "region": rules.region_names[0],
                                           "age": 17, "k": 100}))  # fmt: skip
    assert region["items"]


def test_refinements_are_usable_as_filters(client):
    body = ok(client.get(SEARCH, params={"q": "trousers"}))
    assert body["facets"]
    name, values = next(iter(body["facets"].items()))
    value, count = values[0]["value"], values[0]["count"]
    refined = ok(client.get(SEARCH, params={"q": "trousers", "attribute": name,
                                            "values": [value]}))  # fmt: skip
    assert refined["total"] == count
    assert {i[name] for i in refined["items"] if name in i} <= {value}


def test_no_result_says_so_and_suggests(client):
    body = ok(client.get(SEARCH, params={"q": "blak trousrs"}))
    assert body["suggestion"] == "black trousers"
    nothing = ok(client.get(SEARCH, params={"q": "qzxv plorkt"}))
    assert nothing["items"] == [] and nothing["total"] == 0 and nothing["facets"] == {}
    assert nothing["suggestion"] is None


def _problem(status: int, field, value, message: str) -> dict:
    kind = {404: "not_found", 422: "invalid_request", 503: "unavailable"}[status]
    detail = {"field": field, "value": value, "message": message}
    return {"error": kind, "status": status, **detail, "errors": [detail]}


LONG = "x" * 201
ERRORS = [
    ({}, 422, "q", None, "q: Field required"),
    ({"q": ""}, 422, "q", "",
     "q: String should have at least 1 character (got '')"),
    ({"q": "   "}, 422, "q", "   ", "q: the query has no characters but spaces"),
    ({"q": LONG}, 422, "q", LONG[:120] + "...",
     f"q: String should have at most 200 characters (got {LONG[:120] + '...'!r})"),
    ({"q": "dress", "k": 0}, 422, "k", "0",
     "k: Input should be greater than or equal to 1 (got '0')"),
    ({"q": "dress", "age": 200}, 422, "age", "200",
     "age: Input should be less than or equal to 150 (got '200')"),
    ({"q": "dress", "region": "atlantis"}, 422, "region", "atlantis",
     "region: unknown region 'atlantis' (known: benelux, british_isles, central_europe, dach, "
     "france, iberia, italy, nordics)"),
    ({"q": "dress", "exclude": ["no-such-item"]}, 404, "exclude.0", "no-such-item",
     "exclude.0: unknown item 'no-such-item'"),
    ({"q": "dress", "values": ["Black"]}, 422, "attribute", None,
     "attribute: name the attribute `values` are of"),
    ({"q": "dress", "attribute": "shade", "values": ["Black"]}, 422, "attribute", "shade",
     None),
    ({"q": "dress", "price_min": 0.5, "price_max": 0.1}, 422, "price_min", 0.5,
     "price_min: 0.5 is above price_max 0.1: an empty range"),
    ({"q": "dress", "filter": "{"}, 422, "filter", "{", None),
]  # fmt: skip


@pytest.mark.parametrize(("params", "status", "field", "value", "message"), ERRORS)
def test_errors_have_their_exact_bodies(client, params, status, field, value, message):
    r = client.get(SEARCH, params=params)
    assert r.status_code == status, r.text
    body = r.json()
    if message is None:  # long messages (the known attributes, the JSON parser's): their start
        message = body["message"]
        assert message.startswith(f"{field}: ")
    assert body == _problem(status, field, value, message)


def test_without_a_search_index_search_alone_answers_503(ws, ids, monkeypatch):
    monkeypatch.setenv("SHORTLIST_SEARCH_ENABLED", "false")
    with TestClient(create_app(ws)) as fresh:
        r = fresh.get(SEARCH, params={"q": "dress"})
        assert r.status_code == 503
        assert r.json() == _problem(
            503, None, None, "search unavailable: search is off ([search] enabled = false)"
        )
        assert fresh.get(f"/v1/users/{ids.buyers[0]}/recommendations").status_code == 200


def test_openapi_declares_the_endpoint_and_its_models(client):
    spec = ok(client.get("/openapi.json"))
    (op,) = spec["paths"][SEARCH].values()
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SearchOut"
    }
    for status in ("404", "422", "503"):
        assert op["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorOut"
        }
    out = spec["components"]["schemas"]["SearchOut"]
    assert set(out["properties"]) == SHAPE | {"trace"}
    params = {p["name"] for p in op["parameters"]}
    assert {"q", "user_id", "k", "price_min", "price_max", "attribute", "values", "filter",
            "region", "age", "exclude", "trace"} == params  # fmt: skip


def test_metrics_count_search_answers_and_stages(client):
    def samples() -> dict:
        out = {}
        for family in text_string_to_metric_families(client.get("/metrics").text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    before = samples()
    ok(client.get(SEARCH, params={"q": "dress"}))
    ok(client.get(SEARCH, params={"q": "dress", "user_id": "never-seen"}))
    after = samples()

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    requests = "shortlist_http_requests_total"
    assert delta(requests, endpoint=SEARCH, method="GET", status="200") == 2
    assert delta("shortlist_cold_starts_total", endpoint=SEARCH) == 1
    stage = "shortlist_stage_duration_seconds_count"
    for name in ("lexical", "semantic", "filter", "fuse"):
        assert delta(stage, endpoint=SEARCH, stage=name) == 2
