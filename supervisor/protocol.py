"""The wire protocol: the one module that defines, builds and parses frames.

Every frame is one msgpack map carrying ``"v": 1``; plain types only, never
pickle. Each message is a typed ``msgspec`` struct: decoding *is* validation,
in one pass, against the schema of the direction the frame travels, with a
bound on every string and list. A frame of the wrong shape fails at its
first wrong byte, before anything is built from the rest of it (a 16 MiB
frame of empty maps costs nothing), and no other module ever sees it.

Directions: client → supervisor :data:`ClientRequest` and supervisor →
worker :data:`WorkerCommand` (tagged by ``"op"``); supervisor → client
:data:`Reply` and worker → supervisor :data:`WorkerEvent` (by ``"ev"``).

Token, done, error and embedding events travel worker → supervisor → client
unchanged: the worker writes the client's ``id`` and the supervisor's ``rid``
into them, so the supervisor routes them by ``rid`` without re-encoding.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import msgspec
from msgspec import Meta, Struct, defstruct, field

from corral.supervisor.errors import BadRequest, CorralError

VERSION = 1
#: Largest frame either side accepts; sockets enforce it too (ZMQ_MAXMSGSIZE),
#: so a peer sending more is disconnected before the bytes reach Python.
MAX_FRAME_BYTES = 16 * 1024 * 1024
MAX_TEXT_CHARS = 4 * 1024 * 1024  # a prompt or a message: far past any context
MAX_MESSAGES = 4096
MAX_STOP_STRINGS = 32
MAX_EMBED_INPUTS = 2048
MAX_PROMPT_TOKENS = 1024 * 1024  # token ids in one prompt
MAX_TOOLS_BYTES = 1024 * 1024  # tool definitions, or the calls of one turn, as JSON text
#: The range of integers msgpack carries; the CLI checks the same bounds.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Ops and events by name, for code that builds frames.
GENERATE, CHAT, LOAD, EMBED, UNLOAD, PS, STATUS, CANCEL, SHUTDOWN = "generate chat load embed unload ps status cancel shutdown".split()
TOKENIZE = "tokenize"
TOKEN, DONE, ERROR, RESULT, EMBEDDING, LOG, READY, HEARTBEAT = "token done error result embedding log ready hb".split()

# A worker talks on two sockets: its identity for commands and heartbeats,
# and identity + this suffix for the frames of its work.
WORKER_DATA_SUFFIX = b"/data"

Id = Union[Annotated[int, Meta(ge=INT64_MIN, le=INT64_MAX)], Annotated[str, Meta(max_length=256)]]
Name = Annotated[str, Meta(min_length=1, max_length=4096)]
Text = Annotated[str, Meta(max_length=MAX_TEXT_CHARS)]
Short = Annotated[str, Meta(max_length=1024)]
Count = Annotated[int, Meta(ge=0, le=2**31 - 1)]


class Options(Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Sampling options; changing them never reloads a model. Unset means
    the model's own defaults (see the worker's backend)."""

    temperature: Annotated[float, Meta(ge=0, le=100)] | None = None
    top_p: Annotated[float, Meta(gt=0, le=1)] | None = None
    top_k: Annotated[int, Meta(ge=0, le=1_000_000)] | None = None  # 0: off
    min_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    seed: Annotated[int, Meta(ge=INT64_MIN, le=INT64_MAX)] | None = None
    max_tokens: Annotated[int, Meta(ge=1, le=2**31 - 1)] | None = None
    repeat_penalty: Annotated[float, Meta(gt=0, le=100)] | None = None
    repeat_last_n: Annotated[int, Meta(ge=-1, le=2**31 - 1)] | None = None  # -1: the whole context
    presence_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    stop: Annotated[list[Short], Meta(max_length=MAX_STOP_STRINGS)] | None = None
    grammar: Annotated[str, Meta(max_length=1024 * 1024)] | None = None  # GBNF
    json_schema: Annotated[str, Meta(max_length=1024 * 1024)] | None = None  # a schema, as JSON text
    # log probabilities of each token and of this many alternatives (set: wanted)
    logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None


