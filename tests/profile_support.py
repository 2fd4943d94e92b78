"""Hand-made profiles stored as an operator stores them (differential only), and the two ways
a client meets them over HTTP: a write claiming the profile, `$validate` naming it."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

BASE = "http://hl7.org/fhir/StructureDefinition/"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"


def constraint(sd_id: str, res_type: str, elements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "StructureDefinition", "id": sd_id,
            "url": f"http://example.org/fhir/StructureDefinition/{sd_id}", "name": sd_id,
            "status": "active", "kind": "resource", "abstract": False, "type": res_type,
            "derivation": "constraint", "baseDefinition": BASE + res_type,
            "differential": {"element": elements}}  # fmt: skip


def slicing(path: str, kind: str, disc_path: str, rules: str = "open") -> dict[str, Any]:
    """The slicing of element `path` (an element id: a slice's element too)."""
    return {"id": path, "path": _path_of(path), "slicing": {"discriminator": [
                {"type": kind, "path": disc_path}], "rules": rules}}  # fmt: skip


def _path_of(el_id: str) -> str:
    return ".".join(seg.split(":")[0] for seg in el_id.split("."))


def element(el_id: str, **rest: Any) -> dict[str, Any]:
    """An element of the differential by id (its path: the id without slice names)."""
    out: dict[str, Any] = {"id": el_id, "path": _path_of(el_id)}
    last = el_id.rsplit(".", 1)[-1]
    if ":" in last:
        out["sliceName"] = last.split(":", 1)[1]
    return out | rest


def store(client: TestClient, sd: dict[str, Any]) -> None:
    response = client.put(f"/fhir/StructureDefinition/{sd['id']}", json=sd)
    assert response.status_code in (200, 201), response.text


def store_and_post(
    client: TestClient, sd: dict[str, Any], resource: dict[str, Any]
) -> tuple[int, list[dict[str, Any]]]:
    """Store the profile, then POST the resource claiming it: (status, issues of a 400)."""
    store(client, sd)
    claimed = {**resource, "meta": {"profile": [sd["url"]]}}
    response = client.post(f"/fhir/{resource['resourceType']}", json=claimed)
    issues = response.json().get("issue", []) if response.status_code == 400 else []
    return response.status_code, issues


def validate_against(
    client: TestClient, url: str, resource: dict[str, Any], headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """`$validate` of the resource (claiming nothing) with the `profile` parameter."""
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": resource},
        {"name": "profile", "valueUri": url}]}  # fmt: skip
    response = client.post(f"/fhir/{resource['resourceType']}/$validate", json=body,
                           headers=headers)  # fmt: skip
    assert response.status_code == 200, response.text
    issues: list[dict[str, Any]] = response.json()["issue"]
    return issues


def diagnostics(issues: list[dict[str, Any]], severity: str = "error") -> list[str]:
    return [i["diagnostics"] for i in issues if i["severity"] == severity]


OMB = "urn:oid:2.16.840.1.113883.6.238"


def race(*subs: dict[str, Any]) -> dict[str, Any]:
    return {"url": US_CORE + "us-core-race", "extension": list(subs)}


def omb(code: str, display: str) -> dict[str, Any]:
    return {"url": "ombCategory", "valueCoding": {"system": OMB, "code": code,
                                                  "display": display}}  # fmt: skip


# the US Core 5.0.1 example Patient (patient-example), as far as race and ethnicity go
US_CORE_PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "example",
    "meta": {"profile": [US_CORE + "us-core-patient"]},
    "extension": [
        race(omb("2106-3", "White"), omb("1002-5", "American Indian or Alaska Native"),
             omb("2028-9", "Asian"),
             {"url": "detailed", "valueCoding": {"system": OMB, "code": "1586-7",
                                                 "display": "Shoshone"}},
             {"url": "text", "valueString": "Mixed"}),
        {"url": US_CORE + "us-core-ethnicity", "extension": [
            omb("2135-2", "Hispanic or Latino"),
            {"url": "detailed", "valueCoding": {"system": OMB, "code": "2184-0",
                                                "display": "Dominican"}},
            {"url": "text", "valueString": "Hispanic or Latino"}]},
        {"url": US_CORE + "us-core-birthsex", "valueCode": "F"},
    ],
    "identifier": [{"system": "http://hospital.smarthealthit.org", "value": "1032702"}],
    "name": [{"family": "Shaw", "given": ["Amy", "V."]}],
    "gender": "female",
    "birthDate": "1987-02-20",
}  # fmt: skip
