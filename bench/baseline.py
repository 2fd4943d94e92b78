"""Baseline: the fastest a 1-worker FastAPI/uvicorn process can answer a FHIR read here.

The FHIR server's figures are divided by this app's requests/s, so the ratio shows what the
server's own work (routing, database, serialization) costs on top of the bare framework.
It serves one pre-serialized ~1 KB Patient with the same uvicorn settings as `interop serve`.
"""

from __future__ import annotations

import argparse

import orjson
import uvicorn
from fastapi import FastAPI, Response

PATIENT: dict[str, object] = {
    "resourceType": "Patient",
    "id": "example",
    "meta": {"versionId": "1", "lastUpdated": "2024-01-01T00:00:00.000000Z"},
    "identifier": [
        {
            "use": "usual",
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                ]
            },
            "system": "urn:oid:1.2.36.146.595.217.0.1",
            "value": "12345",
            "period": {"start": "2001-05-06"},
            "assigner": {"display": "Acme Healthcare"},
        }
    ],
    "active": True,
    "name": [
        {"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
        {"use": "usual", "given": ["Jim"]},
    ],
    "telecom": [
        {"system": "phone", "value": "(03) 5555 6473", "use": "work", "rank": 1},
        {"system": "phone", "value": "(03) 3410 5613", "use": "mobile", "rank": 2},
        {"system": "email", "value": "peter.chalmers@example.org", "use": "home"},
    ],
    "gender": "male",
    "birthDate": "1974-12-25",
    "deceasedBoolean": False,
    "address": [
        {
            "use": "home",
            "type": "both",
            "text": "534 Erewhon St PeasantVille, Rainbow, Vic  3999",
            "line": ["534 Erewhon St"],
            "city": "PleasantVille",
            "district": "Rainbow",
            "state": "Vic",
            "postalCode": "3999",
            "period": {"start": "1974-12-25"},
        }
    ],
    "managingOrganization": {"reference": "Organization/1"},
}
BODY: bytes = orjson.dumps(PATIENT)

app = FastAPI()


@app.get("/fhir/Patient/example")
def patient() -> Response:
    """Return the fixed bytes: no database, no model, no serialization per request."""
    return Response(content=BODY, media_type="application/fhir+json")


def main() -> None:
    """Serve like `interop serve` does: 1 worker, uvicorn's default loop/http, no access log."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        workers=1,
        log_level="warning",
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