SAMPLING_FIELDS = Options.__struct_fields__


class Message(Struct, forbid_unknown_fields=True, omit_defaults=True):
    role: Literal["system", "user", "assistant", "tool"]
    content: Text
    # For a chat template that renders tools (Chat.tools): the calls an
    # assistant turn made, as JSON text ([{"id", "name", "arguments"}]), and
    # which call a tool turn answers.
    tool_calls: Annotated[str, Meta(max_length=MAX_TOOLS_BYTES)] | None = None
    tool_call_id: Short | None = None
    name: Short | None = None


# -- client → supervisor ------------------------------------------------------


class _Request(Struct, kw_only=True, tag_field="op", forbid_unknown_fields=True):
    id: Id
    v: int = VERSION


class _ModelRequest(_Request, kw_only=True):
    model: Name
    # seconds; negative keeps the model loaded forever, 0 unloads it at once
    keep_alive: Annotated[float, Meta(ge=-1e12, le=1e12)] | None = None
    ignore_memory_check: bool = False
    # the architecture of a GGML file given as a path (GGML does not record it)
    model_type: Annotated[str, Meta(max_length=64)] | None = None
    # a load-time setting: a different value reloads the model
    context_length: Annotated[int, Meta(ge=16, le=16 * 1024 * 1024)] | None = None
    # MODEL must be a catalog or store name, never a path (the HTTP gateway)
    names_only: bool = False
    # stream the supervisor's log lines about this request as `log` events
    debug: bool = False


class Generate(_ModelRequest, tag=GENERATE, kw_only=True):
    prompt: Text
    # the prompt as the model's token ids instead (llama.cpp models): prompt is then ""
    tokens: Annotated[list[Count], Meta(min_length=1, max_length=MAX_PROMPT_TOKENS)] | None = None
    options: Options = field(default_factory=Options)


class Chat(_ModelRequest, tag=CHAT, kw_only=True):
    messages: Annotated[list[Message], Meta(min_length=1, max_length=MAX_MESSAGES)]
    options: Options = field(default_factory=Options)
    # drop the oldest turns (never system prompts or the last message) when
    # the conversation does not fit the context; done says how many went
    truncate: bool = False
    # tool definitions (OpenAI's form, JSON text) for the chat template to
    # render, in a template that knows tools; the model answers in its own
    # call syntax
    tools: Annotated[str, Meta(max_length=MAX_TOOLS_BYTES)] | None = None
    # text the answer starts with: put after the generation prompt, not sent
    # back (a required tool call's opening marker, say)
    assistant_prefix: Short | None = None


class Tokenize(_ModelRequest, tag=TOKENIZE, kw_only=True):
    """The model's tokenizer and chat template without a generation (llama.cpp
    models); exactly one of the three is set. The answer is a done event
    carrying ``tokens`` (and ``pieces``) or ``text``."""

    text: Text | None = None  # -> its token ids
    special: bool = False  # with the BOS token, and special tokens' text read as those tokens
    pieces: bool = False  # each token's bytes too
    tokens: Annotated[list[Count], Meta(max_length=MAX_PROMPT_TOKENS)] | None = None  # -> their text
    messages: Annotated[list[Message], Meta(min_length=1, max_length=MAX_MESSAGES)] | None = None  # -> the chat prompt


class Embed(_ModelRequest, tag=EMBED, kw_only=True):
    input: Annotated[list[Text], Meta(min_length=1, max_length=MAX_EMBED_INPUTS)]


class Unload(_Request, tag=UNLOAD, kw_only=True):
    model: Name | None = None
    all: bool = False


# Messages with no fields of their own.
Load = defstruct("Load", [], bases=(_ModelRequest,), tag=LOAD)
Ps = defstruct("Ps", [], bases=(_Request,), tag=PS)
Status = defstruct("Status", [], bases=(_Request,), tag=STATUS)
Cancel = defstruct("Cancel", [], bases=(_Request,), tag=CANCEL)
Shutdown = defstruct("Shutdown", [], bases=(_Request,), tag=SHUTDOWN)


