"""Hostile frames straight to the supervisor's socket: each is answered with
``bad_request`` or dropped, and the supervisor answers the next valid one."""

from __future__ import annotations

import msgpack
import pytest
import zmq

from corral.client.launch import ensure_supervisor
from corral.configs.settings import load_settings
from corral.supervisor import protocol


@pytest.fixture
def raw_socket():
    settings = load_settings()
    ensure_supervisor(settings)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(settings.endpoint)
    yield sock
    sock.close()
    ctx.term()


def reply(sock: zmq.Socket, timeout_ms: int = 3000) -> dict | None:
    if not sock.poll(timeout_ms):
        return None
    return msgpack.unpackb(sock.recv(), raw=False)


def assert_serves(sock: zmq.Socket) -> None:
    sock.send(protocol.request(protocol.STATUS, "after"))
    msg = reply(sock, 10000)
    assert msg is not None and msg["id"] == "after" and msg["ev"] == "result", msg
    assert msg["result"]["pid"] > 0


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


@pytest.mark.parametrize(
    "frame, answered",
    [
        (b"\xc1\xc1 not msgpack at all", False),
        (b"", False),
        (pack([1, 2, 3]), False),  # not a map
        (pack({"v": 1, "op": "status"}), False),  # no id: nobody to answer
        (pack({"v": 2, "id": 1, "op": "status"}), True),  # wrong version
        (pack({"v": 1, "id": 1, "op": "launch_missiles"}), True),
        (pack({"v": 1, "id": 1.5, "op": "status"}), False),  # id of the wrong type
        (pack({"v": 1, "id": 1, "op": "generate", "model": 42, "prompt": "hi"}), True),
        (pack({"v": 1, "id": 1, "op": "generate", "model": "ai/smollm2"}), True),  # no prompt
        (pack({"v": 1, "id": 1, "op": "generate", "model": "ai/smollm2", "prompt": "hi", "options": {"temperature": "hot"}}), True),
        (pack({"v": 1, "id": 1, "op": "generate", "model": "ai/smollm2", "prompt": "hi", "options": {"bogus": 1}}), True),
        (pack({"v": 1, "id": 1, "op": "chat", "model": "ai/smollm2", "messages": [{"role": "robot"}]}), True),
        (pack({"v": 1, "id": 1, "op": "chat", "model": "ai/smollm2", "messages": "hi"}), True),
        (pack({"v": 1, "id": 1, "op": "generate", "model": "ai/smollm2", "prompt": "hi", "keep_alive": True}), True),
        (pack({1: 2}), False),  # non-string keys
    ],
)
def test_bad_frame_is_answered_or_dropped(raw_socket, frame, answered):
    raw_socket.send(frame)
    msg = reply(raw_socket, 1000 if not answered else 10000)
    if answered:
        assert msg is not None
        assert msg["ev"] == "error" and msg["code"] == "bad_request", msg
        assert msg["id"] == 1
        assert "\n" not in msg["message"]
    else:
        assert msg is None
    assert_serves(raw_socket)


def test_multipart_garbage_is_dropped(raw_socket):
    raw_socket.send_multipart([b"a", b"b", b"c"])
    assert reply(raw_socket, 1000) is None
    assert_serves(raw_socket)


def test_oversized_frame_is_dropped(raw_socket):
    raw_socket.send(b"\x00" * (protocol.MAX_FRAME_BYTES + 1))
    assert reply(raw_socket, 1000) is None
    # The supervisor dropped that peer's connection; a new request still gets
    # through once the socket has reconnected.
    assert_serves(raw_socket)


def test_many_bad_frames_then_good(raw_socket):
    for i in range(200):
        raw_socket.send(pack({"v": 1, "id": i, "op": "nope"}))
    for _ in range(200):
        assert reply(raw_socket)["code"] == "bad_request"
    assert_serves(raw_socket)
