"""Every official R4 example that holds a decimal and is accepted comes back with each
decimal literal exactly as written (the issue counted 37 that came back altered)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fhir_examples import example_paths, require_examples
from starlette.testclient import TestClient

from fhir_server import fhirjson


def literals(node: Any) -> list[str]:
    """Every decimal's text, in document order."""
    if isinstance(node, Decimal):
        return [str(node)]
    if isinstance(node, dict):
        return [t for key in node if key != "meta" for t in literals(node[key])]
    if isinstance(node, list):
        return [t for item in node for t in literals(item)]
    return []


def test_examples_with_decimals_read_back_unchanged(client: TestClient) -> None:
    require_examples()
    checked, altered = 0, []
    for path in example_paths():
        raw = path.read_bytes()
        sent = fhirjson.loads(raw)
        expected = literals(sent)
        if not expected or not sent.get("id") or sent.get("resourceType") == "Bundle":
            continue
        url = f"/fhir/{sent['resourceType']}/{sent['id']}"
        put = client.put(url, content=raw, headers={"Content-Type": "application/fhir+json"})
        if put.status_code not in (200, 201):
            continue  # refused by validation: the validator's business, not this test's
        checked += 1
        if literals(fhirjson.loads(client.get(url).content)) != expected:
            altered.append(path.name)
    assert checked >= 50, f"only {checked} examples with decimals were accepted"
    assert altered == [], f"decimals altered in {altered}"
