"""No input gives a 500: random and malformed requests against every kind of endpoint."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

TYPES = st.sampled_from(
    ["Patient", "Observation", "Bundle", "Encounter", "Nope", "metadata", "_history", ""]
)
METHODS = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"])
CONTENT_TYPES = st.sampled_from(
    [
        "application/fhir+json",
        "application/json",
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "",
    ]
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
RESOURCE_LIKE = st.fixed_dictionaries(
    {"resourceType": st.sampled_from(["Patient", "Observation", "Bundle", "X"])},
    optional={
        "id": st.text(max_size=70),
        "type": st.sampled_from(["transaction", "batch", "collection"]) | st.text(max_size=5),
        "entry": st.lists(
            st.dictionaries(st.sampled_from(["request", "resource", "fullUrl"]), JSON_VALUES),
            max_size=3,
        ),
        "name": JSON_VALUES,
        "birthDate": st.text(max_size=12),
        "subject": JSON_VALUES,
        "meta": JSON_VALUES,
    },
)
PARAM_NAMES = st.sampled_from(
    [
        "name",
        "birthdate",
        "_count",
        "_sort",
        "_include",
        "_revinclude",
        "subject",
        "code",
        "value-quantity",
        "identifier:missing",
        "_has:Observation:patient:code",
        "subject:Patient.name",
        "_lastUpdated",
        "_since",
        "_elements",
        "_summary",
        "date",
        "gender:not",
        "_offset",
        "_total",
        "address-city:exact",
    ]
) | st.text(max_size=15)


def _body(draw_value: Any) -> bytes:
    if isinstance(draw_value, bytes):
        return draw_value
    return json.dumps(draw_value).encode()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=METHODS,
    res_type=TYPES,
    rest=st.lists(
        st.sampled_from(["1", "_history", "_search", "$everything", "Observation", "x/y", "2"]),
        max_size=3,
    ),
    params=st.lists(st.tuples(PARAM_NAMES, st.text(max_size=25)), max_size=4),
    content_type=CONTENT_TYPES,
    body=st.one_of(RESOURCE_LIKE, JSON_VALUES, st.binary(max_size=60)),
    headers=st.dictionaries(
        st.sampled_from(["If-Match", "If-None-Exist", "Prefer", "Accept"]),
        st.text(max_size=20),
        max_size=2,
    ),
)
def test_random_requests_never_give_500(
    client: TestClient,
    method: str,
    res_type: str,
    rest: list[str],
    params: list[tuple[str, str]],
    content_type: str,
    body: Any,
    headers: dict[str, str],
) -> None:
    path = "/".join(p for p in ["/fhir", res_type, *rest] if p)
    safe_headers = {
        k: v for k, v in headers.items() if v.isascii() and "\n" not in v and "\r" not in v
    }
    if content_type:
        safe_headers["Content-Type"] = content_type
    response = client.request(
        method, path, params=params, content=_body(body), headers=safe_headers
    )
    assert response.status_code < 500, (method, path, params, response.text)
    if response.status_code >= 400:
        assert response.json()["resourceType"] == "OperationOutcome"
