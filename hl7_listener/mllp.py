"""asyncio MLLP server: frames messages (0x0B ... 0x1C 0x0D) and writes back ACKs."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from hl7_listener.ack import build_ack
from hl7_listener.processor import Reply

log = logging.getLogger("interop.hl7.mllp")

SB, EB, CR = b"\x0b", b"\x1c", b"\x0d"

Handler = Callable[[bytes, str], Reply]


def frame(payload: bytes) -> bytes:
    return SB + payload + EB + CR


class MllpServer:
    """Runs handler (blocking: inbox + mapping) in a thread per message, ACKs in order."""

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 2575,
        max_frame: int = 10 * 1024 * 1024,
        idle_timeout: float = 300.0,
        ssl_context: ssl.SSLContext | None = None,
        oversize: Callable[[bytes, str], None] | None = None,
        max_connections: int = 64,
    ) -> None:
        self.handler = handler
        self.host, self.port = host, port
        self.max_frame = max_frame
        self.idle_timeout = idle_timeout
        self.ssl_context = ssl_context
        self.oversize = oversize
        self.max_connections = max_connections
        self._open = 0
        self._server: asyncio.Server | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(
            self._connection, self.host, self.port, ssl=self.ssl_context, limit=2**16
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("MLLP listening on %s:%s%s", self.host, self.port,
                 " (TLS)" if self.ssl_context else "")  # fmt: skip
        return self.port

    async def stop(self) -> None:
        """Stop accepting, then let in-flight messages finish so nothing is lost."""
        if self._server is not None:
            self._server.close()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One sender. Over `max_connections` open at once, a new connection is closed at
        accept (nothing was sent on it, so nothing is lost); a connection idle for
        `idle_timeout` between or inside frames is closed, so idle peers cannot pile up."""
        peer = str(writer.get_extra_info("peername"))
        if self._open >= self.max_connections:
            log.warning("MLLP connection from %s refused: %d open", peer, self._open)
            writer.close()
            return
        task = asyncio.current_task()
        self._open += 1
        if task is not None:
            self._inflight.add(task)  # type: ignore[arg-type]
        try:
            await self._serve(reader, writer, peer)
        except TimeoutError:
            log.info("MLLP connection from %s closed after %.0f s idle", peer, self.idle_timeout)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._open -= 1
            if task is not None:
                self._inflight.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        buf = bytearray()
        while True:
            start = buf.find(SB)
            if start < 0:
                if buf:
                    log.warning("dropped %d bytes before start block from %s", len(buf), peer)
                buf.clear()
            elif start > 0:
                log.warning("dropped %d bytes before start block from %s", start, peer)
                del buf[:start]
            end = buf.find(EB) if buf else -1
            if end >= 0:
                payload = bytes(buf[1:end])
                del buf[: end + 1]
                if buf[:1] == CR:
                    del buf[:1]
                reply = await asyncio.to_thread(self.handler, payload, peer)
                if reply.ack is not None:
                    writer.write(frame(reply.ack))
                    await writer.drain()
                if reply.followup is not None:
                    application_ack = await asyncio.to_thread(reply.followup)
                    if application_ack is not None:
                        writer.write(frame(application_ack))
                        await writer.drain()
                continue
            if len(buf) > self.max_frame:
                if self.oversize is not None:
                    await asyncio.to_thread(self.oversize, bytes(buf[1:]), peer)
                writer.write(frame(build_ack(None, "AR", "message exceeds the size limit")))
                await writer.drain()
                return
            chunk = await asyncio.wait_for(reader.read(65536), self.idle_timeout)
            if not chunk:
                return
            buf += chunk
