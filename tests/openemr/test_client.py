"""The OpenEMR client against the simulator: tokens, response styles, errors, retries."""

from __future__ import annotations

import pytest
from oe_accounts import CLIENT_SECRET, SERVICE_PASSWORD
from simulator import OpenEmrSimulator

from openemr_bridge.client import OpenEmrClient
from openemr_bridge.config import OpenEmrConfig
from openemr_bridge.errors import (
    OpenEmrAuthError,
    OpenEmrError,
    OpenEmrNotFound,
    OpenEmrUnavailable,
    OpenEmrValidationError,
)

UNKNOWN = "00000000-0000-4000-8000-000000000000"


def test_password_grant_then_cached_token(sim: OpenEmrSimulator, oe: OpenEmrClient) -> None:
    sim.add_patient(fname="Ann", lname="Lee", DOB="1980-01-02", sex="Female")
    assert [p["lname"] for p in oe.patients()] == ["Lee"]
    assert [p["lname"] for p in oe.patients()] == ["Lee"]
    grants = [r["grant_type"] for r in sim.token_requests]
    assert grants == ["password"]
    form = sim.token_requests[0]
    assert form["user_role"] == "users"
    assert "offline_access" in form["scope"].split()


def test_renewed_with_refresh_token_before_expiry(sim: OpenEmrSimulator, oe: OpenEmrClient) -> None:
    oe.patients()
    sim.offset = 3600 - 30  # the token has 30 s left: renew before using it
    oe.tokens.clock = sim.now
    oe.patients()
    assert [r["grant_type"] for r in sim.token_requests] == ["password", "refresh_token"]


def test_renewed_once_on_401(sim: OpenEmrSimulator, oe: OpenEmrClient) -> None:
    oe.patients()
    sim.tokens.clear()  # OpenEMR forgot (revoked) the token early
    assert oe.patients() == []
    assert [r["grant_type"] for r in sim.token_requests] == ["password", "refresh_token"]


def test_refresh_failure_falls_back_to_password(sim: OpenEmrSimulator, oe: OpenEmrClient) -> None:
    oe.patients()
    sim.tokens.clear()
    sim.refresh_tokens.clear()
    oe.patients()
    grants = [r["grant_type"] for r in sim.token_requests]
    assert grants == ["password", "refresh_token", "password"]


def test_password_grant_off_is_a_clear_error(sim: OpenEmrSimulator, oe: OpenEmrClient) -> None:
    sim.password_grant = False
    with pytest.raises(OpenEmrAuthError) as caught:
        oe.patients()
    message = str(caught.value)
    assert "POST /oauth2/default/token" in message
    assert "unsupported_grant_type" in message
    assert SERVICE_PASSWORD not in message and CLIENT_SECRET not in message


def test_disabled_client(sim: OpenEmrSimulator, oe: OpenEmrClient) -> None:
    sim.clients["interop-bridge"].enabled = False
    with pytest.raises(OpenEmrAuthError, match="disabled") as caught:
        oe.patients()
    assert caught.value.status == 401
    assert CLIENT_SECRET not in str(caught.value)


def test_wrong_password_never_echoed(sim: OpenEmrSimulator, oe_config: OpenEmrConfig) -> None:
    oe_config.password = "not-the-password-xyz"
    with OpenEmrClient(oe_config) as client, pytest.raises(OpenEmrAuthError) as caught:
        client.patients()
    assert "invalid_grant" in str(caught.value)
    assert "not-the-password-xyz" not in str(caught.value) + repr(caught.value)
    assert "not-the-password-xyz" not in repr(oe_config)


def test_client_credentials_with_jwt_assertion(sim: OpenEmrSimulator, oe: OpenEmrClient) -> None:
    row = sim.add_patient(fname="Ann", lname="Lee", DOB="1980-01-02", sex="Female")
    patient = oe.fhir_read("Patient", row["uuid"])
    assert patient is not None and patient["name"][0]["family"] == "Lee"
    form = sim.token_requests[-1]
    assert form["grant_type"] == "client_credentials"
    assert "client_secret" not in form
    assert form["client_assertion_type"].endswith("jwt-bearer")
    token = next(t for t in sim.tokens.values() if t.kind == "client_credentials")
    assert token.expires - sim.now() <= 300
    # the two token systems are never mixed: the system token cannot open the Standard API
    assert oe.tokens._tokens.keys() == {"system"}
    oe.patients()
    assert oe.tokens._tokens["api"].access_token != oe.tokens._tokens["system"].access_token


def test_write_scope_refused_for_client_credentials(
    sim: OpenEmrSimulator, oe_config: OpenEmrConfig
) -> None:
    oe_config.system_scope = "system/Patient.write"
    with OpenEmrClient(oe_config) as client, pytest.raises(OpenEmrAuthError, match="invalid_scope"):
        client.fhir_read("Patient", UNKNOWN)


