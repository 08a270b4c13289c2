"""The wire protocol: the one module that builds or parses frames.

Every frame is one msgpack map carrying ``"v": 1``; plain types only, never
pickle. Client requests carry an ``"id"`` and an ``"op"``; every reply for a
request carries the same ``"id"`` and an ``"ev"``. The supervisor and its
workers speak the same format; a request forwarded to a worker also carries
the supervisor's own request number ``"rid"`` so that the worker's replies
can be routed back without being re-encoded.

Frames are checked at the door: a frame that is too large, not msgpack, not
a map, of another version, or with a field of the wrong type raises
:class:`BadRequest` here, before any other code sees it.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack

from corral.supervisor.errors import BadRequest, CorralError

VERSION = 1
#: Largest frame either side accepts; sockets enforce it too (ZMQ_MAXMSGSIZE),
#: so a peer sending more is disconnected before the bytes reach Python.
MAX_FRAME_BYTES = 16 * 1024 * 1024

# Ops a client may send to the supervisor.
GENERATE, CHAT, LOAD, UNLOAD, PS, STATUS, CANCEL, SHUTDOWN = (
    "generate", "chat", "load", "unload", "ps", "status", "cancel", "shutdown",
)
# Events, in replies and from workers.
TOKEN, DONE, ERROR, RESULT, READY, HEARTBEAT = "token", "done", "error", "result", "ready", "hb"

# A worker talks on two sockets: its identity for commands and heartbeats,
# and identity + this suffix for the frames of its generations.
WORKER_DATA_SUFFIX = b"/data"

_NUMBER = (int, float)
_ID = (int, str)

# Sampling options: a change never reloads a model.
SAMPLING_FIELDS: dict[str, tuple] = {
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "top_k": (int,),
    "seed": (int,),
    "max_tokens": (int,),
    "repeat_penalty": _NUMBER,
    "stop": (list,),
}

_MODEL_REQUEST = {
    "model": ((str,), True),
    "options": ((dict,), False),
    # seconds; negative keeps the model loaded forever, 0 unloads it at once
    "keep_alive": (_NUMBER, False),
    "ignore_memory_check": ((bool,), False),
    # the architecture of a GGML file given as a path (GGML does not record it)
    "model_type": ((str,), False),
}

# op -> {field: (allowed types, required)}
CLIENT_OPS: dict[str, dict[str, tuple[tuple, bool]]] = {
    GENERATE: {**_MODEL_REQUEST, "prompt": ((str,), True)},
    CHAT: {**_MODEL_REQUEST, "messages": ((list,), True)},
    LOAD: dict(_MODEL_REQUEST),
    UNLOAD: {"model": ((str,), False), "all": ((bool,), False)},
    PS: {},
    STATUS: {},
    CANCEL: {},
    SHUTDOWN: {},
}

# Commands the supervisor sends to a worker.
WORKER_OPS: dict[str, dict[str, tuple[tuple, bool]]] = {
    GENERATE: {"rid": ((int,), True), "prompt": ((str,), True), "options": ((dict,), True)},
    CHAT: {"rid": ((int,), True), "messages": ((list,), True), "options": ((dict,), True)},
    CANCEL: {"rid": ((int,), True)},
    SHUTDOWN: {},
    HEARTBEAT: {},
}

CHAT_ROLES = ("system", "user", "assistant")


def encode(msg: dict[str, Any]) -> bytes:
    """One frame from a map of plain values."""
    return msgpack.packb({"v": VERSION, **msg}, use_bin_type=True)


def decode(frame: bytes) -> dict[str, Any]:
    """A frame's map, or :class:`BadRequest` if it is not a valid frame."""
    if len(frame) > MAX_FRAME_BYTES:
        raise BadRequest(f"frame of {len(frame)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    try:
        msg = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise BadRequest(f"frame is not valid msgpack ({type(exc).__name__})") from None
    if not isinstance(msg, dict):
        raise BadRequest("frame must be a msgpack map")
    if msg.get("v") != VERSION:
        exc = BadRequest(f"unsupported protocol version {msg.get('v')!r}; this side speaks v{VERSION}")
        exc.request_id = request_id(msg)
        raise exc
    return msg


def _is(value: Any, types: tuple) -> bool:
    # bool is an int in Python but never a valid number on the wire.
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def _check_fields(msg: dict, schema: dict[str, tuple[tuple, bool]], what: str) -> None:
    for field, (types, required) in schema.items():
        if field not in msg:
            if required:
                raise BadRequest(f"{what} needs the field {field!r}")
            continue
        if not _is(msg[field], types):
            names = "/".join(t.__name__ for t in types)
            raise BadRequest(f"{what}: field {field!r} must be {names}, not {type(msg[field]).__name__}")


def check_options(options: dict) -> dict:
    """Sampling options, validated; unknown names are refused, not ignored."""
    for name, value in options.items():
        if name not in SAMPLING_FIELDS:
            raise BadRequest(f"unknown sampling option {name!r}; known: {', '.join(SAMPLING_FIELDS)}")
        if not _is(value, SAMPLING_FIELDS[name]):
            raise BadRequest(f"sampling option {name!r} has the wrong type {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise BadRequest(f"sampling option {name!r} must be a finite number")
    if "stop" in options and not all(isinstance(s, str) for s in options["stop"]):
        raise BadRequest("sampling option 'stop' must be a list of strings")
    if options.get("temperature", 0) < 0:
        raise BadRequest("temperature must be 0 or more")
    if not 0 < options.get("top_p", 1) <= 1:
        raise BadRequest("top_p must be in (0, 1]")
    if options.get("max_tokens", 1) < 1:
        raise BadRequest("max_tokens must be at least 1")
    return options


def check_messages(messages: list) -> list:
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in CHAT_ROLES:
            raise BadRequest(f"message {i} must be a map with a role in {CHAT_ROLES} and a string content")
    if not messages:
        raise BadRequest("chat needs at least one message")
    return messages


def _check_payload(msg: dict) -> None:
    if "options" in msg:
        check_options(msg["options"])
    if "messages" in msg:
        check_messages(msg["messages"])


def request_id(msg: Any) -> int | str | None:
    """The request id of a decoded map, if it has a usable one (for replying)."""
    if isinstance(msg, dict) and _is(msg.get("id"), _ID):
        return msg["id"]
    return None


def parse_client_request(frame: bytes) -> dict[str, Any]:
    """A validated client request. :class:`BadRequest` carries ``.request_id``
    when the frame was readable enough to be answered."""
    msg = None
    try:
        msg = decode(frame)
        if not _is(msg.get("id"), _ID):
            raise BadRequest("request needs an 'id' (int or string)")
        op = msg.get("op")
        if op not in CLIENT_OPS:
            raise BadRequest(f"unknown op {op!r}; known: {', '.join(CLIENT_OPS)}")
        _check_fields(msg, CLIENT_OPS[op], op)
        _check_payload(msg)
        return msg
    except BadRequest as exc:
        if msg is not None:
            exc.request_id = request_id(msg)
        raise


def parse_worker_command(frame: bytes) -> dict[str, Any]:
    msg = decode(frame)
    op = msg.get("op")
    if op not in WORKER_OPS:
        raise BadRequest(f"unknown worker op {op!r}")
    _check_fields(msg, WORKER_OPS[op], op)
    _check_payload(msg)
    return msg


def parse_worker_event(frame: bytes) -> dict[str, Any]:
    msg = decode(frame)
    if msg.get("ev") not in (READY, TOKEN, DONE, ERROR, HEARTBEAT):
        raise BadRequest(f"unknown worker event {msg.get('ev')!r}")
    if msg["ev"] in (TOKEN, DONE, ERROR) and not _is(msg.get("rid"), (int,)):
        raise BadRequest("worker reply needs an int 'rid'")
    return msg


def parse_reply(frame: bytes) -> dict[str, Any]:
    """A reply as the client reads it."""
    msg = decode(frame)
    if msg.get("ev") not in (TOKEN, DONE, ERROR, RESULT):
        raise BadRequest(f"unknown reply event {msg.get('ev')!r}")
    return msg


# Builders: the only places frames are made.

def request(op: str, id: int | str, **fields: Any) -> bytes:
    return encode({"id": id, "op": op, **fields})


def command(op: str, **fields: Any) -> bytes:
    return encode({"op": op, **fields})


def event(ev: str, **fields: Any) -> bytes:
    return encode({"ev": ev, **fields})


def error(id: int | str | None, exc: CorralError, **fields: Any) -> bytes:
    return encode({"id": id, "ev": ERROR, "code": exc.code, "message": exc.message, **fields})
