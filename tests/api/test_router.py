"""The interaction table (`fhir_server.api.router`) and the operation registry: what a client
sees for paths and methods the table does not take, operations registered at every level, and
write hooks; plus the package boundary the registry exists for."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from fhir_server.api.capability import capability_bytes
from fhir_server.api.context import Context, FhirRequest, FhirResponse
from fhir_server.api.operations import Operation, Operations
from fhir_server.api.router import dispatch
from fhir_server.errors import FhirError


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "Patient/123", "GET, PUT, PATCH, DELETE"),
        ("PUT", "Patient/_search", "POST"),
        ("DELETE", "_history", "GET"),
        ("DELETE", "Patient/1/_history/1", "GET"),
        ("GET", "", "POST"),
        ("POST", "$bulk-status/nope", "GET, DELETE"),
        ("PUT", "Patient/$export", "GET, POST"),
    ],
)
def test_a_method_the_path_does_not_take_is_405_naming_those_it_does(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    response = client.request(method, f"/fhir/{path}", json={"resourceType": "Patient"})
    assert response.status_code == 405
    assert response.headers["Allow"] == allow
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("Foo/1", "not-supported"),  # no such resource type
        ("Foo/1/$everything", "not-supported"),
        ("$no-such-operation", "not-supported"),
        ("Patient/1/_history/1/more", "not-found"),  # no such interaction
        ("Observation/1/$everything", "not-found"),
        ("Patient/1/Organization", "not-found"),  # not in the Patient compartment
    ],
)
def test_a_path_outside_the_table_is_404(client: TestClient, path: str, code: str) -> None:
    response = client.get(f"/fhir/{path}")
    assert response.status_code == 404
    assert response.json()["issue"][0]["code"] == code


def _echo(name: str) -> Any:
    def handler(ctx: Context, req: FhirRequest, *args: str) -> FhirResponse:
        return FhirResponse(200, orjson.dumps({"op": name, "args": list(args)}))

    return handler


def test_operations_registered_at_each_level_are_routed(app: Any) -> None:
    ctx = Context(app.state.store, "http://test/fhir")
    ops = ctx.operations
    get = frozenset({"GET"})
    ops.register(Operation("", "$ping", _echo("system"), get, "", level="system"))
    ops.register(Operation("Observation", "$stats", _echo("type"), get, "", level="type"))
    ops.register(Operation("Observation", "$explain", _echo("instance"), get, ""))
    ops.register(Operation("", "$job", _echo("tail"), get, "", level="system", tail=("a", "b")))

    def call(*path: str) -> dict[str, Any]:
        response = dispatch(ctx, FhirRequest("GET", list(path)))
        assert response.interaction == "operation"
        return dict(orjson.loads(response.body or b"{}"))

    assert call("$ping") == {"op": "system", "args": []}
    assert call("Observation", "$stats") == {"op": "type", "args": []}
    assert call("Observation", "o1", "$explain") == {"op": "instance", "args": ["o1"]}
    assert call("$job", "j1", "f.ndjson") == {"op": "tail", "args": ["j1", "f.ndjson"]}
    with pytest.raises(FhirError) as refused:  # registered for Observation only
        dispatch(ctx, FhirRequest("GET", ["Patient", "p1", "$explain"]))
    assert refused.value.status == 404
    with pytest.raises(FhirError) as wrong_method:
        dispatch(ctx, FhirRequest("POST", ["$ping"]))
    assert (wrong_method.value.status, wrong_method.value.headers["Allow"]) == (405, "GET")


def test_one_path_and_method_takes_one_operation() -> None:
    ops = Operations()
    ops.register(Operation("Patient", "$x", _echo("a")))
    with pytest.raises(ValueError):
        ops.register(Operation("Patient", "$x", _echo("b")))
    with pytest.raises(ValueError):
        ops.register(Operation("Patient", "$y", _echo("c"), level="system"))


def test_capability_statement_lists_registered_operations_on_their_level() -> None:
    ops = Operations()
    both = frozenset({"GET", "POST"})
    ops.register(Operation("", "$ping", _echo("s"), both, "", "urn:ping", level="system"))
    ops.register(Operation("Observation", "$stats", _echo("t"), level="type"))
    ops.register(Operation("", "$hidden", _echo("h"), level="system", listed=False))
    statement = orjson.loads(ops.advertise(capability_bytes("http://test/fhir", "1", False)))
    rest = statement["rest"][0]
    assert rest["operation"] == [{"name": "ping", "definition": "urn:ping"}]
    types = {r["type"]: r for r in rest["resource"]}
    assert [o["name"] for o in types["Observation"]["operation"]] == ["stats"]


def test_write_hooks_run_around_requests_on_their_type(app: Any) -> None:
    ctx = Context(app.state.store, "http://test/fhir")
    seen: list[tuple[str, Any]] = []

    class Hook:
        def before_write(self, ctx: Context, req: FhirRequest) -> None:
            seen.append(("before", req.method))

        def after_write(self, ctx: Context, response: FhirResponse) -> None:
            seen.append(("after", response.status))

    ctx.operations.hook("Patient", Hook())
    body = orjson.dumps({"resourceType": "Patient"})
    dispatch(ctx, FhirRequest("POST", ["Patient"], [], {}, body))
    other = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    dispatch(ctx, FhirRequest("POST", ["Observation"], [], {}, orjson.dumps(other)))
    assert seen == [("before", "POST"), ("after", 201)]


def test_the_api_imports_neither_bulk_data_nor_subscriptions() -> None:
    """They extend the API through its registry; no import of them, even inside a function."""
    api = Path(__file__).parents[2] / "fhir_server" / "api"
    imported = set()
    for source in api.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
    assert not {
        m for m in imported if m.startswith(("fhir_server.bulk", "fhir_server.subscriptions"))
    }
