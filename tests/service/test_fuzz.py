"""An API fuzz over the published OpenAPI schema (schemathesis, on hypothesis): valid and
hostile requests to every operation; never a 500, and every answer has a documented status, the
declared content type and a body matching its schema."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# Not `positive_data_acceptance`: a schema-valid region or item id can still be unknown to the
# data (a 422 or 404 with its field named is the right answer then).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
OPERATIONS = [
    ("GET", "/v1/users/{user_id}/recommendations"),
    ("POST", "/v1/recommendations"),
    ("GET", "/v1/items/{item_id}/similar"),
    ("POST", "/v1/cart/recommendations"),
    # the web page's (service/web.py)
    ("GET", "/v1/users/{user_id}/history"),
    ("GET", "/v1/items"),
    # search (service/search.py)
    ("GET", "/v1/search"),
]
EXAMPLES = 20


@pytest.fixture(scope="module")
def api_schema(app, client):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_request_makes_a_server_error(api_schema, method, path, mode):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases on every run
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case):
        case.validate_response(case.call(), checks=CHECKS)

    fuzz()
