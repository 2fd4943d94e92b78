# ruff: noqa: E501 - certificate builders read best as one chain
"""TLS and timeouts against the simulator served over real HTTPS (a throw-away private CA)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from oe_accounts import CLIENT_ID, CLIENT_SECRET, SERVICE_PASSWORD, SERVICE_USER
from simulator import OpenEmrSimulator, ServedSimulator

from openemr_bridge.client import OpenEmrClient
from openemr_bridge.config import OpenEmrConfig
from openemr_bridge.errors import OpenEmrUnavailable


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    where = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("Test CA")).issuer_name(_name("Test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = {"ca": where / "ca.pem", "cert": where / "cert.pem", "key": where / "key.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return {k: str(v) for k, v in paths.items()}


def config_for(sim: OpenEmrSimulator, **extra: object) -> OpenEmrConfig:
    return OpenEmrConfig(
        base_url=sim.base, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
        username=SERVICE_USER, password=SERVICE_PASSWORD, backoff=0.0, timeout=5, **extra,  # type: ignore[arg-type]
    )  # fmt: skip


def test_tls_verified_by_default_and_against_a_configured_ca(pki: dict[str, str]) -> None:
    sim = OpenEmrSimulator()
    sim.add_client(CLIENT_ID, secret=CLIENT_SECRET)
    sim.add_user(SERVICE_USER, SERVICE_PASSWORD)
    with ServedSimulator(sim, tls=(pki["cert"], pki["key"])):
        assert sim.base.startswith("https://")
        with (
            OpenEmrClient(config_for(sim, retries=0)) as untrusting,
            pytest.raises(OpenEmrUnavailable),
        ):
            untrusting.patients()  # the private CA is not trusted by default
        assert sim.token_requests == []  # no credentials were sent to an unverified server
        with OpenEmrClient(config_for(sim, ca_bundle=pki["ca"])) as trusting:
            assert trusting.patients() == []
        assert len(sim.token_requests) == 1


def test_timeouts_are_retried_for_reads(sim: OpenEmrSimulator, oe_config: OpenEmrConfig) -> None:
    oe_config.timeout = 0.5
    with OpenEmrClient(oe_config) as client:
        client.patients()
        sim.delay_next = [2.0]
        assert client.patients() == []  # the first try timed out; the retry answered
        sim.delay_next = [2.0] * 4
        with pytest.raises(OpenEmrUnavailable, match="ReadTimeout"):
            client.patients()


def test_a_timed_out_create_is_not_repeated(
    sim: OpenEmrSimulator, oe_config: OpenEmrConfig
) -> None:
    oe_config.timeout = 0.5
    with OpenEmrClient(oe_config) as client:
        client.patients()
        sim.delay_next = [2.0]
        with pytest.raises(OpenEmrUnavailable):
            client.create_patient(
                {"fname": "Ann", "lname": "Lee", "DOB": "1980-01-02", "sex": "Female"}
            )
    posts = [p for m, p in sim.log if m == "POST" and p.endswith("/api/patient")]
    assert len(posts) == 1  # it may have been created: the push searches before trying again


def test_ca_bundle_path_must_exist(tmp_path: Path, oe_config: OpenEmrConfig) -> None:
    oe_config.ca_bundle = str(tmp_path / "nope.pem")
    with pytest.raises(OSError):
        OpenEmrClient(oe_config)
