"""Server-rendered HTML for login, patient picking and consent: small, escaped, no scripts.

Every page is sent with `framing()` headers: no site may frame it (clickjacking), except the
configured EHR origins for the pages of an EHR launch, which open inside the EHR.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}"
    "label{display:block;margin:.5rem 0}input[type=text],input[type=password]{width:100%}"
    "button{margin-top:1rem;padding:.4rem 1rem}.error{color:#b00020}"
    ".warning{border:2px solid #b00020;padding:.5rem;background:#fff4f4}"
)
# no scripts, no images, no plugins; only the inline style above
_CSP_REST = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'"


def framing(origins: Sequence[str] = ()) -> dict[str, str]:
    """Headers for an HTML page: framed by nobody, or by exactly `origins` (e.g. OpenEMR's).
    X-Frame-Options cannot name an origin, so it is only sent when nobody may frame."""
    headers = {
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
    if origins:
        headers["Content-Security-Policy"] = f"frame-ancestors {' '.join(origins)}; {_CSP_REST}"
    else:
        headers["Content-Security-Policy"] = f"frame-ancestors 'none'; {_CSP_REST}"
        headers["X-Frame-Options"] = "DENY"
    return headers


@dataclass(frozen=True, slots=True)
class AppShown:
    """What the user is told about the app asking: its name, whether an operator registered
    it, and the host its answer goes to (a self-registered name proves nothing)."""

    name: str
    verified: bool
    redirect_host: str

    def html(self, asks: str) -> str:
        name, host = escape(self.name), escape(self.redirect_host)
        if self.verified:
            return f"<p>{name} {asks}</p><p>The answer goes to <strong>{host}</strong>.</p>"
        return (
            f'<div class="warning"><p><strong>Unverified app.</strong> "{name}" registered '
            "itself; your organisation has not checked who made it, and the name may be "
            f"anything.</p><p>It {asks} The answer goes to <strong>{host}</strong>. "
            "Continue only if you trust that site.</p></div>"
        )


SCOPE_TEXT = {
    "openid": "Know who you are",
    "fhirUser": "Know your FHIR user record",
    "profile": "Know your profile",
    "launch": "Open in the current EHR context",
    "launch/patient": "Know which patient is chosen",
    "launch/encounter": "Know which encounter is chosen",
    "offline_access": "Keep access when you are not using the app",
    "online_access": "Keep access while you are signed in",
}


def page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
        f'</title><meta name="viewport" content="width=device-width"><style>{_STYLE}</style>'
        f"</head><body><h1>{escape(title)}</h1>{body}</body></html>"
    )


def _hidden(request_id: str, csrf: str) -> str:
    return (
        f'<input type="hidden" name="request" value="{escape(request_id)}">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
    )


def login_page(request_id: str, csrf: str, app: AppShown, error: str = "") -> str:
    message = f'<p class="error">{escape(error)}</p>' if error else ""
    return page(
        "Sign in",
        f"{app.html('asks for access to health records.')}{message}"
        f'<form method="post" action="login">{_hidden(request_id, csrf)}'
        '<label>User name <input type="text" name="username" autocomplete="username" required>'
        '</label><label>Password <input type="password" name="password" '
        'autocomplete="current-password" required></label>'
        "<button type=submit>Sign in</button></form>",
    )


def picker_page(
    request_id: str, csrf: str, patients: list[tuple[str, str]], search: str = ""
) -> str:
    finder = (
        '<form method="get" action="pick">'
        f'<input type="hidden" name="request" value="{escape(request_id)}">'
        f'<label>Find by name <input type="text" name="q" value="{escape(search)}"></label>'
        "<button type=submit>Search</button></form>"
    )
    if not patients:
        found = "No patient matches." if search else "There are no patients to choose from."
        return page("Choose a patient", f"{finder}<p>{found}</p>")
    return page(
        "Choose a patient",
        finder + _choices("pick", "patient", request_id, csrf, patients, "Continue"),
    )


def encounter_page(request_id: str, csrf: str, encounters: list[tuple[str, str]]) -> str:
    if not encounters:
        return page(
            "Choose an encounter",
            "<p>This patient has no encounters to choose from.</p>"
            + _choices("encounter", "encounter", request_id, csrf, [], "Continue without"),
        )
    return page(
        "Choose an encounter",
        _choices("encounter", "encounter", request_id, csrf, encounters, "Continue"),
    )


def _choices(
    action: str, name: str, request_id: str, csrf: str, items: list[tuple[str, str]], button: str
) -> str:
    options = "".join(
        f'<label><input type="radio" name="{name}" value="{escape(value)}" required> '
        f"{escape(label)} <small>({escape(value)})</small></label>"
        for value, label in items
    )
    return (
        f'<form method="post" action="{action}">{_hidden(request_id, csrf)}{options}'
        f"<button type=submit>{escape(button)}</button></form>"
    )


def consent_page(
    request_id: str, csrf: str, app: AppShown, scopes: list[str], patient: str | None
) -> str:
    items = "".join(
        f'<label><input type="checkbox" name="scope" value="{escape(s)}" checked> '
        f"<code>{escape(s)}</code> {escape(SCOPE_TEXT.get(s, ''))}</label>"
        for s in scopes
    )
    about = f"<p>Patient: <code>{escape(patient)}</code></p>" if patient else ""
    return page(
        "Allow access?",
        app.html("asks for the access below; untick what you do not want to share.")
        + f'{about}<form method="post" action="consent">{_hidden(request_id, csrf)}'
        f"{items}<button type=submit name=decision value=allow>Allow</button> "
        "<button type=submit name=decision value=deny>Deny</button></form>",
    )


def error_page(message: str) -> str:
    return page("Authorization failed", f'<p class="error">{escape(message)}</p>')
