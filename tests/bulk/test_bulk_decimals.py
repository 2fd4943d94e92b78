"""Bulk export writes decimals exactly as they were sent (750.00 stays 750.00)."""

from __future__ import annotations

from bulk_helpers import ASYNC, wait_for
from starlette.testclient import TestClient

OBSERVATION = b"""{"resourceType": "Observation", "id": "d1", "status": "final",
 "code": {"text": "weight"}, "valueQuantity": {"value": 750.00, "unit": "g"},
 "component": [{"code": {"text": "x"}, "valueQuantity": {"value": 66.899999999999991}},
               {"code": {"text": "y"}, "valueQuantity": {"value": 1.0e3}}]}"""


def test_export_keeps_decimal_literals(api: TestClient) -> None:
    headers = {"Content-Type": "application/fhir+json"}
    assert api.put("/fhir/Observation/d1", content=OBSERVATION, headers=headers).is_success
    kick = api.get("/fhir/$export", params={"_type": "Observation"}, headers=ASYNC)
    assert kick.status_code == 202, kick.text
    done = wait_for(api, kick.headers["Content-Location"])
    assert done.status_code == 200, done.text
    (item,) = done.json()["output"]
    text = api.get(item["url"]).content
    assert b'"value":750.00' in text
    assert b'"value":66.899999999999991' in text
    assert b'"value":1.0e3' in text
