"""HTTP client for OpenEMR's Standard REST API, FHIR API and OAuth2 token endpoint.

It absorbs OpenEMR's quirks in one place: three response styles (an envelope with real status
codes, the same envelope always answered 200, bare arrays with an empty 404), `validationErrors`
as an object, 400 `invalid or nonexisting value` meaning "not found", and `404 []` from the FHIR
API. Retries with backoff cover 5xx answers and connection failures, nothing else.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

import outbound
from openemr_bridge.config import OpenEmrConfig
from openemr_bridge.errors import (
    OpenEmrAuthError,
    OpenEmrError,
    OpenEmrNotFound,
    OpenEmrUnavailable,
    OpenEmrValidationError,
    describe,
)
from openemr_bridge.tokens import Kind, TokenCache

log = logging.getLogger("interop.openemr")
NOT_FOUND_TEXT = "invalid or nonexisting value"
Style = Literal["envelope", "rows", "fhir"]


class OpenEmrClient:
    def __init__(
        self,
        config: OpenEmrConfig,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.sleep = sleep
        self.http = outbound.Client(config.policy(), verify=config.tls_verify())
        self.tokens = TokenCache(config, self._post_token_form, clock)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> OpenEmrClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- Standard REST API ----------------------------------------------------------------------

    def patients(self, limit: int = 100, offset: int = 0, **filters: str) -> list[dict[str, Any]]:
        params = {**filters, "_limit": str(limit), "_offset": str(offset)}
        return self._list(self.api("GET", "/patient", params=params))

    def patient(self, puuid: str) -> dict[str, Any] | None:
        try:
            data = self.api("GET", f"/patient/{puuid}")
        except OpenEmrNotFound:
            return None
        return data if isinstance(data, dict) and data else None

    def create_patient(self, body: dict[str, str]) -> dict[str, Any]:
        """POST /patient -> {"pid": .., "uuid": ..}; a refusal raises OpenEmrValidationError."""
        data = self.api("POST", "/patient", json_body=body)
        if not isinstance(data, dict) or "uuid" not in data:
            raise OpenEmrError("POST /patient", 201, "no pid/uuid in the answer")
        return data

    def encounters(self, puuid: str) -> list[dict[str, Any]]:
        return self._list(self._or_empty(lambda: self.api("GET", f"/patient/{puuid}/encounter")))

    def medical_problems(self, puuid: str) -> list[dict[str, Any]]:
        return self._list(
            self._or_empty(lambda: self.api("GET", f"/patient/{puuid}/medical_problem"))
        )

    def allergies(self, puuid: str) -> list[dict[str, Any]]:
        return self._list(self._or_empty(lambda: self.api("GET", f"/patient/{puuid}/allergy")))

    def vitals(self, pid: str, eid: str) -> list[dict[str, Any]]:
        return self._list(self.api("GET", f"/patient/{pid}/encounter/{eid}/vital", style="rows"))

    def medications(self, pid: str) -> list[dict[str, Any]]:
        return self._list(self.api("GET", f"/patient/{pid}/medication", style="rows"))

    def prescriptions(self) -> list[dict[str, Any]]:
        return self._list(self._or_empty(lambda: self.api("GET", "/prescription")))

    # -- FHIR API (read-only system/* token) ----------------------------------------------------

    def fhir_read(self, res_type: str, res_id: str) -> dict[str, Any] | None:
        try:
            body = self.request("GET", f"/{res_type}/{res_id}", api="fhir", style="fhir")
        except OpenEmrNotFound:
            return None
        return body if isinstance(body, dict) else None

    def fhir_search(self, res_type: str, params: dict[str, str]) -> list[dict[str, Any]]:
        body = self.request("GET", f"/{res_type}", api="fhir", style="fhir", params=params)
        if not isinstance(body, dict):
            return []
        return [e["resource"] for e in body.get("entry") or [] if isinstance(e, dict)]

    # -- the plumbing ---------------------------------------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        json_body: Any = None,
        style: Style = "envelope",
    ) -> Any:
        return self.request(method, path, "api", style, params, json_body)

    def request(
        self,
        method: str,
        path: str,
        api: Literal["api", "fhir"] = "api",
        style: Style = "envelope",
        params: dict[str, str] | None = None,
        json_body: Any = None,
    ) -> Any:
        base = self.config.api_base if api == "api" else self.config.fhir_base
        endpoint = f"{method} {urlsplit(base).path}{path}"
        kind: Kind = "api" if api == "api" else "system"
        for attempt in (1, 2):
            token = self.tokens.get(kind)
            response = self._send(
                endpoint,
                method,
                base + path,
                params=params,
                json=json_body,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            )
            if response.status_code == 401 and attempt == 1:
                self.tokens.invalidate(kind, token)  # expired or revoked early: renew once
                continue
            return parse(endpoint, response, style)
        raise AssertionError("unreachable")

    def _send(self, endpoint: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Retries 5xx and connection failures with exponential backoff; a POST that may have
        reached OpenEMR (read timeout, dropped answer) is not repeated, to avoid duplicates."""
        last: Exception | None = None
        for attempt in range(self.config.retries + 1):
            if attempt:
                self.sleep(self.config.backoff * 2 ** (attempt - 1))
            try:
                response = self.http.request(method, url, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                last = exc
                continue
            except httpx.TransportError as exc:
                if method != "GET":
                    raise OpenEmrUnavailable(endpoint, None, f"{type(exc).__name__}") from exc
                last = exc
                continue
            if response.status_code >= 500:
                last = OpenEmrUnavailable(endpoint, response.status_code, _said(response))
                log.warning("OpenEMR %s answered %s, retrying", endpoint, response.status_code)
                continue
            return response
        if isinstance(last, OpenEmrUnavailable):
            raise last
        raise OpenEmrUnavailable(
            endpoint,
            None,
            f"unreachable after {self.config.retries + 1} attempts ({type(last).__name__})",
        ) from last

    def _post_token_form(self, url: str, form: dict[str, str]) -> dict[str, Any]:
        endpoint = f"POST {urlsplit(url).path}"
        response = self._send(endpoint, "POST", url, data=form)
        body = _json(response)
        if response.status_code != 200 or not isinstance(body, dict):
            detail = _said(response)
            raise OpenEmrAuthError(endpoint, response.status_code, detail)
        return body

    @staticmethod
    def _or_empty(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except OpenEmrNotFound:
            return []

    @staticmethod
    def _list(data: Any) -> list[dict[str, Any]]:
        if isinstance(data, list):
            return [row for row in data if isinstance(row, dict)]
        return [data] if isinstance(data, dict) and data else []


def parse(endpoint: str, response: httpx.Response, style: Style) -> Any:
    """One response, whichever of OpenEMR's styles, to data or a clear exception."""
    status = response.status_code
    body = _json(response)
    if status == 401:
        raise OpenEmrAuthError(endpoint, status, _said(response))
    if style == "rows" and status == 404 and not response.content.strip():
        return []  # bare-array endpoints answer an empty list with an empty 404
    if style == "fhir" and status == 404 and body == []:
        raise OpenEmrNotFound(endpoint, status, "no such resource")
    if isinstance(body, dict) and "validationErrors" in body:
        errors = body.get("validationErrors")
        if errors:
            if NOT_FOUND_TEXT in json.dumps(errors):
                raise OpenEmrNotFound(endpoint, status, describe(errors))
            raise OpenEmrValidationError(
                endpoint, status, errors if isinstance(errors, dict) else {"": errors}
            )
        if body.get("internalErrors"):
            raise OpenEmrError(endpoint, status, describe(body["internalErrors"]))
        if status >= 400:
            raise OpenEmrError(endpoint, status, _said(response))
        return body.get("data") if "data" in body else body
    if status >= 400:
        raise OpenEmrError(endpoint, status, _said(response))
    return body


def _json(response: httpx.Response) -> Any:
    if not response.content.strip():
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _said(response: httpx.Response) -> str:
    """What OpenEMR said, shortly: its error fields, or the start of the body."""
    body = _json(response)
    if isinstance(body, dict):
        for keys in (("error_description", "hint"), ("message",), ("error",)):
            parts = [str(body[k]) for k in keys if body.get(k)]
            if parts:
                text = " - ".join(parts)
                if keys[0] == "error_description" and body.get("error"):
                    text = f"{body['error']}: {text}"
                return text
        if body.get("validationErrors"):
            return describe(body["validationErrors"])
    text = response.text.strip()
    return text[:200] if text else "(empty body)"
