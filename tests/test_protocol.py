"""The wire format, checked without any socket."""

from __future__ import annotations

import msgpack
import pytest

from corral.supervisor import protocol
from corral.supervisor.errors import BadRequest, ModelNotFound, error_for_code


def test_request_round_trip():
    frame = protocol.request("generate", 7, model="ai/smollm2", prompt="hi", options={"temperature": 0})
    msg = protocol.parse_client_request(frame)
    assert msg == {"v": 1, "id": 7, "op": "generate", "model": "ai/smollm2", "prompt": "hi", "options": {"temperature": 0}}


def test_bool_is_not_a_number():
    frame = protocol.request("generate", 1, model="m", prompt="p", options={"max_tokens": True})
    with pytest.raises(BadRequest, match="max_tokens"):
        protocol.parse_client_request(frame)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", 3]}, "stop"),
        ({"temperature": float("nan")}, "finite"),
        ({"colour": "red"}, "unknown sampling option"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(BadRequest, match=match):
        protocol.check_options(options)


def test_error_carries_request_id_when_readable():
    with pytest.raises(BadRequest) as caught:
        protocol.parse_client_request(msgpack.packb({"v": 1, "id": "x", "op": "nope"}))
    assert caught.value.request_id == "x"
    with pytest.raises(BadRequest) as caught:
        protocol.parse_client_request(b"\xc1")
    assert caught.value.request_id is None


def test_oversized_frame_refused_before_parsing():
    with pytest.raises(BadRequest, match="exceeds"):
        protocol.decode(b"\x00" * (protocol.MAX_FRAME_BYTES + 1))


def test_error_frame_round_trips_to_the_same_exception():
    frame = protocol.error(3, ModelNotFound("no such model\nreally"))
    msg = protocol.parse_reply(frame)
    exc = error_for_code(msg["code"], msg["message"])
    assert isinstance(exc, ModelNotFound)
    assert exc.exit_code == 3
    assert str(exc) == "no such model really"  # one line, always


def test_worker_event_needs_rid():
    with pytest.raises(BadRequest, match="rid"):
        protocol.parse_worker_event(protocol.event("token", text="x"))
    assert protocol.parse_worker_event(protocol.event("token", rid=1, text="x"))["text"] == "x"
