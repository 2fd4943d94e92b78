"""One exception for every FHIR error, rendered as an OperationOutcome in one place."""

from __future__ import annotations

from typing import Any

import orjson


class FhirError(Exception):
    """A failure the client should see: HTTP status, FHIR IssueType code, and what to fix."""

    def __init__(
        self,
        status: int,
        diagnostics: str,
        code: str = "invalid",
        expression: list[str] | None = None,
        severity: str = "error",
        headers: dict[str, str] | None = None,
        issues: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.issues = issues  # every issue, when there is more than one to report
        self.status = status
        self.diagnostics = diagnostics
        self.code = code
        self.expression = expression or []
        self.severity = severity
        self.headers = headers or {}

    def outcome(self) -> dict[str, Any]:
        if self.issues:
            return {"resourceType": "OperationOutcome", "issue": self.issues}
        return operation_outcome(self.diagnostics, self.code, self.severity, self.expression)


def operation_outcome(
    diagnostics: str,
    code: str = "invalid",
    severity: str = "error",
    expression: list[str] | None = None,
) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = expression
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def outcome_bytes(
    diagnostics: str, code: str = "informational", severity: str = "information"
) -> bytes:
    return orjson.dumps(operation_outcome(diagnostics, code, severity))


def bad_request(diagnostics: str, expression: list[str] | None = None) -> FhirError:
    return FhirError(400, diagnostics, "invalid", expression)


def not_found(diagnostics: str) -> FhirError:
    return FhirError(404, diagnostics, "not-found")


def gone(diagnostics: str) -> FhirError:
    return FhirError(410, diagnostics, "deleted")


def conflict(diagnostics: str) -> FhirError:
    return FhirError(409, diagnostics, "conflict")


def precondition_failed(diagnostics: str) -> FhirError:
    return FhirError(412, diagnostics, "conflict")
