"""Wiring the authorization server into the ASGI app (called by `interop.app.create_app`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from starlette.applications import Starlette

from smart_auth.access import GrantAccess
from smart_auth.config import AuthConfig
from smart_auth.discovery import security_extension
from smart_auth.policy import AccessPolicy, Grant
from smart_auth.roles import load_roles
from smart_auth.routes import auth_routes, discovery_routes
from smart_auth.server import AuthServer


def install(
    app: Starlette, engine: Engine, config: AuthConfig, policy: AccessPolicy
) -> tuple[AuthServer, Callable[[Grant], GrantAccess], list[dict[str, Any]]]:
    """Mount /auth and discovery, register the token verifier; return the server, the factory
    of per-request access checks and the CapabilityStatement security extensions."""
    server = AuthServer(engine, config)
    server.keys.load()
    policy.verifiers.append(server.tokens.verify)
    roles = load_roles(config.roles_file)
    # ahead of the /fhir catch-all, so `.well-known` is not taken for a resource type
    app.router.routes[:0] = [*discovery_routes(server), *auth_routes(server)]
    app.state.auth = server

    def access_for(grant: Grant) -> GrantAccess:
        return GrantAccess(grant, roles, config.fhir_base)

    return server, access_for, [security_extension(config)]
