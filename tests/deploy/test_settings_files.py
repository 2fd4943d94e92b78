"""Secrets from files: `INTEROP_<NAME>_FILE` as Docker and Kubernetes mount them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from interop.settings import Settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    for name in ("DATABASE_URL", "ORTHANC_PASSWORD", "OPENEMR_CLIENT_SECRET", "HL7_AUTHORITIES"):
        monkeypatch.delenv(f"INTEROP_{name}", raising=False)
        monkeypatch.delenv(f"INTEROP_{name}_FILE", raising=False)


def secret(tmp_path: Path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_text(content)
    path.chmod(0o400)
    return str(path)


def test_any_setting_reads_its_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = "postgresql+psycopg://interop:s3cr3t@db:5432/interop"
    monkeypatch.setenv("INTEROP_DATABASE_URL_FILE", secret(tmp_path, "db", url + "\n"))
    monkeypatch.setenv("INTEROP_ORTHANC_PASSWORD_FILE", secret(tmp_path, "pacs", "pacs pw\r\n"))
    monkeypatch.setenv("INTEROP_HL7_AUTHORITIES_FILE", secret(tmp_path, "a", '{"H": "urn:h"}'))
    settings = Settings()
    assert settings.database_url == url  # the trailing newline an editor adds is dropped
    assert settings.orthanc_password.get_secret_value() == "pacs pw"
    assert settings.hl7_authorities == {"H": "urn:h"}  # JSON settings decode as from the env
    assert "s3cr3t" not in str(settings.masked())


def test_settings_that_name_a_file_are_left_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = secret(tmp_path, "key", "x")
    monkeypatch.setenv("INTEROP_SECRET_KEY_FILE", key)  # a path setting, not "secret_key" + _FILE
    assert Settings().secret_key_file == key


def test_both_the_value_and_its_file_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("INTEROP_ORTHANC_PASSWORD", "one")
    monkeypatch.setenv("INTEROP_ORTHANC_PASSWORD_FILE", secret(tmp_path, "pw", "two"))
    with pytest.raises(ValueError, match="INTEROP_ORTHANC_PASSWORD or INTEROP_ORTHANC_PASSWORD_F"):
        Settings()


def test_unreadable_file_names_the_variable_not_the_content(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("INTEROP_OPENEMR_CLIENT_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="INTEROP_OPENEMR_CLIENT_SECRET_FILE: cannot read"):
        Settings()


def test_a_file_value_is_validated_like_any_other(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("INTEROP_HL7_AUTHORITIES_FILE", secret(tmp_path, "bad", "[1, 2]"))
    with pytest.raises((ValidationError, ValueError)):
        Settings()
