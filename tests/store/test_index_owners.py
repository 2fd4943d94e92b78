"""Index rows always belong to a live resource, with or without the foreign key.

PostgreSQL has no foreign key from the index tables to resources (migration 0020): what keeps
every index row owned is the write path itself (a DELETE clears the rows of the resource it
marks deleted; no resources row is ever removed)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from starlette.testclient import TestClient

from fhir_server.schema import INDEX_TABLES


def _orphans(engine: Any) -> dict[str, int]:
    """Per index table: rows whose owner is missing or deleted."""
    found = {}
    with engine.connect() as conn:
        for table in INDEX_TABLES.values():
            found[table.name] = conn.execute(
                text(
                    f"SELECT count(*) FROM {table.name} i LEFT JOIN resources r "
                    "ON r.pk = i.resource_pk WHERE r.pk IS NULL OR r.deleted = :yes"
                ),
                {"yes": True},
            ).scalar_one()
    return found


def _observation(subject: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": subject},
        "effectiveDateTime": "2024-05-01T10:00:00Z",
        "valueQuantity": {"value": 7.5, "unit": "mmol/L", "system": "http://unitsofmeasure.org"},
        "component": [
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": 120, "system": "http://unitsofmeasure.org"},
            }
        ],
    }


def test_writes_leave_no_index_row_without_a_live_owner(app: Any, client: TestClient) -> None:
    engine = app.state.store.engine
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:mrn", "value": "1"}],
        "name": [{"family": "Owner", "given": ["Ida"]}],
        "birthDate": "1970-01-01",
        "telecom": [{"system": "phone", "value": "555"}],
    }
    pid = client.post("/fhir/Patient", json=patient).json()["id"]
    oids = [
        client.post("/fhir/Observation", json=_observation(f"Patient/{pid}", c)).json()["id"]
        for c in ("2339-0", "718-7", "2345-7")
    ]
    patient |= {"id": pid, "gender": "female"}
    assert client.put(f"/fhir/Patient/{pid}", json=patient).status_code == 200
    assert client.delete(f"/fhir/Observation/{oids[0]}").status_code in (200, 204)
    deleted = client.delete("/fhir/Observation", params={"code": "718-7"})
    assert deleted.status_code in (200, 204)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "DELETE", "url": f"Observation/{oids[2]}"}},
            {
                "resource": patient | {"active": True},
                "request": {"method": "PUT", "url": f"Patient/{pid}"},
            },
            {
                "resource": _observation(f"Patient/{pid}", "4548-4"),
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    assert client.post("/fhir", json=bundle).status_code == 200
    failing = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": _observation(f"Patient/{pid}", "1558-6"),
                "request": {"method": "POST", "url": "Observation"},
            },
            {"request": {"method": "DELETE", "url": "Patient?identifier=urn:none|x"}},
            {
                "resource": {"resourceType": "Patient", "id": pid},
                "request": {"method": "PUT", "url": f"Patient/{pid}", "ifMatch": 'W/"1"'},
            },
        ],
    }
    assert client.post("/fhir", json=failing).status_code >= 400  # rolled back whole
    assert client.delete(f"/fhir/Patient/{pid}").status_code in (200, 204)
    with engine.connect() as conn:
        indexed = sum(
            conn.execute(text(f"SELECT count(*) FROM {t.name}")).scalar_one()
            for t in INDEX_TABLES.values()
        )
    assert indexed > 0  # the new Observation's rows remain
    assert _orphans(engine) == {t.name: 0 for t in INDEX_TABLES.values()}


def test_postgresql_index_tables_carry_no_foreign_key(app: Any) -> None:
    engine = app.state.store.engine
    with engine.connect() as conn:
        if engine.dialect.name != "postgresql":
            keys = conn.execute(text("PRAGMA foreign_key_list(idx_token)")).all()
            assert [k[2] for k in keys] == ["resources"]  # SQLite keeps its (cheap) check
            return
        keys = conn.execute(
            text(
                "SELECT conrelid::regclass::text FROM pg_constraint "
                "WHERE contype = 'f' AND conrelid::regclass::text LIKE 'idx\\_%'"
            )
        ).all()
    assert keys == []
