"""A third-party Python client (fhirpy) calls `$validate` on a real secured server over HTTP:
type level with a Parameters body, instance level by GET, and `save()` of an invalid resource
is refused with the OperationOutcome naming the element."""

from __future__ import annotations

from typing import Any

import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome as FhirpyOutcome
from terminology.test_fhirpy_client import _token, live  # noqa: F401 - the live server fixture


def test_fhirpy_validates(live: tuple[Any, str]) -> None:  # noqa: F811
    app, root = live
    token = _token(app, root, "system/Observation.cruds")
    fhir = SyncFHIRClient(f"{root}/fhir", authorization=f"Bearer {token}")
    bad = {"resourceType": "Observation", "status": "bogus", "code": {"text": "weight"}}
    parameters = {
        "resourceType": "Parameters",
        "parameter": [{"name": "resource", "resource": bad}],
    }
    outcome = fhir.execute("Observation/$validate", data=parameters)
    errors = [i for i in outcome["issue"] if i["severity"] == "error"]
    assert [i["expression"] for i in errors] == [["Observation.status"]]
    with pytest.raises(FhirpyOutcome) as refused:
        fhir.resource("Observation", **bad).save()
    assert "Observation.status" in str(refused.value)
    good = fhir.resource("Observation", status="final", code={"text": "weight"})
    good.save()
    stored = fhir.execute(f"Observation/{good.id}/$validate", method="get")
    assert all(i["severity"] != "error" for i in stored["issue"])
