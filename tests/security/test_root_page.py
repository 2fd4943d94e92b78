"""`/` is open to anyone who reaches the port: it must say nothing but where to go (no data, no
configuration); the Swagger UI files, like /docs, are not served unless INTEROP_DOCS=on."""

from __future__ import annotations

from starlette.testclient import TestClient

from interop.app import create_app
from interop.settings import Settings


def test_root_page_holds_no_configuration_and_docs_assets_are_closed(database_url: str) -> None:
    settings = Settings(database_url=database_url, orthanc_url="http://pacs.invalid:8042",
                        orthanc_user="pacs-user", orthanc_password="pacs-secret")  # fmt: skip
    with TestClient(create_app(settings)) as http:
        page = http.get("/")
        assert page.status_code == 200
        for secret in ("pacs-secret", "pacs-user", "pacs.invalid", database_url):
            assert secret not in page.text
        for path in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
            assert http.get(path).status_code == 404
