"""What a client connection knows, with no I/O at all (sans-IO).

The sync :class:`~corral.client.api.Client` and the asyncio
:class:`~corral.client.async_api.AsyncClient` each own a socket and feed
this core what arrives (reply frames, socket-monitor events); the core does
the bookkeeping both would otherwise write twice: request ids, the inbox of
each request, whether the connection was lost under a request, and turning
a reply that cannot be read into an error for the request it answers.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any, Iterable

import zmq

from corral.configs.settings import Settings
from corral.supervisor import protocol
from corral.supervisor.errors import CorralError, InternalError, SupervisorUnreachable
from corral.supervisor.logs import get_logger

log = get_logger()

# Socket options every client connection uses. ZeroMQ heartbeats (ZMTP
# PING/PONG, answered by the peer's I/O thread) let a client notice a
# supervisor that stopped answering (SIGSTOP, a hung machine): the
# connection is dropped after HEARTBEAT_TIMEOUT, which fails every request
# waiting on it, so no client waits for ever.
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 4000
HANDSHAKE_IVL_MS = 4000
MONITOR_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED


def configure_socket(sock: zmq.Socket) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_FRAME_BYTES)
    sock.setsockopt(zmq.RCVHWM, 0)  # replies are read as fast as they come
    sock.setsockopt(zmq.SNDHWM, 0)  # a client's requests are bounded by its own calls: never block on them
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_IVL_MS)


def monitor_event(frames: list[bytes]) -> int:
    """The event number of a socket-monitor message (first frame: uint16
    event, int32 value). Read here because pyzmq's helper module imports
    asyncio, which would cost every command ~30 ms at start."""
    return struct.unpack_from("=H", frames[0])[0]


class ClientCore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.next_id = 1
        self.inbox: dict[int, deque] = {}
        self.connected = False
        # Each lost connection starts a new epoch; a request sent in an
        # earlier epoch will never be answered.
        self.epoch = 0
        self.sent_in: dict[int, int] = {}

    def request(self, op: str, **fields: Any) -> tuple[int, bytes]:
        """A new request's id and frame. A field the supervisor would refuse
        raises :class:`BadRequest` here, before anything is sent."""
        rid = self.next_id
        frame = protocol.request(op, rid, **fields)
        self.next_id += 1
        self.inbox[rid] = deque()
        self.sent_in[rid] = self.epoch
        return rid, frame

    def cancel_frame(self, rid: int) -> bytes:
        return protocol.request(protocol.CANCEL, rid)

    def receive(self, frame: bytes) -> int | None:
        """File one reply frame under its request; returns that request's id."""
        try:
            msg = protocol.parse_reply(frame)
        except CorralError as exc:
            rid = exc.request_id
            log.warning("unreadable reply", error=exc.message, request=rid)
            if rid not in self.inbox:
                return None
            msg = protocol.Error(id=rid, code=InternalError.code,
                                 message=f"the supervisor sent a reply this client cannot read ({exc.message}); "
                                         "check that corral is the same version everywhere")
        box = self.inbox.get(msg.id)
        if box is None:
            return None  # a request this client forgot (it stopped reading)
        box.append(msg)
        return msg.id

    def on_monitor(self, event: int) -> None:
        if event == zmq.EVENT_CONNECTED:
            self.connected = True
        elif event == zmq.EVENT_DISCONNECTED and self.connected:
            self.connected = False
            self.epoch += 1

    def pop(self, rid: int) -> Any | None:
        """The next reply for ``rid``, or None if none has come yet. Raises
        :class:`SupervisorUnreachable` once none ever can."""
        box = self.inbox[rid]
        if box:
            return box.popleft()
        if self.sent_in.get(rid, self.epoch) < self.epoch:
            raise self.lost()
        return None

    def pop_any(self, rids: Iterable[int]) -> tuple[int, Any] | None:
        for rid in rids:
            msg = self.pop(rid)
            if msg is not None:
                return rid, msg
        return None

    def lost(self) -> SupervisorUnreachable:
        return SupervisorUnreachable(
            f"lost the connection to the corral supervisor ({self.settings.socket_path}); "
            "see `corral logs`, then run the command again"
        )

    def forget(self, rid: int) -> None:
        self.inbox.pop(rid, None)
        self.sent_in.pop(rid, None)
