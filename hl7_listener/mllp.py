"""asyncio MLLP server: frames messages (0x0B ... 0x1C 0x0D) and writes back ACKs."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from hl7_listener.ack import build_ack
from hl7_listener.processor import Reply

log = logging.getLogger("interop.hl7.mllp")

SB, EB, CR = b"\x0b", b"\x1c", b"\x0d"

Handler = Callable[[bytes, str], Reply]
BatchHandler = Callable[[list[tuple[bytes, str]]], list[Reply]]


def frame(payload: bytes) -> bytes:
    return SB + payload + EB + CR


class MllpServer:
    """Runs handler (blocking: inbox + mapping) in a thread, ACKs each connection in order.

    With `batch_handler`, the frames that arrive from all connections while one batch is
    being stored are handed over together as the next batch: one thread hop and one
    commit for many senders (group commit), while each sender still gets its ACK only
    after its message is stored.
    """

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
        batch_handler: BatchHandler | None = None,
    ) -> None:
        self.handler = handler
        self.batch_handler = batch_handler
        self._batch: list[tuple[bytes, str, asyncio.Future[Reply]]] = []
        self._batching: asyncio.Task[None] | None = None
        # its own thread: a batch never waits behind connections' follow-ups for a thread
        self._store_thread = ThreadPoolExecutor(1, thread_name_prefix="mllp-store")
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
        self._store_thread.shutdown(wait=False)

    @property
    def open_connections(self) -> int:
        return self._open

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

    async def _handle(self, payload: bytes, peer: str) -> Reply:
        if self.batch_handler is None:
            return await asyncio.to_thread(self.handler, payload, peer)
        done: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._batch.append((payload, peer, done))
        if self._batching is None:  # one batch in flight; frames meanwhile form the next
            self._batching = asyncio.create_task(self._run_batches(self.batch_handler))
        return await done

    async def _run_batches(self, handler: BatchHandler) -> None:
        try:
            while self._batch:
                batch, self._batch = self._batch, []
                try:
                    items = [(p, s) for p, s, _ in batch]
                    replies = await asyncio.get_running_loop().run_in_executor(
                        self._store_thread, handler, items
                    )
                except Exception as exc:  # noqa: BLE001 - each sender's connection learns it
                    for *_, done in batch:
                        if not done.done():  # done: its connection was closed meanwhile
                            done.set_exception(exc)
                    continue
                for (*_, done), reply in zip(batch, replies, strict=True):
                    if not done.done():
                        done.set_result(reply)
        finally:
            self._batching = None

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
                reply = await self._handle(payload, peer)
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
            async with asyncio.timeout(self.idle_timeout):  # no task per read, as wait_for
                chunk = await reader.read(65536)
            if not chunk:
                return
            buf += chunk
