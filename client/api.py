"""The Python client library.

    from corral.client import Client

    with Client() as client:
        for piece in client.generate("ai/smollm2", "Hi", temperature=0):
            print(piece, end="", flush=True)
        answer = client.chat("ai/smollm2", [{"role": "user", "content": "2+2?"}])
        print(answer.text(), answer.usage)

A response is lazy: iterate it to stream, or call ``.text()`` to drain it;
its stats are there once it has ended.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

from corral.client.connection import Connection
from corral.client.launch import ensure_supervisor, supervisor_pid
from corral.configs.settings import Settings, load_settings, parse_duration
from corral.supervisor import protocol
from corral.supervisor.errors import SupervisorUnreachable, error_for_code


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


class Response:
    """One streamed answer. Iterate for text pieces; ``text()`` drains."""

    def __init__(self, conn: Connection, rid: int, model: str):
        self._conn = conn
        self.id = rid
        self.model = model
        self.chunks: list[str] = []
        self.done: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[str]:
        yield from list(self.chunks)
        while self.done is None:
            msg = self._conn.next_event(self.id)
            ev = msg["ev"]
            if ev == protocol.TOKEN:
                self.chunks.append(msg["text"])
                yield msg["text"]
            elif ev == protocol.DONE:
                self.done = msg
                self._conn.forget(self.id)
            elif ev == protocol.ERROR:
                self.done = msg
                self._conn.forget(self.id)
                raise error_for_code(msg.get("code", ""), msg.get("message", "unknown error"))

    def text(self) -> str:
        for _ in self:
            pass
        return "".join(self.chunks)

    def cancel(self) -> None:
        """Stop the generation; the stream then ends with ``stopped == "cancelled"``."""
        if self.done is None:
            self._conn.send_cancel(self.id)

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


class Client:
    def __init__(self, settings: Settings | None = None, *, autostart: bool = True):
        self.settings = settings or load_settings()
        if autostart:
            ensure_supervisor(self.settings)
        elif supervisor_pid(self.settings) is None:
            raise SupervisorUnreachable(
                f"no corral supervisor is running for {self.settings.home}; start one with `corral serve`"
            )
        self.conn = Connection(self.settings)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    # -- model requests --------------------------------------------------

    def generate(self, model: str, prompt: str, **kwargs: Any) -> Response:
        return self._stream(protocol.GENERATE, model, {"prompt": prompt}, **kwargs)

    def chat(self, model: str, messages: list[dict[str, str]], **kwargs: Any) -> Response:
        return self._stream(protocol.CHAT, model, {"messages": list(messages)}, **kwargs)

    def load(
        self,
        model: str,
        *,
        keep_alive: str | float | None = None,
        ignore_memory_check: bool = False,
        model_type: str | None = None,
    ) -> dict:
        """Load a model and return once it is ready."""
        return self._call(protocol.LOAD, **self._model_fields(model, keep_alive, ignore_memory_check, model_type))

    def _stream(
        self,
        op: str,
        model: str,
        payload: dict[str, Any],
        *,
        keep_alive: str | float | None = None,
        ignore_memory_check: bool = False,
        model_type: str | None = None,
        **sampling: Any,
    ) -> Response:
        options = protocol.check_options({k: v for k, v in sampling.items() if v is not None})
        fields = self._model_fields(model, keep_alive, ignore_memory_check, model_type)
        rid = self.conn.send(op, options=options, **fields, **payload)
        return Response(self.conn, rid, fields["model"])

    @staticmethod
    def _model_fields(model: str, keep_alive: Any, ignore_memory_check: bool, model_type: str | None) -> dict[str, Any]:
        fields: dict[str, Any] = {"model": model_ref(model)}
        if model_type:
            fields["model_type"] = model_type
        seconds = keep_alive_seconds(keep_alive)
        if seconds is not None:
            fields["keep_alive"] = seconds
        if ignore_memory_check:
            fields["ignore_memory_check"] = True
        return fields

    # -- management ------------------------------------------------------

    def unload(self, model: str | None = None, *, all: bool = False) -> list[str]:
        fields: dict[str, Any] = {"all": True} if all else {"model": model_ref(model)}
        return self._call(protocol.UNLOAD, **fields).get("unloaded", [])

    def ps(self) -> list[dict]:
        return self._call(protocol.PS)["result"]

    def status(self) -> dict:
        return self._call(protocol.STATUS)["result"]

    def shutdown(self) -> None:
        """Stop every worker, then the supervisor; returns when it is done."""
        self._call(protocol.SHUTDOWN)

    def _call(self, op: str, **fields: Any) -> dict:
        rid = self.conn.send(op, **fields)
        try:
            msg = self.conn.next_event(rid)
        finally:
            self.conn.forget(rid)
        if msg["ev"] == protocol.ERROR:
            raise error_for_code(msg.get("code", ""), msg.get("message", "unknown error"))
        return msg
