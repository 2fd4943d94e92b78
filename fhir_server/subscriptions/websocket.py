"""The R4 websocket binding: a client connects, sends `bind <subscription id>`, is answered
`bound <id>`, then receives `ping <id>` for each notification.

The delivery thread hands pings to the event loop the socket lives on. With auth on, the
connection needs a bearer token (header `Authorization`, or `?access_token=` for browsers that
cannot set headers), and a client may bind only subscriptions it created.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from fhir_server.errors import FhirError

if TYPE_CHECKING:
    from fhir_server.subscriptions.service import SubscriptionService

log = logging.getLogger("interop.subscriptions")
WEBSOCKET_PATH = "/fhir/websocket"
Authenticate = Callable[[str | None], str | None]  # authorization header -> requester


class Hub:
    """Bound sockets by subscription id."""

    def __init__(self) -> None:
        self._bound: dict[str, set[tuple[WebSocket, asyncio.AbstractEventLoop]]] = {}
        self._lock = threading.Lock()

    def bind(self, sub_id: str, socket: WebSocket, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._bound.setdefault(sub_id, set()).add((socket, loop))

    def unbind(self, socket: WebSocket) -> None:
        with self._lock:
            for sockets in self._bound.values():
                for entry in [e for e in sockets if e[0] is socket]:
                    sockets.discard(entry)

    def ping(self, sub_id: str, timeout: float = 5.0) -> int:
        """Send `ping <id>` to every socket bound to it (from any thread); how many got it."""
        with self._lock:
            targets = list(self._bound.get(sub_id, ()))
        sent = 0
        for socket, loop in targets:
            try:
                future = asyncio.run_coroutine_threadsafe(socket.send_text(f"ping {sub_id}"), loop)
                future.result(timeout)
                sent += 1
            except Exception:  # noqa: BLE001 - a dead socket: forget it, the others still count
                self.unbind(socket)
        return sent


def websocket_route(
    service: SubscriptionService, hub: Hub, authenticate: Authenticate
) -> WebSocketRoute:
    async def endpoint(socket: WebSocket) -> None:
        token = socket.query_params.get("access_token")
        header = socket.headers.get("authorization") or (f"Bearer {token}" if token else None)
        try:
            requester = authenticate(header)
        except FhirError as exc:
            await socket.close(code=1008, reason=exc.diagnostics[:120])
            return
        await socket.accept()
        loop = asyncio.get_running_loop()
        try:
            while True:
                message = (await socket.receive_text()).strip()
                command, _, sub_id = message.partition(" ")
                sub_id = sub_id.strip()
                if command != "bind" or not sub_id:
                    await socket.send_text(
                        f"error unknown command '{message[:60]}'; send bind <id>"
                    )
                    continue
                refusal = await asyncio.to_thread(_refusal, service, sub_id, requester)
                if refusal:
                    await socket.send_text(f"error {refusal}")
                    continue
                hub.bind(sub_id, socket, loop)
                await socket.send_text(f"bound {sub_id}")
                service.wake()  # deliver what waited for a listener
        except WebSocketDisconnect:
            pass
        finally:
            hub.unbind(socket)

    return WebSocketRoute(WEBSOCKET_PATH, endpoint)


def _refusal(service: SubscriptionService, sub_id: str, requester: str | None) -> str:
    spec = service.specs().get(sub_id)
    if spec is None or spec.channel != "websocket":
        return f"no live websocket Subscription/{sub_id}"
    if requester is not None:
        owner = service.owner(sub_id)
        if owner is None or owner[0] != requester:
            return f"Subscription/{sub_id} belongs to another client"
    return ""
