"""The command line as a newcomer meets it: a version, help with an example everywhere, one-line
errors that say what to do, and read-only commands that never migrate the database."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine

from fhir_server.store.db import alembic_config, schema_revisions
from interop.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
INTEROP = [str(Path(sys.executable).parent / "interop")]  # the console script users run


def interop(*argv: str, env: dict[str, str] | None = None, stdin: str = "") -> Any:
    return subprocess.run(
        [*INTEROP, *argv], capture_output=True, text=True, timeout=120, input=stdin,
        env={**os.environ, "INTEROP_LOG_FORMAT": "text", **(env or {})}, cwd=ROOT,
    )  # fmt: skip


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nobody listens once it is closed


def test_version_names_the_installed_package() -> None:
    done = interop("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"interop {version('interop-server')}"


def _commands(parser: argparse.ArgumentParser, path: str = "interop") -> list[tuple[str, Any]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, f"{path} {name}")
    return found


def test_every_option_has_help_and_every_command_an_example() -> None:
    commands = _commands(build_parser())
    assert len(commands) > 40
    for path, parser in commands:
        assert "example" in (parser.epilog or ""), f"{path} has no example"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            assert action.help, f"{path} {action.option_strings or action.dest} has no help"


def test_send_to_a_closed_port_is_one_line_saying_what_to_do() -> None:
    port = closed_port()
    done = interop("hl7", "send", "examples/hl7/oru-r01.hl7", "--port", str(port))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: cannot connect to the MLLP listener at 127.0.0.1:{port}")
    assert "./scripts/serve" in lines[0] and "Traceback" not in done.stderr


def test_a_missing_file_and_an_unreachable_database_are_one_line(tmp_path: Path) -> None:
    done = interop("hl7", "send", str(tmp_path / "nothing.hl7"))
    assert (
        done.returncode == 1
        and done.stderr.strip() == f"error: no such file: {tmp_path}/nothing.hl7"
    )
    unreachable = {"INTEROP_DATABASE_URL": "postgresql+psycopg://nobody:secret@127.0.0.1:1/x"}
    done = interop("users", "list", env=unreachable)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "cannot use the database" in done.stderr and "INTEROP_DATABASE_URL" in done.stderr
    assert "secret" not in done.stderr  # the password is masked


def _previous_revision() -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_revision(script.get_current_head())
    return str(head.down_revision)


def test_read_only_commands_never_migrate_an_old_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = _previous_revision()
    engine = create_engine(url)
    with engine.begin() as conn:
        config = alembic_config(url)
        config.attributes["connection"] = conn
        command.upgrade(config, old)
    env = {"INTEROP_DATABASE_URL": url}
    for argv in (["hl7", "list"], ["users", "list"], ["clients", "list"], ["ai", "jobs"]):
        done = interop(*argv, env=env)
        assert done.returncode == 1, argv
        assert "interop db upgrade" in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert schema_revisions(engine)[0] == {old}, f"{argv} migrated the database"
    current = interop("db", "current", env=env)
    assert current.returncode == 0 and old in current.stdout and "behind" in current.stdout
    assert interop("db", "check", env=env).returncode == 1
    assert schema_revisions(engine)[0] == {old}
    assert interop("db", "upgrade", env=env).returncode == 0
    assert interop("db", "check", env=env).returncode == 0
    assert interop("hl7", "list", env=env).returncode == 0
    engine.dispose()


def test_users_keys_and_clients_never_print_secrets(tmp_path: Path) -> None:
    env = {"INTEROP_DATABASE_URL": f"sqlite:///{tmp_path / 'auth.db'}"}
    assert interop("db", "upgrade", env=env).returncode == 0
    added = interop("users", "add", "alice", "--role", "nurse", "--password-stdin", env=env,
                    stdin="first-password\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    changed = interop("users", "passwd", "alice", "--password-stdin", env=env,
                      stdin="second-password\n")  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    listed = interop("users", "list", env=env)
    assert "alice" in listed.stdout and "nurse" in listed.stdout
    assert "password" not in listed.stdout

    from smart_auth.registry import Registry

    engine = create_engine(env["INTEROP_DATABASE_URL"])
    registry = Registry(engine)
    assert registry.login("alice", "first-password") is None
    assert registry.login("alice", "second-password") is not None

    client = interop("clients", "add", "--name", "r", "--type", "confidential-secret",
                     "--scope", "system/*.rs", "--json", env=env)  # fmt: skip
    assert client.returncode == 0, client.stderr
    import json

    created = json.loads(client.stdout)
    shown = interop("clients", "show", created["client_id"], "--json", env=env)
    assert json.loads(shown.stdout)["client_id"] == created["client_id"]
    assert created["client_secret"] not in shown.stdout and "secret_hash" not in shown.stdout
    assert interop("clients", "show", "no-such-client", env=env).returncode == 1

    assert interop("keys", "rotate", env=env).returncode == 0
    keys = interop("keys", "list", "--json", env=env)
    listed_keys = json.loads(keys.stdout)["keys"]
    assert len(listed_keys) == 1 and listed_keys[0]["signing"]
    assert "PRIVATE" not in keys.stdout and "private" not in keys.stdout

    assert interop("users", "remove", "alice", env=env).returncode == 0
    assert registry.login("alice", "second-password") is None
    assert interop("users", "remove", "alice", env=env).returncode == 1
    engine.dispose()


@pytest.mark.parametrize("argv", [["worker"], ["ai", "models"]])
def test_a_feature_without_its_extra_says_which_extra(argv: list[str]) -> None:
    """Runs with the optional packages hidden (as on a lean `./scripts/serve` install)."""
    hide = (
        "import sys, importlib.abc, importlib.util\n"
        "B={'numpy','onnxruntime','dicomweb_client','celery','pylibjpeg','redis'}\n"
        "f=importlib.util.find_spec\n"
        "importlib.util.find_spec=lambda n,*a,**k: None if n.split('.')[0] in B else f(n,*a,**k)\n"
        "from interop.cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True,
                          env={**os.environ, "INTEROP_REDIS_URL": "redis://127.0.0.1:1/0"},
                          timeout=60)  # fmt: skip
    assert done.returncode in (1, 2)
    assert "extra" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_first_run_takes_the_admin_password_from_the_named_file(tmp_path: Path) -> None:
    import io

    from fhir_server.store.db import create_db_engine, upgrade
    from interop.bootstrap import first_run
    from interop.settings import Settings
    from smart_auth.registry import Registry

    secret = tmp_path / "admin-password"
    secret.write_text("correct horse battery\n")
    url = f"sqlite:///{tmp_path / 'boot.db'}"
    engine = create_db_engine(url)
    upgrade(engine)
    registry = Registry(engine)
    settings = Settings(database_url=url, admin_password_file=str(secret))
    out = io.StringIO()
    assert first_run(registry, settings, out)
    assert "correct horse" not in out.getvalue() and str(secret) in out.getvalue()
    assert registry.login("admin", "correct horse battery") is not None
    again = io.StringIO()
    assert not first_run(registry, settings, again) and again.getvalue() == ""
    engine.dispose()
