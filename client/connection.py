"""One DEALER connection to the supervisor, demultiplexed by request id.

A socket monitor reports the moment the supervisor's end of the socket
closes, so a client waiting for tokens learns at once that the supervisor
died, instead of waiting forever.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any, Iterable

import zmq

from corral.configs.settings import Settings
from corral.supervisor import protocol
from corral.supervisor.errors import BadRequest, SupervisorUnreachable
from corral.supervisor.logs import get_logger

log = get_logger()


def monitor_event(frames: list[bytes]) -> int:
    """The event number of a socket-monitor message (first frame: uint16
    event, int32 value). Read here because pyzmq's helper module imports
    asyncio, which would cost every command ~30 ms at start."""
    return struct.unpack_from("=H", frames[0])[0]


class Connection:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_FRAME_BYTES)
        self.sock.setsockopt(zmq.RCVHWM, 0)  # replies are read as fast as they come
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self.sock.connect(settings.endpoint)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.poller.register(self.monitor, zmq.POLLIN)
        self.connected = False
        self.next_id = 1
        self.inbox: dict[Any, deque[dict]] = {}
        # Each lost connection starts a new epoch; a request sent in an
        # earlier epoch will never be answered.
        self.epoch = 0
        self.sent_in: dict[int, int] = {}

    def send(self, op: str, **fields: Any) -> int:
        """Send a request; returns its id."""
        rid = self.next_id
        self.next_id += 1
        self.inbox[rid] = deque()
        self.sent_in[rid] = self.epoch
        self.sock.send(protocol.request(op, rid, **fields))
        return rid

    def send_cancel(self, rid: int) -> None:
        self.sock.send(protocol.request(protocol.CANCEL, rid))

    def next_event(self, rid: int, timeout: float | None = None) -> dict | None:
        """The next reply for request ``rid``; replies for other requests are
        kept for their readers. None if ``timeout`` seconds pass first."""
        box = self.inbox[rid]
        while not box:
            self._check_lost(rid)
            if not self._pump(timeout):
                return None
        return box.popleft()

    def next_any(self, rids: Iterable[int]) -> tuple[int, dict]:
        """The next reply for any of ``rids``, with its request id."""
        while True:
            for rid in rids:
                box = self.inbox.get(rid)
                if box:
                    return rid, box.popleft()
            for rid in rids:
                self._check_lost(rid)
            self._pump(None)

    def forget(self, rid: int) -> None:
        self.inbox.pop(rid, None)
        self.sent_in.pop(rid, None)

    def _check_lost(self, rid: int) -> None:
        if self.sent_in.get(rid, self.epoch) < self.epoch:
            raise SupervisorUnreachable(
                f"lost the connection to the corral supervisor ({self.settings.socket_path}); "
                "see `corral logs`, then run the command again"
            )

    def _pump(self, timeout: float | None) -> bool:
        ready = dict(self.poller.poll(None if timeout is None else timeout * 1000))
        if not ready:
            return False
        if self.sock in ready:
            while True:
                try:
                    frame = self.sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    msg = protocol.parse_reply(frame)
                except BadRequest as exc:
                    log.warning("dropped bad reply", error=exc.message)
                    continue
                box = self.inbox.get(msg.get("id"))
                if box is not None:
                    box.append(msg)
        # After the replies: what a supervisor sent before it exited
        # (shutdown) is still delivered.
        if self.monitor in ready:
            self._on_monitor()
        return True

    def _on_monitor(self) -> None:
        while True:
            try:
                event = monitor_event(self.monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            if event == zmq.EVENT_CONNECTED:
                self.connected = True
            elif event == zmq.EVENT_DISCONNECTED and self.connected:
                self.connected = False
                self.epoch += 1

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(0)
        self.sock.close(0)
