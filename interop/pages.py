"""The pages around the API: `/` (what this is, where to go) and, with INTEROP_DOCS=on,
`/openapi.json` (generated from the CapabilityStatement) and `/docs` (Swagger UI, local files).

`/` is one small template (interop/templates/index.html) so other pages can link from it."""

from __future__ import annotations

import html
from functools import lru_cache
from pathlib import Path
from string import Template
from urllib.parse import urlsplit

import orjson
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from interop import openapi

TEMPLATES = Path(__file__).parent / "templates"


@lru_cache(maxsize=4)
def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


def install(app: FastAPI, capability: bytes, base_url: str, docs: bool) -> None:
    fhir_path = urlsplit(base_url).path or "/fhir"
    cap = orjson.loads(capability)
    version = str(cap.get("software", {}).get("version", ""))
    docs_line = (
        '<a href="/docs">API documentation</a> &mdash; every FHIR interaction, try it out '
        '(<a href="/openapi.json">OpenAPI</a>)'
        if docs
        else "API documentation: start the server with <code>INTEROP_DOCS=on</code> "
        "for /docs and /openapi.json"
    )
    page = _template("index.html").substitute(
        version=html.escape(version), fhir=html.escape(fhir_path), docs=docs_line
    )

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    if not docs:
        return
    description: dict[str, bytes] = {}

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_json() -> Response:
        if "doc" not in description:  # built once, on first use (about a thousand paths)
            description["doc"] = orjson.dumps(openapi.from_capability(cap, fhir_path))
        return Response(description["doc"], media_type="application/json")

    @app.get("/docs", include_in_schema=False)
    def swagger(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Interop server: FHIR API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
            swagger_ui_parameters={"docExpansion": "none", "defaultModelsExpandDepth": -1},
        )

    app.mount("/docs/assets", StaticFiles(directory=openapi.SWAGGER_ASSETS), name="swagger-ui")
