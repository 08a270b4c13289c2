"""What the sync and async clients share: how a call becomes request fields,
how reply events become a response's state, and what a batch item is."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable

from corral.configs.settings import parse_duration
from corral.supervisor import protocol
from corral.supervisor.errors import BadRequest, CorralError, error_for_code


def model_ref(model: str) -> str:
    """What to send for a MODEL argument: a file path made absolute (the
    supervisor has another working directory), a catalog name as it is."""
    return os.path.abspath(model) if os.path.isfile(model) else model


def keep_alive_seconds(keep_alive: str | float | None) -> float | None:
    """A duration as the wire wants it: seconds, negative for never."""
    if keep_alive is None:
        return None
    seconds = parse_duration(keep_alive, "keep-alive")
    return -1.0 if seconds is None else seconds


def model_fields(
    model: str,
    *,
    keep_alive: str | float | None = None,
    ignore_memory_check: bool = False,
    model_type: str | None = None,
) -> dict[str, Any]:
    """The fields of a generate/chat/load request that name the model."""
    fields: dict[str, Any] = {"model": model_ref(model)}
    if model_type:
        fields["model_type"] = model_type
    seconds = keep_alive_seconds(keep_alive)
    if seconds is not None:
        fields["keep_alive"] = seconds
    if ignore_memory_check:
        fields["ignore_memory_check"] = True
    return fields


def stream_request(model: str, payload: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """All fields of a generate or chat request from a client call's arguments."""
    model_kwargs = {k: kwargs.pop(k) for k in ("keep_alive", "ignore_memory_check", "model_type") if k in kwargs}
    options = protocol.check_options({k: v for k, v in kwargs.items() if v is not None})
    return {**model_fields(model, **model_kwargs), "options": options, **payload}


class ResponseState:
    """A response's text, stats and ending, fed one reply event at a time."""

    def __init__(self, rid: int, model: str):
        self.id = rid
        self.model = model
        self.chunks: list[str] = []
        self.done: dict[str, Any] | None = None

    def feed(self, msg: dict[str, Any]) -> str | None:
        """Take one event: returns a token's text; raises the error an
        ``error`` event stands for."""
        ev = msg["ev"]
        if ev == protocol.TOKEN:
            self.chunks.append(msg["text"])
            return msg["text"]
        self.done = msg
        if ev == protocol.ERROR:
            raise error_for_code(msg.get("code", ""), msg.get("message", "unknown error"))
        return None

    def text_so_far(self) -> str:
        return "".join(self.chunks)

    @property
    def usage(self) -> dict[str, int]:
        return (self.done or {}).get("usage", {})

    @property
    def timings(self) -> dict[str, float]:
        return (self.done or {}).get("timings", {})

    @property
    def stopped(self) -> str | None:
        """Why it ended: "stop", "length" or "cancelled"."""
        return (self.done or {}).get("stopped")

    @property
    def load_ms(self) -> float:
        """Time spent loading the model for this request (0 when it was loaded)."""
        return (self.done or {}).get("load_ms", 0.0)


# -- batches -----------------------------------------------------------------

@dataclass
class BatchItem:
    index: int
    id: Any
    op: str
    payload: dict[str, Any]  # {"prompt": ...} or {"messages": ...}
    options: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0


@dataclass
class BatchResult:
    index: int
    id: Any
    text: str = ""
    usage: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None
    error: CorralError | None = None
    attempts: int = 1

    def as_record(self) -> dict[str, Any]:
        """The result as one output line of `corral batch`."""
        if self.error is not None:
            return {"id": self.id, "error": {"code": self.error.code, "message": self.error.message}, "attempts": self.attempts}
        return {"id": self.id, "text": self.text, "usage": self.usage, "finish_reason": self.stopped}


def batch_items(prompts: Iterable[str | dict[str, Any]]) -> list[BatchItem]:
    """Prompts as batch items: a string is a prompt; a map has ``prompt`` or
    ``messages``, an optional ``id`` (default: its index) and optional
    sampling options, by name or under ``options``."""
    items = []
    for index, p in enumerate(prompts):
        if isinstance(p, str):
            items.append(BatchItem(index, index, protocol.GENERATE, {"prompt": p}))
            continue
        if not isinstance(p, dict):
            raise BadRequest(f"batch item {index} must be a string or a map")
        if isinstance(p.get("messages"), list):
            op, payload = protocol.CHAT, {"messages": protocol.check_messages(p["messages"])}
        elif isinstance(p.get("prompt"), str):
            op, payload = protocol.GENERATE, {"prompt": p["prompt"]}
        else:
            raise BadRequest(f"batch item {index} needs a string 'prompt' or a list of 'messages'")
        options = dict(p.get("options") or {})
        options.update({k: v for k, v in p.items() if k in protocol.SAMPLING_FIELDS})
        items.append(BatchItem(index, p.get("id", index), op, payload, protocol.check_options(options)))
    return items


# A prompt whose worker crashed is tried again this many times.
BATCH_RETRIES = 1


def should_retry(item: BatchItem, exc: CorralError) -> bool:
    return exc.code == "worker_crashed" and item.attempts <= BATCH_RETRIES
