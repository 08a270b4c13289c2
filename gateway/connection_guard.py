"""Slow and idle connections may not starve the gateway.

uvicorn times out nothing before a request's first byte and nothing inside
a request: a client that opens a connection and sends half a header line
(or a body that never ends) holds a file descriptor for ever, and a few
hundred of them exhaust the file limit so that every other request fails.
This protocol, uvicorn's httptools one with three rules added, keeps them
bounded:

- a request's head (request line and headers) must arrive within
  ``read_timeout`` of its first byte, or of the connection opening;
- a request's body may not pause longer than ``read_timeout``;
- at most ``max_connections`` are open (below the file limit); one more
  closes the connection that has waited longest without being served (a
  slow head or body, or an idle keep-alive), so a flood of slow clients
  cannot lock out a client that talks at normal speed.

A connection whose request was read is never closed by these rules, however
long its answer streams.
"""

from __future__ import annotations

import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from corral.supervisor.logs import get_logger

log = get_logger()

# File descriptors the gateway needs besides connections: its ZeroMQ
# sockets, logs, the loop's own.
RESERVED_FDS = 64


def connection_cap(wanted: int | None) -> int:
    """``wanted`` connections, or (None) as many as the file limit allows,
    keeping RESERVED_FDS free; never more than the limit allows."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = max(8, soft - RESERVED_FDS) if soft != resource.RLIM_INFINITY else 65536
    return min(wanted, room) if wanted else room


def guarded_protocol(read_timeout: float, max_connections: int) -> type[HttpToolsProtocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``."""

    # Connections not being served now, oldest first (a dict keeps order):
    # those a new connection may push out when the cap is reached.
    waiting: dict[GuardedProtocol, None] = {}

    class GuardedProtocol(HttpToolsProtocol):
        _timer: Any = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                self._make_room()
            self._wait("head")

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_waiting()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._wait("head")

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            if not self.transport.is_closing():
                self._wait("body")

        def on_body(self, body: bytes) -> None:
            super().on_body(body)
            self._wait("body")  # a pause is timed from the last piece

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._stop_waiting()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # idle keep-alive: uvicorn's own timer closes it; it may be pushed out
            waiting[self] = None

        # -- the rules -------------------------------------------------------

        def _wait(self, part: str) -> None:
            self._stop_waiting()
            waiting[self] = None
            self._timer = self.loop.call_later(read_timeout, self._too_slow, part)

        def _stop_waiting(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            waiting.pop(self, None)

        def _too_slow(self, part: str) -> None:
            self._timer = None
            log.info("closed a slow connection", client=_peer(self), waited_for=f"the request {part}",
                     timeout_s=read_timeout)
            self._close()

        def _make_room(self) -> None:
            oldest = next((c for c in waiting if c is not self), None)
            if oldest is None:  # every other connection is being served: refuse this one
                log.warning("connection refused: the gateway is at its connection cap", cap=max_connections)
                self._close()
                return
            log.info("closed the longest-waiting connection to make room", client=_peer(oldest),
                     cap=max_connections)
            oldest._close()

        def _close(self) -> None:
            self._stop_waiting()
            self.connections.discard(self)
            if not self.transport.is_closing():
                self.transport.abort()  # no lingering: the descriptor is what is short

    return GuardedProtocol


def _peer(conn: HttpToolsProtocol) -> str:
    client = getattr(conn, "client", None)
    return f"{client[0]}:{client[1]}" if client else "?"
