"""The sync client's socket: one DEALER connection to the supervisor, read
on demand, with the bookkeeping in :class:`~corral.client.core.ClientCore`.

A socket monitor reports the moment the supervisor's end of the socket
closes (or stops answering heartbeats), so a client waiting for tokens
learns at once that the supervisor is gone, instead of waiting for ever.
"""

from __future__ import annotations

from typing import Any, Iterable

import zmq

from corral.client.core import MONITOR_EVENTS, ClientCore, configure_socket, monitor_event
from corral.configs.settings import Settings

_NOBLOCK, _EVENTS, _POLLIN = int(zmq.NOBLOCK), int(zmq.EVENTS), int(zmq.POLLIN)


class Connection:
    def __init__(self, settings: Settings):
        self.core = ClientCore(settings)
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        configure_socket(self.sock)
        self.monitor = self.sock.get_monitor_socket(MONITOR_EVENTS)
        self.sock.connect(settings.endpoint)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.poller.register(self.monitor, zmq.POLLIN)

    def send(self, op: str, **fields: Any) -> int:
        """Send a request; returns its id."""
        rid, frame = self.core.request(op, **fields)
        self.sock.send(frame)
        return rid

    def send_cancel(self, rid: int) -> None:
        self.sock.send(self.core.cancel_frame(rid))

    def next_event(self, rid: int, timeout: float | None = None) -> Any | None:
        """The next reply for request ``rid``; replies for other requests are
        kept for their readers. None if ``timeout`` seconds pass first."""
        while True:
            msg = self.core.pop(rid)
            if msg is not None:
                return msg
            if not self._pump(timeout):
                return None

    def next_any(self, rids: Iterable[int]) -> tuple[int, Any]:
        """The next reply for any of ``rids``, with its request id."""
        while True:
            got = self.core.pop_any(rids)
            if got is not None:
                return got
            self._pump(None)

    def forget(self, rid: int) -> None:
        self.core.forget(rid)

    def _pump(self, timeout: float | None) -> bool:
        ready = dict(self.poller.poll(None if timeout is None else timeout * 1000))
        if not ready:
            return False
        if self.sock in ready:
            # Read what is there; asking the socket is cheaper than the
            # exception a failed non-blocking recv raises.
            while self.sock.getsockopt(_EVENTS) & _POLLIN:
                self.core.receive(self.sock.recv(_NOBLOCK))
        # After the replies: what a supervisor sent before it exited
        # (shutdown) is still delivered.
        if self.monitor in ready:
            while True:
                try:
                    self.core.on_monitor(monitor_event(self.monitor.recv_multipart(_NOBLOCK)))
                except zmq.Again:
                    break
        return True

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(0)
        self.sock.close(0)
