"""The listener over real TCP: framing, ACK rules, duplicates, durability."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from hl7_listener.inbox import Inbox
from hl7_listener.mllp import EB, SB, MllpServer, frame
from hl7_listener.processor import Processor
from mappers.hl7v2 import parse

ORU = "\r".join(
    [
        "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ORU^R01|{ctrl}|P|2.5.1{extra}",
        "PID|1||123^^^HOSP&1.2.3&ISO^MR||Doe^Jane||19800102|F",
        "OBR|1|PL1|FI1|2345-7^Glucose^LN|||20240101110000||||||||||||||||||F",
        "OBX|1|NM|2345-7^Glucose^LN||{value}|mg/dL^^UCUM|70-99|H|||F",
    ]
)


def oru(ctrl: str, value: str = "100", extra: str = "") -> bytes:
    return ORU.format(ctrl=ctrl, value=value, extra=extra).encode()


def make(app: Any, mode: str = "map") -> tuple[Processor, Inbox]:
    inbox = Inbox(app.state.store.engine)
    return Processor(inbox, app.state.store, ack_mode=mode), inbox


async def exchange(port: int, *payloads: bytes, raw: bytes | None = None) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    acks = []
    if raw is not None:
        writer.write(raw)
    for p in payloads:
        writer.write(frame(p))
    await writer.drain()
    for _ in range(len(payloads) or 1):
        data = await reader.readuntil(EB + b"\r")
        acks.append(data[1:-2])
    writer.close()
    return acks


def msa(ack: bytes) -> list[str]:
    return next(s for s in ack.decode().split("\r") if s.startswith("MSA")).split("|")


def run(app: Any, scenario: Any, mode: str = "map", **kw: Any) -> Any:
    proc, inbox = make(app, mode)

    async def main() -> Any:
        server = MllpServer(proc.handle, port=0, batch_handler=proc.handle_many, **kw)
        port = await server.start()
        try:
            return await scenario(port)
        finally:
            await server.stop()

    return asyncio.run(main()), proc, inbox


def test_ack_after_map_and_concurrent_senders(app: Any) -> None:
    async def scenario(port: int) -> list[list[bytes]]:
        return await asyncio.gather(
            *(exchange(port, *[oru(f"S{s}M{i}", str(90 + i)) for i in range(3)]) for s in range(4))
        )

    results, _, inbox = run(app, scenario)
    acks = [a for r in results for a in r]
    assert len(acks) == 12
    assert {msa(a)[1] for a in acks} == {"AA"}
    assert sorted(msa(a)[2] for a in acks) == sorted(
        f"S{s}M{i}" for s in range(4) for i in range(3)
    )
    ack_msh = acks[0].decode().split("\r")[0].split("|")
    assert ack_msh[2:6] == ["EHR", "HOSP", "LAB", "HOSP"]
    assert ack_msh[11] == "2.5.1"
    rows = inbox.list(limit=100)
    assert len(rows) == 12 and {r.status for r in rows} == {"processed"}
    assert any(r.startswith("Observation/") for r in rows[0].resources)
    patients = {r for row in rows for r in row.resources if r.startswith("Patient/")}
    assert len(patients) == 1  # four senders, one patient: no duplicate from the race


def test_garbage_partial_frames_missing_cr_and_duplicates(app: Any) -> None:
    async def scenario(port: int) -> list[bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        data = oru("D1")
        writer.write(b"noise\r\n" + SB + data[:20])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(data[20:] + EB)  # no final CR
        await writer.drain()
        first = await reader.readuntil(EB + b"\r")
        resend = oru("D1").replace(b"20240101120000", b"20240101120500")  # MSH-7 refreshed
        writer.write(frame(resend))
        await writer.drain()
        second = await reader.readuntil(EB + b"\r")
        writer.close()
        return [first, second]

    (first, second), _, inbox = run(app, scenario)
    assert first == second  # the duplicate gets the original ACK
    assert msa(first[1:-2])[1] == "AA"
    statuses = sorted(r.status for r in inbox.list())
    assert statuses == ["duplicate", "processed"]


def test_unsupported_type_is_rejected_and_kept(app: Any) -> None:
    bar = b"MSH|^~\\&|A|B|C|D|20240101||BAR^P01|B1|P|2.5\rPID|1||1"

    async def scenario(port: int) -> list[bytes]:
        return await exchange(port, bar)

    (ack,), _, inbox = run(app, scenario)
    lines = ack.decode().split("\r")
    assert msa(ack)[1:3] == ["AR", "B1"]
    err = next(s for s in lines if s.startswith("ERR")).split("|")
    assert err[3].startswith("200^")
    assert inbox.list()[0].status == "failed"
    assert inbox.list()[0].raw == bar


def test_content_error_is_ae_with_reason(app: Any) -> None:
    bad = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A04|E1|P|2.5\rPID|1"
    (ack,), _, inbox = run(app, lambda port: exchange(port, bad))
    assert msa(ack)[1] == "AE"
    assert "PID-3" in ack.decode()
    assert inbox.list()[0].status == "failed"


def test_ack_after_store_then_pending_mapped_as_after_restart(app: Any) -> None:
    (ack,), proc, inbox = run(app, lambda port: exchange(port, oru("K1")), mode="store")
    assert msa(ack)[1] == "AA"
    assert inbox.list()[0].status == "received"  # stored, not yet mapped (as after a crash)
    assert proc.process_pending() == 1
    assert inbox.list()[0].status == "processed"


def test_enhanced_mode_commit_ack(app: Any) -> None:
    msg = oru("E9", extra="|||AL|NE")
    (ack,), _, _ = run(app, lambda port: exchange(port, msg))
    assert msa(ack)[1:3] == ["CA", "E9"]


async def frames_within(port: int, payload: bytes, seconds: float = 1.5) -> list[bytes]:
    """Every frame the listener sends back for one message within `seconds`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(frame(payload))
    await writer.drain()
    got = []
    try:
        while True:
            data = await asyncio.wait_for(reader.readuntil(EB + b"\r"), seconds)
            got.append(data[1:-2])
    except TimeoutError:
        pass
    writer.close()
    return got


