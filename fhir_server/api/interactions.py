"""The FHIR API's request, response and dispatch names, kept at their old address (the
channels no longer import them: they take the store and `FhirReads`).

The interaction table is `router` (handlers in `instance`, `type_level`, `patch`, `search`,
`history`, `compartment`, `bundles`); the shared request, response and `Context` are in
`context`. New code imports those modules.
"""

from __future__ import annotations

from fhir_server.api.context import FHIR_JSON, Context, FhirRequest, FhirResponse, _parse_json
from fhir_server.api.router import dispatch
from fhir_server.errors import FhirError

__all__ = ["FHIR_JSON", "Context", "FhirError", "FhirRequest", "FhirResponse", "_parse_json",
           "dispatch"]  # fmt: skip
