"""What the sync and async clients share above the connection: how a call
becomes request fields, how reply events become a response's state, and
the batch's bookkeeping (which prompt runs, which is retried, what is done)."""

from __future__ import annotations

import array
import base64
import json
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from corral.configs.settings import parse_duration
from corral.supervisor import protocol
from corral.supervisor.errors import BadRequest, CorralError, error_for_code

# Keyword arguments of generate/chat/load/embed that are not sampling options.
MODEL_KWARGS = ("keep_alive", "ignore_memory_check", "model_type", "context_length", "names_only", "debug")


def model_ref(model: str) -> str:
    """What to send for a MODEL argument: a file path made absolute (the
    supervisor has another working directory), a catalog name as it is."""
    return os.path.abspath(model) if os.path.exists(model) else model


def keep_alive_seconds(keep_alive: str | float | None) -> float | None:
    """A duration as the wire wants it: seconds, negative for never."""
    if keep_alive is None:
        return None
    seconds = parse_duration(keep_alive, "keep-alive")
    return -1.0 if seconds is None else seconds


def model_fields(model: str, **kwargs: Any) -> dict[str, Any]:
    """The fields of a request that name the model and its load-time settings."""
    unknown = set(kwargs) - set(MODEL_KWARGS)
    if unknown:
        raise TypeError(f"unexpected keyword argument {sorted(unknown)[0]!r}")
    fields: dict[str, Any] = {"model": model_ref(model)}
    fields.update({k: v for k, v in kwargs.items() if v is not None and v is not False and k != "keep_alive"})
    seconds = keep_alive_seconds(kwargs.get("keep_alive"))
    if seconds is not None:
        fields["keep_alive"] = seconds
    return fields


def generate_payload(prompt: str, tokens: list[int] | None = None) -> dict[str, Any]:
    """The generate-only fields: the prompt, or its token ids."""
    return {"prompt": prompt, "tokens": list(tokens)} if tokens else {"prompt": prompt}


def tokenizer_answer(done: dict[str, Any] | None) -> dict[str, Any]:
    """A tokenize call's answer: ``tokens`` and ``pieces`` (bytes; the
    plain-map form of an event carries them as base64), or ``text``."""
    answer = {k: v for k, v in (done or {}).items() if k in ("tokens", "pieces", "text")}
    if "pieces" in answer:
        answer["pieces"] = [base64.b64decode(p) for p in answer["pieces"]]
    return answer


def chat_payload(messages: Iterable[dict[str, Any]], truncate: bool = False, tools: list[dict[str, Any]] | None = None,
                 assistant_prefix: str | None = None) -> dict[str, Any]:
    """The chat-only fields of a chat request."""
    payload: dict[str, Any] = {"messages": list(messages)}
    if truncate:
        payload["truncate"] = True
    if tools:
        payload["tools"] = json.dumps(tools, ensure_ascii=False)
    if assistant_prefix:
        payload["assistant_prefix"] = assistant_prefix
    return payload