BAD_ADT = "MSH|^~\\&|A|B|C|D|20240101||ADT^A04|{ctrl}|P|2.5|||{accept}|{app}\rPID|1"


@pytest.mark.parametrize(
    ("accept", "application", "good", "expected"),
    [
        ("AL", "AL", True, ["CA", "AA"]),
        ("AL", "AL", False, ["CA", "AE"]),
        ("NE", "AL", True, ["AA"]),
        ("AL", "NE", True, ["CA"]),
        ("ER", "ER", True, []),
        ("ER", "ER", False, ["AE"]),
        ("SU", "SU", False, ["CA"]),
        ("NE", "SU", True, ["AA"]),
    ],
)
def test_enhanced_mode_follows_msh15_and_msh16(
    app: Any, accept: str, application: str, good: bool, expected: list[str]
) -> None:
    ctrl = f"X{accept}{application}{int(good)}"
    msg = (
        oru(ctrl, extra=f"|||{accept}|{application}")
        if good
        else BAD_ADT.format(ctrl=ctrl, accept=accept, app=application).encode()
    )
    acks, _, inbox = run(app, lambda port: frames_within(port, msg))
    assert [msa(a)[1] for a in acks] == expected
    assert all(msa(a)[2] == ctrl for a in acks)
    (row,) = inbox.list()
    assert row.status == ("processed" if good else "failed")  # mapped either way
    assert msa(row.ack or b"")[1] == "CA"  # what a duplicate gets back: the accept ACK


def test_oversize_frame_is_rejected_and_kept(app: Any) -> None:
    big = SB + b"MSH|" + b"x" * 5000

    async def scenario(port: int) -> list[bytes]:
        return await exchange(port, raw=big)

    proc, inbox = make(app)

    async def main() -> list[bytes]:
        server = MllpServer(proc.handle, port=0, max_frame=1000, oversize=proc.reject_oversize)
        port = await server.start()
        try:
            return await scenario(port)
        finally:
            await server.stop()

    (ack,) = asyncio.run(main())
    assert msa(ack)[1] == "AR"
    (row,) = inbox.list()
    assert row.status == "failed" and "size limit" in (row.error or "")
    assert row.raw.startswith(b"MSH|xxxx") and len(row.raw) >= 1000  # kept for inspection