ClientRequest = Union[Generate, Chat, Load, Embed, Tokenize, Unload, Ps, Status, Cancel, Shutdown]
ModelRequest = (Generate, Chat, Load, Embed, Tokenize)

# -- events: supervisor → client, and worker → supervisor ---------------------


class _Event(Struct, kw_only=True, tag_field="ev"):
    id: Id | None = None  # the client's request id
    rid: Count = 0  # the supervisor's request number (worker frames)
    v: int = VERSION


class TokenLogprob(Struct, array_like=True, gc=False):
    """One token's log probability and its top alternatives' as (text, logprob)."""

    token: Annotated[bytes, Meta(max_length=1024)]
    logprob: float
    top: Annotated[list[tuple[Annotated[bytes, Meta(max_length=1024)], float]], Meta(max_length=20)] = []


class Token(_Event, tag=TOKEN, gc=False, kw_only=True):
    text: Text
    logprobs: Annotated[list[TokenLogprob], Meta(max_length=4096)] | None = None  # the tokens this text came from


class Usage(Struct, kw_only=True):
    prompt_tokens: Count = 0
    completion_tokens: Count = 0


class Timings(Struct, kw_only=True):
    ttft_ms: float = 0.0
    total_ms: float = 0.0
    tokens_per_s: float = 0.0


class Done(_Event, tag=DONE, kw_only=True):
    stopped: Literal["stop", "length", "cancelled"] | None = None
    usage: Usage | None = None
    timings: Timings | None = None
    load_ms: float | None = None  # the request waited for the model to load
    dropped_messages: Count | None = None  # turns a truncated chat left out
    stop_sequence: Short | None = None  # the stop string that ended the answer
    # answers to tokenize: token ids (and their bytes), or text
    tokens: list[int] | None = None
    pieces: list[bytes] | None = None
    text: str | None = None
    # answers to load and unload
    model: str | None = None
    pid: int | None = None
    unloaded: list[str] | None = None


class Error(_Event, tag=ERROR, kw_only=True):
    code: Annotated[str, Meta(max_length=64)]
    message: Annotated[str, Meta(max_length=64 * 1024)]


class Embedding(_Event, tag=EMBEDDING, kw_only=True):
    index: Count
    vector: bytes  # little-endian float32, normalised


class Log(_Event, tag=LOG, kw_only=True):
    line: Annotated[str, Meta(max_length=64 * 1024)]


class Result(_Event, tag=RESULT, kw_only=True):
    result: Any  # ps rows or status facts: built by the supervisor, never by a peer


Reply = Union[Token, Done, Error, Embedding, Log, Result]


class Ready(_Event, tag=READY, kw_only=True):
    pid: int
    load_ms: float
    context_length: Count
    threads: Count = 0
    parallel: Annotated[int, Meta(ge=1, le=1024)] = 1  # sequences decoded together
    architecture: Annotated[str, Meta(max_length=256)] | None = None
    chat_template: Annotated[str, Meta(max_length=64)] | None = None
    embeddings: bool = False  # the backend can embed
    grammar: bool = False  # the backend can apply grammars and JSON schemas


Heartbeat = defstruct("Heartbeat", [], bases=(_Event,), tag=HEARTBEAT)


WorkerEvent = Union[Ready, Token, Done, Error, Embedding, Heartbeat]

# -- supervisor → worker -------------------------------------------------------


class _Command(Struct, kw_only=True, tag_field="op", forbid_unknown_fields=True):
    v: int = VERSION


class Work(_Command, tag="work", kw_only=True):
    """A client's request handed to a worker, with the supervisor's number."""

    rid: Count
    request: Generate | Chat | Embed | Tokenize


class WorkCancel(_Command, tag=CANCEL, kw_only=True):
    rid: Count


WorkShutdown = defstruct("WorkShutdown", [], bases=(_Command,), tag=SHUTDOWN)
WorkHeartbeat = defstruct("WorkHeartbeat", [], bases=(_Command,), tag=HEARTBEAT)


class WorkThreads(_Command, tag="threads", kw_only=True):  # engine threads from the next step on
    threads: Annotated[int, Meta(ge=1, le=1024)]


