"""What can go wrong talking to OpenEMR, as exceptions that name the endpoint and its answer.

Messages never carry credentials: they are built from the endpoint path (no query string, which
may hold patient names) and from what OpenEMR said.
"""

from __future__ import annotations

from typing import Any


class OpenEmrError(Exception):
    """OpenEMR refused or failed a request."""

    def __init__(self, endpoint: str, status: int | None, detail: str) -> None:
        self.endpoint = endpoint
        self.status = status
        self.detail = detail
        where = f"OpenEMR {endpoint}"
        super().__init__(f"{where} answered {status}: {detail}" if status else f"{where}: {detail}")


class OpenEmrNotFound(OpenEmrError):
    """The record does not exist (OpenEMR says so with 400, 404 `[]` or an empty 404)."""


class OpenEmrValidationError(OpenEmrError):
    """OpenEMR's validator refused the data; `errors` is its `validationErrors` object."""

    def __init__(self, endpoint: str, status: int | None, errors: dict[str, Any]) -> None:
        self.errors = errors
        super().__init__(endpoint, status, "validation failed: " + describe(errors))


class OpenEmrAuthError(OpenEmrError):
    """Getting or using an OpenEMR token failed (wrong client, disabled client, grant off)."""


class OpenEmrUnavailable(OpenEmrError):
    """OpenEMR could not be reached or kept failing with 5xx after the retries."""


def describe(errors: Any) -> str:
    """Flatten Particle validator messages: {"lname": {"Required::...": "Last Name must..."}}."""
    if isinstance(errors, dict):
        parts: list[str] = []
        for field, value in errors.items():
            if isinstance(value, dict):
                parts.extend(
                    f"{field}: {message}" if "::" in rule else f"{field}: {rule}{message}"
                    for rule, message in value.items()
                )
            else:
                parts.append(f"{field}: {value}")
        return "; ".join(parts)
    if isinstance(errors, list):
        return "; ".join(describe(e) if not isinstance(e, str) else e for e in errors)
    return str(errors)
