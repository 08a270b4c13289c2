"""The wire format, checked without any socket: typed messages in every
direction, bounds on every input, and random frames that never raise
anything but ``BadRequest``."""

from __future__ import annotations

import os
import tracemalloc

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from corral.supervisor import protocol
from corral.supervisor.errors import BadRequest, ModelNotFound, error_for_code

FUZZ_EXAMPLES = int(os.environ.get("CORRAL_FUZZ_EXAMPLES", "300"))


def test_request_round_trip():
    frame = protocol.request("generate", 7, model="ai/smollm2", prompt="hi", options={"temperature": 0})
    msg = protocol.parse_client_request(frame)
    assert isinstance(msg, protocol.Generate)
    assert (msg.id, msg.model, msg.prompt, msg.options.temperature) == (7, "ai/smollm2", "hi", 0.0)
    assert msgpack.unpackb(frame)["v"] == 1  # every frame carries the version


def test_bool_is_not_a_number():
    with pytest.raises(BadRequest, match="max_tokens"):
        protocol.request("generate", 1, model="m", prompt="p", options={"max_tokens": True})


@pytest.mark.parametrize(
    "options, match",
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", 3]}, "stop"),
        ({"temperature": float("nan")}, "temperature"),
        ({"colour": "red"}, "colour"),
        ({"seed": 99999999999999999999}, "seed"),
        ({"stop": ["x"] * 1000}, "stop"),
    ],
)
def test_bad_options_name_the_field(options, match):
    with pytest.raises(BadRequest, match=match):
        protocol.check_options(options)


@pytest.mark.parametrize(
    "frame, answerable",
    [
        (msgpack.packb({"v": 1, "id": "x", "op": "nope"}), True),
        (msgpack.packb({"v": 2, "id": "x", "op": "status"}), True),
        (msgpack.packb({"v": 1, "id": "x", "op": "generate", "model": "m", "prompt": "p", "options": {"bogus": 1}}), True),
        (b"\xc1", False),
        (msgpack.packb({"v": 1, "id": 1.5, "op": "status"}), False),
        (msgpack.packb({1: 2}), False),
    ],
)
def test_refused_frames_carry_the_id_when_readable(frame, answerable):
    with pytest.raises(BadRequest) as caught:
        protocol.parse_client_request(frame)
    assert (caught.value.request_id == "x") if answerable else caught.value.request_id is None
    assert "\n" not in caught.value.message


def test_oversized_frame_refused_before_parsing():
    with pytest.raises(BadRequest, match="exceeds"):
        protocol.parse_client_request(b"\x00" * (protocol.MAX_FRAME_BYTES + 1))


def test_a_frame_of_empty_maps_allocates_nothing_in_proportion():
    # The frame that once grew the supervisor from 41 to 1,205 MiB.
    junk = msgpack.packb({"v": 1, "id": 1, "op": "chat", "model": "m", "messages": [{}] * (protocol.MAX_FRAME_BYTES - 64)})
    bare = msgpack.packb([{}] * (protocol.MAX_FRAME_BYTES - 16))
    tracemalloc.start()
    try:
        for frame in (junk, bare):
            with pytest.raises(BadRequest):
                protocol.parse_client_request(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, f"decoding refused frames took {peak} bytes"


def test_error_frame_round_trips_to_the_same_exception():
    frame = protocol.error(3, ModelNotFound("no such model\nreally"))
    msg = protocol.parse_reply(frame)
    exc = error_for_code(msg.code, msg.message)
    assert isinstance(exc, ModelNotFound)
    assert exc.exit_code == 3
    assert str(exc) == "no such model really"  # one line, always


def test_worker_events_are_typed():
    with pytest.raises(BadRequest):
        protocol.parse_worker_event(msgpack.packb({"v": 1, "ev": "token", "rid": "one", "text": "x"}))
    with pytest.raises(BadRequest):  # a client's reply type is not a worker event
        protocol.parse_worker_event(protocol.event(protocol.RESULT, id=1, result={}))
    assert protocol.parse_worker_event(protocol.event("token", rid=1, text="x")).text == "x"


def test_work_commands_carry_the_request():
    msg = protocol.parse_client_request(protocol.request("chat", 5, model="m", messages=[{"role": "user", "content": "hi"}],
                                                         options={"max_tokens": 3}, truncate=True))
    cmd = protocol.parse_worker_command(protocol.work(9, msg))
    assert isinstance(cmd, protocol.Work) and isinstance(cmd.request, protocol.Chat)
    assert (cmd.rid, cmd.request.id, cmd.request.messages[0].content, cmd.request.options.max_tokens,
            cmd.request.truncate) == (9, 5, "hi", 3, True)


# -- fuzzing: whatever arrives, a parser raises BadRequest or returns a message

PARSERS = [protocol.parse_client_request, protocol.parse_reply, protocol.parse_worker_command, protocol.parse_worker_event]
VALID = [
    protocol.request("generate", 1, model="ai/smollm2", prompt="hi", options={"temperature": 0.5, "stop": ["x"]}),
    protocol.request("chat", "a", model="m", messages=[{"role": "user", "content": "hi"}]),
    protocol.event("token", rid=3, id=1, text="hello"),
    protocol.event("done", rid=3, id=1, stopped="stop", usage={"prompt_tokens": 1, "completion_tokens": 2}),
    protocol.command("cancel", rid=2),
    protocol.event("ready", pid=1, load_ms=1.0, context_length=2048),
]

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**64 - 1) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10) | st.integers(), children, max_size=5),
    max_leaves=20,
)


def _parse_all(frame: bytes) -> None:
    for parse in PARSERS:
        try:
            parse(frame)
        except BadRequest:
            pass


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_bad_request(frame):
    _parse_all(frame)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(msgpack_values)
def test_random_msgpack_raises_only_bad_request(value):
    try:
        frame = msgpack.packb(value, use_bin_type=True)
    except (OverflowError, ValueError):
        return
    _parse_all(frame)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.sampled_from(VALID), st.data())
def test_mutated_valid_frames_raise_only_bad_request(frame, data):
    buf = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(buf) - 1))
        buf[at] = data.draw(st.integers(0, 255))
    _parse_all(bytes(buf))
