"""In-memory matching of content against simple search parameters (SQL semantics)."""

from __future__ import annotations

import pytest

from fhir_server.search.extract import extract
from fhir_server.search.match import unmatched

OBS = {
    "resourceType": "Observation",
    "status": "final",
    "category": [{"coding": [{"system": "http://cat", "code": "laboratory"}]}],
    "code": {"coding": [{"code": "nosys"}], "text": "Glucose"},
    "subject": {"reference": "Patient/p1"},
}


@pytest.mark.parametrize(
    ("query", "ok"),
    [
        ([("category", "http://cat|laboratory")], True),
        ([("category", "laboratory")], True),
        ([("category", "http://cat|")], True),
        ([("category", "|laboratory")], False),  # it has a system
        ([("code", "|nosys")], True),
        ([("category", "http://cat|vital-signs,http://cat|laboratory")], True),
        ([("category", "http://cat|vital-signs")], False),
        ([("subject", "Patient/p1")], True),
        ([("subject", "p1")], True),
        ([("subject", "Patient/p2")], False),
        ([("status", "final"), ("category", "laboratory")], True),
        ([("status", "final"), ("category", "imaging")], False),
    ],
)
def test_token_and_reference(query: list[tuple[str, str]], ok: bool) -> None:
    assert (unmatched("Observation", extract(OBS), query) is None) is ok


def test_string_is_normalised_starts_with() -> None:
    patient = {"resourceType": "Patient", "name": [{"family": "Müller"}]}
    assert unmatched("Patient", extract(patient), [("family", "mull")]) is None
    assert unmatched("Patient", extract(patient), [("family", "ller")]) is not None


def test_what_cannot_be_judged_is_refused_with_a_reason() -> None:
    rows = extract(OBS)
    assert "cannot be checked" in (unmatched("Observation", rows, [("code:text", "x")]) or "")
    assert "date" in (unmatched("Observation", rows, [("date", "2020")]) or "")
    assert "cannot be checked" in (unmatched("Observation", rows, [("nonsense", "1")]) or "")