def test_tls_with_client_certificates(app: Any, tls_files: tuple[str, ...]) -> None:
    import ssl

    ca, server_cert, server_key, client_cert, client_key = tls_files
    from hl7_listener.runner import tls_context
    from interop.settings import Settings

    server_ctx = tls_context(
        Settings(mllp_tls_cert=server_cert, mllp_tls_key=server_key, mllp_tls_ca=ca)
    )

    def client(with_cert: bool) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=ca)
        if with_cert:
            ctx.load_cert_chain(client_cert, client_key)
        return ctx

    async def scenario(port: int) -> tuple[bytes, str]:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client(True), server_hostname="localhost"
        )
        writer.write(frame(oru("TLS1")))
        await writer.drain()
        ack = (await reader.readuntil(EB + b"\r"))[1:-2]
        writer.close()
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client(False), server_hostname="localhost"
            )
            writer.write(frame(oru("TLS2")))
            await writer.drain()
            await asyncio.wait_for(reader.readuntil(EB + b"\r"), 5)
            refused = "answered"
        except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError) as exc:
            refused = type(exc).__name__
        return ack, refused

    (ack, refused), _, inbox = run(app, scenario, ssl_context=server_ctx)
    assert msa(ack)[1:3] == ["AA", "TLS1"]
    assert refused != "answered"  # no client certificate, no message
    assert [r.control_id for r in inbox.list()] == ["TLS1"]


def test_listener_restart_maps_what_a_crash_left_received(app: Any) -> None:
    """Acknowledged after store, then the process died before mapping: the next start of
    the listener (the real entry point) maps it."""
    from hl7_listener.runner import ListenerThread
    from interop.runtime import Runtime
    from interop.settings import Settings

    proc, inbox = make(app, "store")
    reply = proc.handle(oru("R1"))  # stored and acknowledged, never mapped
    assert reply.ack is not None and msa(reply.ack)[1] == "AA"
    assert inbox.list()[0].status == "received"
    url = app.state.store.engine.url.render_as_string(hide_password=False)
    runtime = Runtime(Settings(database_url=url, mllp_port=0, auth="off"), migrate=False)
    listener = ListenerThread(runtime.hl7_config(), runtime.hl7_processor())
    assert listener.start() is not None
    try:
        for _ in range(100):
            if inbox.list()[0].status != "received":
                break
            time.sleep(0.05)
    finally:
        listener.stop()
        runtime.close()
    row = inbox.list()[0]
    assert row.status == "processed"
    assert msa(row.ack or b"")[1] == "AA"  # the ACK that was sent is kept


@pytest.mark.parametrize("value", ["7"])
def test_parse_roundtrip_of_ack(value: str) -> None:
    ack = parse(b"MSH|^~\\&|a|b|c|d|20240101||ACK|1|P|2.5\rMSA|AA|" + value.encode())
    assert ack.first("MSA").get(2) == value  # type: ignore[union-attr]


def test_cli_send_batch_file(app: Any, tmp_path: Any, capsys: Any) -> None:
    """`interop hl7 send` splits a batch file and prints each ACK."""
    import json

    from interop.cli import main

    batch = tmp_path / "batch.hl7"
    batch.write_bytes(
        b"FHS|^~\\&\rBHS|^~\\&\r" + oru("B1") + b"\r" + oru("B2") + b"\rBTS|2\rFTS|1\r"
    )

    async def scenario(port: int) -> int:
        return await asyncio.to_thread(
            main, ["hl7", "send", str(batch), "--port", str(port), "--json"]
        )

    rc, _, inbox = run(app, scenario)
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sent"] == 2 and {r["code"] for r in out["results"]} == {"AA"}
    assert sorted(r.control_id for r in inbox.list()) == ["B1", "B2"]


