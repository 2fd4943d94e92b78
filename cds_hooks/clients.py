"""CDS clients an operator registered (`interop cds clients add`): an EHR is known by the `iss`
of the JWTs it signs, and trusted only with the keys registered for it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine, delete, insert, select

from cds_hooks.models import cds_clients
from fhir_server.store.db import write_transaction
from smart_auth.registry import RegistryError, check_jwks
from smart_auth.scopes import parse_resource_scope

# What a client reads when it sends no access token of ours: the hook's patient only.
DEFAULT_SCOPE = (
    "patient/Patient.rs patient/Observation.rs patient/DiagnosticReport.rs "
    "patient/ImagingStudy.rs patient/ServiceRequest.rs patient/Device.rs"
)


@dataclass(frozen=True)
class CdsClient:
    iss: str
    name: str
    scope: list[str]
    jwks_url: str | None = None
    jwks: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "iss": self.iss,
            "name": self.name,
            "scope": " ".join(self.scope),
            "jwks_url": self.jwks_url,
            "jwks": "registered" if self.jwks else None,
        }


class CdsClients:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(
        self,
        iss: str,
        name: str = "",
        jwks_url: str | None = None,
        jwks: dict[str, Any] | None = None,
        scope: str = DEFAULT_SCOPE,
    ) -> CdsClient:
        if not iss.strip() or len(iss) > 512:
            raise RegistryError("--iss is the client's JWT issuer (1 to 512 characters)")
        if (jwks_url is None) == (jwks is None):
            raise RegistryError("give exactly one of --jwks-url or --jwks-file")
        if jwks_url is not None and urlsplit(jwks_url).scheme not in ("https", "http"):
            raise RegistryError("--jwks-url must be an http(s) URL")
        if jwks is not None:
            check_jwks(jwks)
        scopes = scope.split()
        bad = [s for s in scopes if (p := parse_resource_scope(s)) is None or p.perms - {"r", "s"}]
        if not scopes or bad:
            raise RegistryError(
                "--scope takes read-only resource scopes (e.g. patient/Observation.rs or "
                f"system/*.rs); not: {' '.join(bad) or '(none given)'}"
            )
        with write_transaction(self.engine) as conn:
            conn.execute(delete(cds_clients).where(cds_clients.c.iss == iss))
            conn.execute(
                insert(cds_clients).values(
                    iss=iss,
                    name=name or iss,
                    jwks_url=jwks_url,
                    jwks=json.dumps(jwks) if jwks is not None else None,
                    scope=" ".join(scopes),
                    created=int(time.time()),
                )
            )
        return CdsClient(iss, name or iss, scopes, jwks_url, jwks)

    def get(self, iss: str) -> CdsClient | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(cds_clients).where(cds_clients.c.iss == iss)).mappings()
            found = row.first()
        return _client(found) if found is not None else None

    def all(self) -> list[CdsClient]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(cds_clients).order_by(cds_clients.c.iss)).mappings()
            return [_client(r) for r in rows]

    def remove(self, iss: str) -> bool:
        with write_transaction(self.engine) as conn:
            return bool(conn.execute(delete(cds_clients).where(cds_clients.c.iss == iss)).rowcount)


def _client(row: Any) -> CdsClient:
    return CdsClient(
        iss=row["iss"],
        name=row["name"],
        scope=row["scope"].split(),
        jwks_url=row["jwks_url"],
        jwks=json.loads(row["jwks"]) if row["jwks"] else None,
    )
