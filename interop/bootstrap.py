"""First run: an empty database gets an `admin` user, and the console says what to do next.

The password comes from INTEROP_ADMIN_PASSWORD_FILE, or is generated and printed once on the
console (stdout, never through logging: log shippers must not see it). Nothing happens when the
database already has a user or a client of its operator's (the server's own imaging app, which it
registers itself, does not count): an existing deployment is never changed."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import TextIO

from sqlalchemy.exc import IntegrityError

from apps.imaging.routes import CLIENT_ID as IMAGING_APP
from interop.settings import Settings
from smart_auth.registry import Registry, RegistryError

ADMIN = "admin"


def first_run(registry: Registry, settings: Settings, out: TextIO | None = None) -> bool:
    """Create the admin user on an empty database and print the next steps; True if it did."""
    if registry.users() or any(c.client_id != IMAGING_APP for c in registry.clients()):
        return False
    out = out or sys.stdout
    if settings.admin_password_file:
        password = Path(settings.admin_password_file).read_text().strip()
        told = f"the password in {settings.admin_password_file}"
    else:
        password = secrets.token_urlsafe(15)
        told = f"password {password}  (shown once: store it now)"
    try:
        registry.add_user(ADMIN, password, "admin", None)
    except (RegistryError, IntegrityError):
        return False  # replicas starting together: another one created it first
    root = settings.effective_base_url.rsplit("/fhir", 1)[0]
    out.write(
        f"""
First start: created the user '{ADMIN}' with {told}

Next steps:
  1. Sign in to the console:  {root}/console  (user {ADMIN})
  2. Get a token for scripts (the client id is printed by the first command):
       .venv/bin/interop clients add --name me --type confidential-secret --scope 'system/*.rs'
       TOKEN=$(.venv/bin/interop token --client CLIENT_ID --scope 'system/*.rs')
       curl -H "Authorization: Bearer $TOKEN" '{settings.effective_base_url}/Patient?_count=5'
  3. Send a sample message, or load the demo data set:
       .venv/bin/interop hl7 send examples/hl7/oru-r01.hl7
       .venv/bin/interop demo

"""
    )
    out.flush()
    return True
