"""CDS Hooks 2.0 card JSON, and the stable uuid of a card.

A card's uuid is derived from the service and what it is about (resource and version), so the
same finding gets the same uuid on every call and feedback on it can be tied back to it.
"""

from __future__ import annotations

import uuid
from typing import Any

NAMESPACE = uuid.UUID("7d3f4a52-4c1e-4d0b-9a6e-cd5b1f1d0c11")
INDICATORS = ("info", "warning", "critical")
SOURCE = "Interop server"


def card_uuid(service: str, *parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "|".join((service, *parts))))


def card(
    uid: str,
    summary: str,
    indicator: str,
    source: str,
    detail: str = "",
    links: list[dict[str, Any]] | None = None,
    suggestions: list[dict[str, Any]] | None = None,
    override_reasons: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    assert indicator in INDICATORS
    out: dict[str, Any] = {
        "uuid": uid,
        "summary": summary if len(summary) < 140 else summary[:136] + "...",
        "indicator": indicator,
        "source": {"label": source},
    }
    if detail:
        out["detail"] = detail
    if suggestions:
        out["suggestions"] = suggestions
        out["selectionBehavior"] = "at-most-one"
    if override_reasons:
        out["overrideReasons"] = override_reasons
    if links:
        out["links"] = links
    return out


def smart_link(label: str, url: str, app_context: str) -> dict[str, Any]:
    return {"label": label, "url": url, "type": "smart", "appContext": app_context}


def quantity_text(resource: dict[str, Any]) -> str:
    """An Observation's value as a clinician reads it: '6.9 mmol/L', 'Positive', ..."""
    q = resource.get("valueQuantity")
    if isinstance(q, dict) and q.get("value") is not None:
        unit = q.get("unit") or q.get("code") or ""
        comparator = q.get("comparator") or ""
        return f"{comparator}{q['value']} {unit}".strip()  # the value as sent (its precision)
    cc = resource.get("valueCodeableConcept")
    if isinstance(cc, dict):
        return str(
            cc.get("text")
            or next((c.get("display") or c.get("code") for c in cc.get("coding") or []), "")
        )
    for key in ("valueString", "valueInteger", "valueBoolean"):
        if key in resource:
            return str(resource[key])
    return "(no value)"


def concept_text(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding") or []:
        if coding.get("display") or coding.get("code"):
            return str(coding.get("display") or coding.get("code"))
    return ""