def test_fhir_404_empty_list_is_not_found(sim: OpenEmrSimulator, oe: OpenEmrClient) -> None:
    assert oe.fhir_read("Patient", UNKNOWN) is None
    row = sim.add_patient(fname="Ann", lname="Lee", DOB="1980-01-02", sex="Female", pubpid="M7")
    assert [p["id"] for p in oe.fhir_search("Patient", {"identifier": "M7"})] == [row["uuid"]]


def test_unknown_patient_400_is_not_found(sim: OpenEmrSimulator, oe: OpenEmrClient) -> None:
    assert oe.patient(UNKNOWN) is None
    row = sim.add_patient(fname="Ann", lname="Lee", DOB="1980-01-02", sex="Female")
    found = oe.patient(row["uuid"])
    assert found is not None and found["pid"] == str(row["pid"])  # numbers come as strings


def test_always_200_envelope_with_error_is_not_found(
    sim: OpenEmrSimulator, oe: OpenEmrClient
) -> None:
    # encounter/medical_problem/allergy answer 200 whatever happens; the body says "unknown"
    assert oe.encounters(UNKNOWN) == []
    with pytest.raises(OpenEmrNotFound, match="nonexisting"):
        oe.api("GET", f"/patient/{UNKNOWN}/encounter")


def test_bare_arrays_and_empty_404(sim: OpenEmrSimulator, oe: OpenEmrClient) -> None:
    row = sim.add_patient(fname="Ann", lname="Lee", DOB="1980-01-02", sex="Female")
    enc = sim.add_encounter(row)
    assert oe.vitals(str(row["pid"]), str(enc["encounter"])) == []
    assert oe.medications(str(row["pid"])) == []
    sim.add_vitals(enc, weight="180.0")
    sim.add_list(row, "medication", title="Norvasc")
    assert [v["weight"] for v in oe.vitals(str(row["pid"]), str(enc["encounter"]))] == ["180.0"]
    assert [m["title"] for m in oe.medications(str(row["pid"]))] == ["Norvasc"]


def test_create_patient_and_validation_errors_as_object(
    sim: OpenEmrSimulator, oe: OpenEmrClient
) -> None:
    body = {"fname": "Ann", "lname": "Lee", "DOB": "1980-01-02", "sex": "Female"}
    created = oe.create_patient(body | {"pubpid": "SRC-1", "bogus": "dropped"})
    assert sim.patients[created["uuid"]]["pid"] == created["pid"]
    assert "bogus" not in sim.patients[created["uuid"]]
    with pytest.raises(OpenEmrValidationError) as caught:
        oe.create_patient({"fname": "Ann", "DOB": "1980-01-02", "sex": "UNK"})
    assert set(caught.value.errors) == {"lname", "sex"}
    assert "Last Name must be provided" in str(caught.value)
    assert "Gender must be 4 characters or longer" in str(caught.value)
    assert caught.value.status == 400


def test_search_ignores_unknown_filters_and_pages(sim: OpenEmrSimulator, oe: OpenEmrClient) -> None:
    for i in range(5):
        sim.add_patient(fname=f"P{i}", lname="Same", DOB="1980-01-02", sex="Male", pubpid=f"M{i}")
    assert len(oe.patients(pubpid="M1")) == 5  # pubpid cannot be searched: silently ignored
    assert [p["fname"] for p in oe.patients(limit=2, offset=2)] == ["P2", "P3"]
    assert [p["fname"] for p in oe.patients(fname="P4")] == ["P4"]


def test_retries_5xx_then_succeeds(sim: OpenEmrSimulator, oe: OpenEmrClient) -> None:
    oe.patients()
    sim.fail_next = [502, 503]
    assert oe.patients() == []


def test_gives_up_after_retries(sim: OpenEmrSimulator, oe: OpenEmrClient) -> None:
    oe.patients()
    sim.fail_next = [500] * 10
    with pytest.raises(OpenEmrUnavailable, match="500"):
        oe.patients()
    assert len(sim.fail_next) == 10 - 4  # first try + 3 retries


def test_4xx_is_not_retried(sim: OpenEmrSimulator, oe: OpenEmrClient) -> None:
    oe.patients()
    sim.fail_next = [429]
    with pytest.raises(OpenEmrError):
        oe.patients()
    assert sim.fail_next == []


def test_connection_refused_retried_then_clear_error(oe_config: OpenEmrConfig) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    oe_config.base_url = f"http://127.0.0.1:{port}"
    slept: list[float] = []
    with (
        OpenEmrClient(oe_config, sleep=slept.append) as client,
        pytest.raises(OpenEmrUnavailable, match="unreachable after 4 attempts"),
    ):
        client.patients()
    assert len(slept) == 3


def test_wrong_site_is_route_not_found(sim: OpenEmrSimulator, oe_config: OpenEmrConfig) -> None:
    oe_config.site = "clinic9"
    with (
        OpenEmrClient(oe_config) as client,
        pytest.raises(OpenEmrAuthError, match="Route not found"),
    ):
        client.patients()
