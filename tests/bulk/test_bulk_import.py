"""$import from http(s) sources and uploads, the per-line error report, and `interop import`."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from bulk_helpers import ASYNC, ndjson, wait_for
from starlette.testclient import TestClient


def population(patients: int) -> dict[str, list[dict[str, Any]]]:
    """A small generated population: patients, their conditions and observations."""
    out: dict[str, list[dict[str, Any]]] = {"Patient": [], "Condition": [], "Observation": []}
    for p in range(patients):
        pid = f"gen-{p}"
        out["Patient"].append(
            {
                "resourceType": "Patient",
                "id": pid,
                "gender": "female" if p % 2 else "male",
                "birthDate": f"19{50 + p % 50}-01-01",
                "name": [{"family": f"Family{p}", "given": ["Test"]}],
            }
        )
        out["Condition"].append(
            {
                "resourceType": "Condition",
                "id": f"cond-{p}",
                "subject": {"reference": f"Patient/{pid}"},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
            }
        )
        for o in range(3):
            out["Observation"].append(
                {
                    "resourceType": "Observation",
                    "id": f"obs-{p}-{o}",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "subject": {"reference": f"Patient/{pid}"},
                    "valueQuantity": {"value": 60 + o, "unit": "/min"},
                }
            )
    return out


def to_ndjson(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving the files of a folder."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()


def total(api: TestClient, query: str) -> int:
    joiner = "&" if "?" in query else "?"
    response = api.get(f"/fhir/{query}{joiner}_summary=count")
    assert response.status_code == 200, response.text
    return int(response.json()["total"])


def kick_off(api: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    kick = api.post("/fhir/$import", json=body, headers=ASYNC)
    assert kick.status_code == 202, kick.text
    done = wait_for(api, kick.headers["Content-Location"])
    assert done.status_code == 200, done.text
    result: dict[str, Any] = done.json()
    return result


def test_import_of_a_generated_population_from_http(
    api: TestClient, file_server: tuple[str, Path]
) -> None:
    url, folder = file_server
    data = population(12)
    for res_type, rows in data.items():
        (folder / f"{res_type}.ndjson").write_bytes(to_ndjson(rows))
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
            {"name": "inputSource", "valueUri": url},
            *(
                {
                    "name": "input",
                    "part": [
                        {"name": "type", "valueCode": t},
                        {"name": "url", "valueUri": f"{url}/{t}.ndjson"},
                    ],
                }
                for t in data
            ),
        ],
    }
    result = kick_off(api, body)
    assert {o["type"]: o["count"] for o in result["output"]} == {
        "Patient": 12,
        "Condition": 12,
        "Observation": 36,
    }
    assert result["error"] == []
    assert total(api, "Patient") == 12
    assert total(api, "Observation?code=http://loinc.org|8867-4") == 36
    assert total(api, "Condition?subject=Patient/gen-3") == 1
    assert total(api, "Patient?gender=female") == 6
    again = kick_off(api, body)  # the same files again: same ids, no new versions
    assert sum(o["count"] for o in again["output"]) == 60
    assert api.get("/fhir/Patient/gen-1").json()["meta"]["versionId"] == "1"


def test_uploaded_file_with_bad_lines_gets_a_per_line_report(api: TestClient) -> None:
    good = population(2)["Observation"]
    lines = [
        orjson.dumps(good[0]),
        b"{not json",
        orjson.dumps({"resourceType": "Observation", "id": "no-status", "code": {"text": "x"}}),
        b"",
        orjson.dumps({"resourceType": "Patient", "id": "wrong-type"}),
        orjson.dumps(good[1]),
    ]
    upload = api.post(
        "/fhir/$bulk-upload",
        content=b"\n".join(lines),
        headers={"Content-Type": "application/fhir+ndjson"},
    )
    assert upload.status_code == 201, upload.text
    source = upload.headers["Location"]
    result = kick_off(api, {"input": [{"type": "Observation", "url": source}]})
    assert result["output"] == [{"type": "Observation", "inputUrl": source, "count": 2}]
    (report,) = result["error"]
    assert report["count"] == 3
    texts = sorted(
        (o["issue"][0]["diagnostics"] for o in ndjson(api, report["url"])),
        key=lambda t: int(t.split(" line ")[1].split(":")[0]),
    )
    assert texts[0].startswith(f"{source} line 2: not JSON")
    assert texts[1].startswith(f"{source} line 3:") and "status" in texts[1]
    assert texts[2].startswith(f"{source} line 5: a Patient in an input declared as Observation")
    assert total(api, "Observation") == 2


def test_unreachable_source_is_reported(api: TestClient, file_server: tuple[str, Path]) -> None:
    url, _ = file_server
    result = kick_off(api, {"input": [{"type": "Patient", "url": f"{url}/missing.ndjson"}]})
    (report,) = result["error"]
    (outcome,) = ndjson(api, report["url"])
    assert "404" in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    "body",
    [
        {"input": [{"type": "Patient", "url": "file:///etc/passwd"}]},
        {"input": [{"type": "Nonsense", "url": "http://127.0.0.1/x.ndjson"}]},
        {"inputFormat": "text/csv", "input": [{"type": "Patient", "url": "http://x/y"}]},
        {"input": []},
        {"resourceType": "Parameters", "parameter": []},
        ["not", "an", "object"],
    ],
)
def test_bad_import_requests_are_400(api: TestClient, body: Any) -> None:
    response = api.post("/fhir/$import", json=body, headers=ASYNC)
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def test_upload_needs_ndjson(api: TestClient) -> None:
    response = api.post("/fhir/$bulk-upload", json={"a": 1})
    assert response.status_code == 415


def test_interop_import_command(
    api: TestClient,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from interop.cli import main
    from interop.settings import get_settings

    data = population(5)
    files = []
    for res_type, rows in data.items():
        path = tmp_path / f"{res_type}.ndjson"
        path.write_bytes(to_ndjson(rows) + b"oops\n")
        files.append(str(path))
    monkeypatch.setenv("INTEROP_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        code = main(["import", *files, "--batch", "4", "--json"])
    finally:
        get_settings.cache_clear()
    out, err = capsys.readouterr()
    summary = orjson.loads(out)
    assert code == 1  # the bad lines
    assert summary["loaded"] == 25 and summary["failed"] == 3
    assert summary["byType"] == {"Patient": 5, "Condition": 5, "Observation": 15}
    assert f"{files[0]}:6: not JSON" in err
    assert total(api, "Patient") == 5 and total(api, "Observation") == 15