WorkerCommand = Union[Work, WorkCancel, WorkShutdown, WorkHeartbeat, WorkThreads]

# -- encoding and decoding -----------------------------------------------------

_encoder = msgspec.msgpack.Encoder()
# Decoders by direction (held directly: hashing a Union per lookup is slow).
_requests, _replies, _commands, _events = (msgspec.msgpack.Decoder(t) for t in (ClientRequest, Reply, WorkerCommand, WorkerEvent))
# RecursionError: a map or array nested thousands deep in a free-form field
_MALFORMED = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)


class _Envelope(Struct):  # just the ids of a frame that failed to decode, to answer it
    id: Id | None = None
    rid: Count = 0


_envelope = msgspec.msgpack.Decoder(_Envelope)


def encode(msg: Struct) -> bytes:
    return _encoder.encode(msg)


def _decode(frame: bytes, decoder: msgspec.msgpack.Decoder, what: str) -> Any:
    if len(frame) > MAX_FRAME_BYTES:
        raise BadRequest(f"{what} of {len(frame)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    try:
        msg = decoder.decode(frame)
    except _MALFORMED as exc:
        error = BadRequest(f"invalid {what}: {exc}")
        error.request_id = frame_ids(frame)[0]
        raise error from None
    if msg.v != VERSION:
        error = BadRequest(f"unsupported protocol version {msg.v!r}; this side speaks v{VERSION}")
        error.request_id = getattr(msg, "id", None)
        raise error
    return msg


def frame_ids(frame: bytes) -> tuple[int | str | None, int]:
    """The client's id and the supervisor's number of a frame, as far as readable."""
    try:
        envelope = _envelope.decode(frame)
        return envelope.id, envelope.rid
    except _MALFORMED:
        return None, 0


def parse_client_request(frame: bytes) -> ClientRequest:
    """A validated client request; :class:`BadRequest` carries ``.request_id``
    when the frame was readable enough to be answered."""
    return _decode(frame, _requests, "request")


def parse_reply(frame: bytes) -> Reply:
    return _decode(frame, _replies, "reply")


def parse_worker_command(frame: bytes) -> WorkerCommand:
    return _decode(frame, _commands, "worker command")


def parse_worker_event(frame: bytes) -> WorkerEvent:
    return _decode(frame, _events, "worker event")


def _convert(value: Any, kind: Any, what: str) -> Any:
    """Python values checked as the other side will check them, so a bad
    one fails in the caller, at once."""
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid {what}: {exc}") from None


def check_options(options: dict[str, Any]) -> Options:
    """Sampling options given as keyword arguments; unknown names are refused, not ignored."""
    return _convert(options, Options, "sampling options")


def check_messages(messages: Any) -> list[Message]:
    return _convert(messages, Annotated[list[Message], Meta(min_length=1, max_length=MAX_MESSAGES)],
                    "messages (each needs a role: system, user, assistant or tool, and a string content)")


def to_builtins(msg: Any) -> Any:  # a struct as plain dicts and lists
    return msgspec.to_builtins(msg)


# -- builders: the only places frames are made ---------------------------------

_CLIENT_OPS = {t.__struct_config__.tag: t for t in ClientRequest.__args__}
_COMMANDS = {t.__struct_config__.tag: t for t in WorkerCommand.__args__}
_EVENTS = {t.__struct_config__.tag: t for t in (*Reply.__args__, Ready, Heartbeat)}


def request(op: str, id: int | str, **fields: Any) -> bytes:
    return encode(_convert({"id": id, **fields}, _CLIENT_OPS[op], f"{op} request"))


def command(op: str, **fields: Any) -> bytes:
    return encode(_COMMANDS[op](**fields))


def event(ev: str, **fields: Any) -> bytes:
    return encode(_EVENTS[ev](**fields))


def error(id: int | str | None, exc: CorralError, rid: int = 0) -> bytes:
    return encode(Error(id=id, rid=rid, code=exc.code, message=exc.message[: 64 * 1024]))


def work(rid: int, msg: Generate | Chat | Embed | Tokenize) -> bytes:
    """The command that hands a client's request to a worker."""
    return encode(Work(rid=rid, request=msg))
