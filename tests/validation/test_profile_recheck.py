"""Stored profiles as the write path sees them: a profile stored earlier in the same
transaction applies to the entries after it (its lookup flushes the rows the transaction
buffered), and the periodic recheck of a cached profile keeps its compiled checkers when the
definition did not change, compiles again when it did, and is made by one thread at a time."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.testclient import TestClient

from fhir_server.validation.profiles import Profiles

US_CORE_PATIENT = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"


def _profile(url: str) -> dict[str, Any]:
    return {
        "resourceType": "StructureDefinition",
        "url": url,
        "name": "NeedsBirthdate",
        "status": "active",
        "kind": "resource",
        "abstract": False,
        "type": "Patient",
        "derivation": "constraint",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient",
        "differential": {
            "element": [{"id": "Patient.birthDate", "path": "Patient.birthDate", "min": 1}]
        },
    }


def _bundle(url: str, patient: dict[str, Any]) -> dict[str, Any]:
    entry = [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": _profile(url),
         "request": {"method": "POST", "url": "StructureDefinition"}},
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": patient,
         "request": {"method": "POST", "url": "Patient"}},
    ]  # fmt: skip
    return {"resourceType": "Bundle", "type": "transaction", "entry": entry}


def test_profile_stored_earlier_in_the_bundle_applies_to_later_entries(
    client: TestClient,
) -> None:
    url = f"http://example.org/fhir/StructureDefinition/same-bundle-{uuid.uuid4().hex}"
    claimed = {"resourceType": "Patient", "meta": {"profile": [url]}}
    refused = client.post("/fhir", json=_bundle(url, claimed))
    assert refused.status_code == 400, refused.text
    expressions = [e for i in refused.json()["issue"] for e in i["expression"]]
    assert expressions == ["Bundle.entry[1].resource.birthDate"], refused.text
    accepted = client.post("/fhir", json=_bundle(url, {**claimed, "birthDate": "1970"}))
    assert accepted.status_code == 200, accepted.text


class _Stored:
    """A Conformance whose stored StructureDefinition the test sets, counting look-ups."""

    def __init__(self) -> None:
        self.definition: dict[str, Any] | None = None
        self.lookups = 0

    def structure_definition(self, url: str) -> dict[str, Any] | None:
        self.lookups += 1
        return self.definition

    def value_set_codes(self, url: str) -> Any:
        return None


def _expire(profiles: Profiles, url: str) -> None:
    compiled, _, source = profiles.cache[url]
    profiles.cache[url] = (compiled, 0.0, source)


def test_recheck_keeps_the_compiled_profile_until_the_definition_changes() -> None:
    profiles, stored = Profiles(), _Stored()
    builtin = profiles.compiled(US_CORE_PATIENT, stored)
    assert builtin is not None and stored.lookups == 1
    assert profiles.compiled(US_CORE_PATIENT, stored) is builtin and stored.lookups == 1
    _expire(profiles, US_CORE_PATIENT)
    assert profiles.compiled(US_CORE_PATIENT, stored) is builtin  # still not stored
    assert stored.lookups == 2
    stored.definition = _profile(US_CORE_PATIENT)  # an operator stores one under that URL
    _expire(profiles, US_CORE_PATIENT)
    replaced = profiles.compiled(US_CORE_PATIENT, stored)
    assert replaced is not None and replaced is not builtin
    assert replaced.profile is not None and replaced.profile["nodes"] != builtin.profile["nodes"]


def test_one_thread_rechecks_while_the_others_keep_the_cached_profile() -> None:
    profiles, stored = Profiles(), _Stored()
    first = profiles.compiled(US_CORE_PATIENT, stored)
    _expire(profiles, US_CORE_PATIENT)
    assert profiles._recheck_claimed("profile", US_CORE_PATIENT)  # another thread's recheck
    assert profiles.compiled(US_CORE_PATIENT, stored) is first and stored.lookups == 1
    profiles._recheck_done("profile", US_CORE_PATIENT)
    assert profiles.compiled(US_CORE_PATIENT, stored) is first and stored.lookups == 2
