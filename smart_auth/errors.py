"""OAuth2 errors (RFC 6749 §5.2), rendered as JSON with the no-store headers."""

from __future__ import annotations

from starlette.responses import JSONResponse

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def response(self) -> JSONResponse:
        headers = dict(NO_STORE)
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="token"'
        return JSONResponse(
            {"error": self.error, "error_description": self.description}, self.status, headers
        )


def invalid_client() -> OAuthError:
    """One answer for every client-authentication failure: never say which part was wrong."""
    return OAuthError("invalid_client", "Client authentication failed", 401)


def invalid_request(description: str) -> OAuthError:
    return OAuthError("invalid_request", description)


def invalid_grant(description: str) -> OAuthError:
    return OAuthError("invalid_grant", description)


def invalid_scope(description: str) -> OAuthError:
    return OAuthError("invalid_scope", description)
