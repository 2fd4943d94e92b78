"""A physician's review of an AI report: approve (final) or reject (entered-in-error).

Only a reviewed report is final. The report and its Observations change status together,
guarded by If-Match on the version the reviewer saw, and a Provenance names the reviewer
(agent type `verifier`) and, for a rejection, the reason.
"""

from __future__ import annotations

from typing import Any

from mappers.ai.writeback import provenance

REJECTION_REASON = "urn:interop:ai:rejection-reason"


class ReviewError(ValueError):
    """The report cannot be reviewed: already reviewed (a conflict), or no reason given."""

    def __init__(self, message: str, conflict: bool = False) -> None:
        super().__init__(message)
        self.conflict = conflict


def review_bundle(
    report: dict[str, Any],
    observations: list[dict[str, Any]],
    approve: bool,
    reviewer: dict[str, Any],
    now: str,
    reason: str = "",
) -> dict[str, Any]:
    if report.get("status") != "preliminary":
        raise ReviewError(
            f"DiagnosticReport/{report.get('id')} is {report.get('status')}: "
            "only a preliminary report can be approved or rejected",
            conflict=True,
        )
    if not approve and not reason.strip():
        raise ReviewError("a rejection needs a reason")
    status = "final" if approve else "entered-in-error"
    entries: list[dict[str, Any]] = []
    updated = _without_meta(report) | {"status": status}
    if not approve:
        updated["extension"] = [
            *(updated.get("extension") or []),
            {"url": REJECTION_REASON, "valueString": reason},
        ]
    entries.append(_put(updated, report))
    for obs in observations:
        if obs.get("status") in ("preliminary", "registered"):
            entries.append(_put(_without_meta(obs) | {"status": status}, obs))
    targets = [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries]
    entries.append(
        {
            "resource": provenance(
                targets,
                now,
                reviewer,
                "verifier",
                activity=(
                    ("http://terminology.hl7.org/CodeSystem/v3-DocumentCompletion", "LA")
                    if approve
                    else ("http://terminology.hl7.org/CodeSystem/v3-DataOperation", "NULLIFY")
                ),
                reason=reason,
            ),
            "request": {"method": "POST", "url": "Provenance"},
        }
    )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _without_meta(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"}


def _put(resource: dict[str, Any], seen: dict[str, Any]) -> dict[str, Any]:
    url = f"{resource['resourceType']}/{resource['id']}"
    request: dict[str, Any] = {"method": "PUT", "url": url}
    version = (seen.get("meta") or {}).get("versionId")
    if version:
        request["ifMatch"] = f'W/"{version}"'
    return {"fullUrl": url, "resource": resource, "request": request}