def stream_request(model: str, payload: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """All fields of a generate or chat request from a client call's arguments."""
    model_kwargs = {k: kwargs.pop(k) for k in MODEL_KWARGS if k in kwargs}
    options = protocol.check_options({k: v for k, v in kwargs.items() if v is not None})
    return {**model_fields(model, **model_kwargs), "options": options, **payload}


def logprob_entry(t: protocol.TokenLogprob) -> dict[str, Any]:
    """A token's log probabilities in OpenAI's shape (text, bytes, logprob, top_logprobs)."""
    def one(raw: bytes, logprob: float) -> dict[str, Any]:
        return {"token": raw.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(raw)}

    return {**one(t.token, t.logprob), "top_logprobs": [one(raw, lp) for raw, lp in t.top]}


class ResponseState:
    """A response's text, stats and ending, fed one reply event at a time."""

    def __init__(self, rid: int, model: str, on_log: Callable[[str], None] | None = None):
        self.id = rid
        self.model = model
        self.chunks: list[str] = []
        self.logs: list[str] = []  # the supervisor's lines about it (debug=True)
        self.vectors: dict[int, list[float]] = {}  # embeddings, by input index
        self.on_log = on_log
        self.done: dict[str, Any] | None = None  # the last event, as a plain map
        self.token_logprobs: list[protocol.TokenLogprob] = []  # when asked for (logprobs=N)

    def feed(self, msg: Any) -> str | None:
        """Take one event: returns a token's text; raises the error an
        ``error`` event stands for."""
        if isinstance(msg, protocol.Token):
            self.chunks.append(msg.text)
            if msg.logprobs:
                self.token_logprobs.extend(msg.logprobs)
            return msg.text
        if isinstance(msg, protocol.Log):
            self.logs.append(msg.line)
            if self.on_log is not None:
                self.on_log(msg.line)
            return None
        if isinstance(msg, protocol.Embedding):
            self.vectors[msg.index] = array.array("f", msg.vector).tolist()
            return None
        self.done = {k: v for k, v in protocol.to_builtins(msg).items() if v is not None}
        if isinstance(msg, protocol.Error):
            raise error_for_code(msg.code, msg.message)
        return None

    def text_so_far(self) -> str:
        return "".join(self.chunks)

    @property
    def logprobs(self) -> list[dict[str, Any]]:
        """Each token so far: its text, bytes, log probability and the top
        alternatives' (asked for with ``logprobs=N``)."""
        return [logprob_entry(t) for t in self.token_logprobs]

    @property
    def usage(self) -> dict[str, int]:
        return (self.done or {}).get("usage") or {}

    @property
    def timings(self) -> dict[str, float]:
        return (self.done or {}).get("timings") or {}

    @property
    def stopped(self) -> str | None:
        """Why it ended: "stop", "length" or "cancelled"."""
        return (self.done or {}).get("stopped")

    @property
    def stop_sequence(self) -> str | None:
        """The stop string that ended the answer (None: it ended otherwise)."""
        return (self.done or {}).get("stop_sequence")

    @property
    def load_ms(self) -> float:
        """Time spent loading the model for this request (0 when it was loaded)."""
        return (self.done or {}).get("load_ms") or 0.0

    @property
    def dropped_messages(self) -> int:
        """Oldest turns a truncated chat left out to fit the context."""
        return (self.done or {}).get("dropped_messages") or 0

    def embeddings(self) -> dict[str, Any]:
        return {"embeddings": [self.vectors[i] for i in sorted(self.vectors)], "usage": self.usage}


def call_result(msg: Any) -> dict[str, Any]:
    """The reply to a one-reply call (load, unload, ps, status) as a map."""
    if isinstance(msg, protocol.Error):
        raise error_for_code(msg.code, msg.message)
    return {k: v for k, v in protocol.to_builtins(msg).items() if v is not None}


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

    @property
    def finished(self) -> bool:
        """An answer that ran to its end (not cancelled, not failed)."""
        return self.error is None and self.stopped in ("stop", "length")

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
            messages = [protocol.to_builtins(m) for m in protocol.check_messages(p["messages"])]
            op, payload = protocol.CHAT, {"messages": messages}
        elif isinstance(p.get("prompt"), str):
            op, payload = protocol.GENERATE, {"prompt": p["prompt"]}
        else:
            raise BadRequest(f"batch item {index} needs a string 'prompt' or a list of 'messages'")
        options = dict(p.get("options") or {})
        options.update({k: v for k, v in p.items() if k in protocol.SAMPLING_FIELDS})
        protocol.check_options(options)
        items.append(BatchItem(index, p.get("id", index), op, payload, options))
    return items


# A prompt whose worker crashed is tried again this many times.
BATCH_RETRIES = 1


class BatchRun:
    """A batch's bookkeeping, with no I/O: which prompts to start, which
    running request an event belongs to, what to retry. The sync and async
    clients drive it with their own sockets."""

    def __init__(self, prompts: Iterable[str | dict[str, Any]], concurrency: int):
        self.todo = deque(batch_items(prompts))
        self.concurrency = max(1, concurrency)
        self.running: dict[int, tuple[BatchItem, ResponseState]] = {}

    @property
    def finished(self) -> bool:
        return not self.todo and not self.running

    def to_start(self) -> list[BatchItem]:
        """Items to send now; each comes back through :meth:`started`."""
        items = []
        while self.todo and len(self.running) + len(items) < self.concurrency:
            item = self.todo.popleft()
            item.attempts += 1
            items.append(item)
        return items

    def started(self, item: BatchItem, response: ResponseState) -> None:
        self.running[response.id] = (item, response)

    def failed_to_start(self, item: BatchItem, exc: CorralError) -> BatchResult:
        return BatchResult(item.index, item.id, error=exc, attempts=item.attempts)

    def on_event(self, rid: int, msg: Any) -> BatchResult | None:
        """Feed one event; returns the item's result once it has one."""
        item, response = self.running[rid]
        try:
            if response.feed(msg) is not None or response.done is None:
                return None
        except CorralError as exc:
            del self.running[rid]
            if exc.code == "worker_crashed" and item.attempts <= BATCH_RETRIES:
                self.todo.appendleft(item)
                return None
            return BatchResult(item.index, item.id, error=exc, attempts=item.attempts)
        del self.running[rid]
        return BatchResult(item.index, item.id, response.text_so_far(), response.usage, response.stopped, attempts=item.attempts)