def test_third_party_mllp_send(app: Any, tmp_path: Any) -> None:
    """python-hl7's `mllp_send` (a client we did not write) gets AA for each message."""
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "mllp_send"
    msgs = tmp_path / "msgs.hl7"
    msgs.write_bytes(oru("T1").replace(b"\r", b"\n") + b"\n" + oru("T2").replace(b"\r", b"\n"))

    async def scenario(port: int) -> str:
        done = await asyncio.to_thread(
            subprocess.run,
            [str(exe), "--loose", "-f", str(msgs), "-p", str(port), "127.0.0.1"],
            capture_output=True,
            timeout=30,
        )
        return done.stdout.decode()

    out, _, inbox = run(app, scenario)
    assert out.count("MSA|AA|") == 2, out
    assert sorted(r.control_id for r in inbox.list()) == ["T1", "T2"]


def test_interop_serve_drains_the_listener_on_sigterm(tmp_path: Any) -> None:
    """`interop serve` under a process manager: SIGTERM stops uvicorn, then the MLLP
    listener stops accepting, finishes and maps what is pending, and the process exits 0."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    from pathlib import Path

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    http_port, mllp_port = free_port(), free_port()
    env = {
        **os.environ,
        "INTEROP_DATABASE_URL": f"sqlite:///{tmp_path}/serve.db",
        "INTEROP_PORT": str(http_port),
        "INTEROP_MLLP_PORT": str(mllp_port),
        "INTEROP_MLLP_ACK_MODE": "store",
        "INTEROP_LOG_FORMAT": "json",
    }
    exe = Path(sys.executable).parent / "interop"
    proc = subprocess.Popen([str(exe), "serve"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", mllp_port), timeout=1) as sock:
                    sock.sendall(frame(oru("G1")))
                    ack = sock.recv(4096)
                break
            except OSError:
                assert time.monotonic() < deadline, "the listener did not start"
                time.sleep(0.3)
        assert msa(ack[1:-2])[1] == "AA"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out.decode()[-2000:]
    assert b"MLLP listener stopped" in out
    from sqlalchemy import create_engine

    inbox = Inbox(create_engine(env["INTEROP_DATABASE_URL"]))
    assert [r.status for r in inbox.list()] == ["processed"]  # acknowledged, then mapped


def test_python_hl7_mllp_client_gets_each_ack(app: Any) -> None:
    """python-hl7's MLLPClient (a sender we did not write): good, bad and unreadable input
    each get an ACK on the same connection, every message stored first."""
    import hl7.client

    def send_all(port: int) -> list[str]:
        with hl7.client.MLLPClient("127.0.0.1", port) as client:
            return [
                client.send_message(m).decode()
                for m in (oru("PY1"), b"MSH|^~\\&|A|B|C|D|2024||ADT^A04|PY2|P|2.5\rPID|1", b"junk")
            ]

    async def scenario(port: int) -> list[str]:
        return await asyncio.to_thread(send_all, port)

    acks, _, inbox = run(app, scenario)
    codes = [msa(a.strip("\x0b\x1c\r").encode())[1] for a in acks]
    assert codes == ["AA", "AE", "AR"]
    assert "ERR||PID^1^3|101" in acks[1]
    assert [r.status for r in inbox.list()] == ["failed", "failed", "processed"]


def test_connection_cap_and_idle_timeout(app: Any) -> None:
    """An idle sender is closed after the idle timeout; over the cap, a new connection is
    closed at once while the ones already open still work."""

    async def scenario(port: int) -> tuple[bytes, bytes, float, bytes]:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        over = await asyncio.wait_for(reader.read(100), 5)  # closed: EOF, no data
        writer.close()
        r0, w0 = idle[0]
        w0.write(frame(oru("CAP1")))
        await w0.drain()
        ack = (await r0.readuntil(EB + b"\r"))[1:-2]
        started = time.monotonic()
        r1, _ = idle[1]
        eof = await asyncio.wait_for(r1.read(100), 10)  # the idle one is closed by the server
        waited = time.monotonic() - started
        for _, w in idle:
            w.close()
        return over, eof, waited, ack

    (over, eof, waited, ack), _, inbox = run(app, scenario, max_connections=2, idle_timeout=1.0)
    assert over == b"" and eof == b""
    assert waited < 5
    assert msa(ack)[1:3] == ["AA", "CAP1"]
    assert [r.control_id for r in inbox.list()] == ["CAP1"]
